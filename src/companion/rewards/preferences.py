"""Preference pairs {prompt, chosen, rejected}: the shared types, the review pools, text normalisation, user files.

The embedded sets (gold-labelled continuations of review openings) are built in `companion.rewards.sentiment_sets`.
Reviews are split into a training pool and a test pool by a stable hash of their id; on top of that, every set is
deduplicated on normalised text against the training pairs and the sets built before it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from companion.core.errors import UserError
from companion.core.files import sha256_file
from companion.core.preference_files import movie_reviews, read_preference_file

Pair = dict[str, str]
SHIFTS = ("id", "prompt", "response", "prompt+response")
SHIFT_NAMES = {"id": "in distribution", "prompt": "prompt shift", "response": "response shift",
               "prompt+response": "prompt and response shift"}


@dataclass(frozen=True)
class PreferenceSet:
    """A named test set: its pairs, the kind of shift from the training data, and what shifts and why."""

    name: str
    shift: str  # one of SHIFTS
    description: str
    pairs: tuple[Pair, ...]


def set_descriptions(sets: list[PreferenceSet]) -> str:
    """A Markdown list of the sets for the page: name, kind of shift, pairs, and what each shifts and why."""
    return "\n".join(f"- **{t.name}** ({SHIFT_NAMES.get(t.shift, t.shift)}, {len(t.pairs)} pairs): {t.description}"
                     for t in sets)


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


def normalise(text: str) -> str:
    """Text reduced for comparison: lower case, letters and digits only, single spaces."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def pair_texts(pair: Pair) -> set[str]:
    """The normalised texts of a pair that must not recur in another set: its opening and both responses."""
    return {normalise(pair.get("opening", pair["prompt"])), normalise(pair["chosen"]), normalise(pair["rejected"])}


def deduplicate(pairs: list[Pair], seen: set[str]) -> list[Pair]:
    """Pairs whose responses differ after normalisation and share no text with seen or an earlier kept pair.

    seen is updated in place with the texts of the kept pairs, so sets built one after another stay disjoint.
    """
    kept = []
    for pair in pairs:
        texts = pair_texts(pair)
        if normalise(pair["chosen"]) == normalise(pair["rejected"]) or texts & seen or "" in texts:
            continue
        seen |= texts
        kept.append(pair)
    return kept


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
    """A user's JSONL split into training pairs and one in-distribution test set (no gold labeller involved)."""
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


def pairs_frame(sets: list[PreferenceSet]) -> pd.DataFrame:
    """Long table (set, shift, prompt, chosen, rejected, word counts) for inspection and plots."""
    rows = [{"set": t.name, "shift": t.shift, **{k: pair[k] for k in ("prompt", "chosen", "rejected")}}
            for t in sets for pair in t.pairs]
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
    try:
        installed = version("movie-reviews")
    except PackageNotFoundError:
        installed = "not installed"
    return [{"name": "movie-reviews (IMDB + Rotten Tomatoes), openings, human endings and gold-labeller training text",
             "source": f"movie-reviews=={installed}"}]
