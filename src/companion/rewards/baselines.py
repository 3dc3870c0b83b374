"""Two shortcut baselines that ignore the prompt: a length rule and a bag-of-words rule, both fitted on training pairs.

If a shortcut ranks a test set's pairs well, a reward model can too without learning the preference; with the target
sentiment stated in the prompt, a rule that never reads the prompt should stay near chance (0.5). The data page adds
a third column beside them, the start-likelihood rule (`scoring.start_rule_accuracy`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import vstack
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from companion.rewards.preferences import Pair, PreferenceSet


def choice_accuracy(margins: np.ndarray) -> np.ndarray:
    """Per-pair score of a rule from its margin (chosen minus rejected): 1 if positive, 0.5 on a tie, 0 if negative."""
    return np.where(margins > 0, 1.0, np.where(margins == 0, 0.5, 0.0))


def _word_counts(pairs: list[Pair]) -> np.ndarray:
    """(n, 2) response lengths in words of chosen and rejected."""
    return np.array([[len(p["chosen"].split()), len(p["rejected"].split())] for p in pairs], dtype=np.float64)


@dataclass
class Shortcuts:
    """The two rules fitted on training pairs: which length wins, and a linear bag-of-words preference."""

    longer_wins: bool
    vectorizer: CountVectorizer
    bow: LogisticRegression

    def length_correct(self, pairs: list[Pair]) -> np.ndarray:
        """Per-pair score of the length rule (prefer the longer response if that won in training, else the shorter)."""
        lengths = _word_counts(pairs)
        return choice_accuracy((lengths[:, 0] - lengths[:, 1]) * (1 if self.longer_wins else -1))

    def bow_correct(self, pairs: list[Pair]) -> np.ndarray:
        """Per-pair score of the bag-of-words rule: the response whose words the fitted weights favour wins."""
        weights = self.bow.coef_[0]
        chosen = self.vectorizer.transform([p["chosen"] for p in pairs]) @ weights
        rejected = self.vectorizer.transform([p["rejected"] for p in pairs]) @ weights
        return choice_accuracy(np.asarray(chosen - rejected))


def fit_shortcuts(train: list[Pair], seed: int = 0) -> Shortcuts:
    """Fit both rules on the training pairs (the bag-of-words rule on word-presence differences, both orientations)."""
    lengths = _word_counts(train)
    longer_wins = bool((lengths[:, 0] > lengths[:, 1]).sum() >= (lengths[:, 0] < lengths[:, 1]).sum())
    vectorizer = CountVectorizer(binary=True).fit([p[key] for p in train for key in ("chosen", "rejected")])
    diff = vectorizer.transform([p["chosen"] for p in train]) - vectorizer.transform([p["rejected"] for p in train])
    features = vstack([diff, -diff])
    labels = np.r_[np.ones(len(train)), np.zeros(len(train))]
    bow = LogisticRegression(C=1.0, fit_intercept=False, max_iter=1000, random_state=seed).fit(features, labels)
    return Shortcuts(longer_wins, vectorizer, bow)


def shortcut_rows(shortcuts: Shortcuts, sets: list[PreferenceSet], start_acc: dict[str, float] | None = None) -> list[dict]:
    """Per set: name, kind of shift, pairs, what it tests, and the accuracy of both shortcut rules (and of the
    start-likelihood rule, given its accuracy by set)."""
    return [{"name": t.name, "shift": t.shift, "n": len(t.pairs), "description": t.description,
             "length_rule_acc": float(shortcuts.length_correct(list(t.pairs)).mean()) if t.pairs else None,
             "bow_rule_acc": float(shortcuts.bow_correct(list(t.pairs)).mean()) if t.pairs else None,
             **({"start_rule_acc": start_acc.get(t.name)} if start_acc is not None else {})} for t in sets]
