"""The fit premise: do both reward models fit their training pairs, and what does a pass over those pairs mean.

The paper compares the two models out of distribution on the premise that both fit the training data. The fit is
measured on pairs the models were trained on; how many times each pair was shown follows from the number of pairs,
the batch size and the steps. The trainer shuffles the pairs anew for each pass and keeps the last, shorter batch, so
the first pass ends at step ceil(n / batch) and every later step re-shows pairs the model has already been trained
on. Which pairs were re-shown depends on the trainer's seeded shuffle, which is not recorded; the number is, and it
bounds the accuracy on the pairs seen only once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from companion.core.tables import format_interval
from companion.rewards.training import SHORT_NAMES, train_curve

BATCH_ACCURACY = {"dporm": ("dpo", "rewards/accuracies"), "exrm": ("rm", "accuracy")}
JUMP = 0.2  # a rise in batch accuracy at the epoch boundary the page calls a jump


@dataclass(frozen=True)
class Passes:
    """How a run of `steps` optimizer steps of `batch_size` pairs walks over `n_pairs` training pairs."""

    n_pairs: int
    batch_size: int
    steps: int

    @property
    def first_pass_steps(self) -> int:
        """Steps of the first pass over the pairs (its last batch may be shorter)."""
        return math.ceil(self.n_pairs / self.batch_size)

    @property
    def last_batch(self) -> int:
        """Pairs in the first pass's last batch."""
        return self.n_pairs - (self.first_pass_steps - 1) * self.batch_size

    @property
    def repeated(self) -> int:
        """Pairs shown again after the first pass (at most all of them; a third pass is counted once)."""
        return min(self.n_pairs, max(0, self.steps - self.first_pass_steps) * self.batch_size)


def batch_accuracy_by_pass(logs: dict[int, dict[str, list[dict]]], passes: Passes) -> dict[str, tuple[float, float | None]]:
    """Per model, the logged accuracy on each training batch (computed before that batch's update), averaged over steps
    and seeds: (steps of the first pass, pairs never trained on before; later steps, re-shown pairs or None)."""
    out = {}
    for model, (key, metric) in BATCH_ACCURACY.items():
        points = [point for seed_logs in logs.values() for point in train_curve(seed_logs[key], metric)]
        first = [value for step, value in points if step <= passes.first_pass_steps]
        later = [value for step, value in points if step > passes.first_pass_steps]
        out[model] = (float(np.mean(first)) if first else float("nan"), float(np.mean(later)) if later else None)
    return out


def once_seen_floor(accuracy: float, n_scored: int, repeated: int) -> float | None:
    """The least accuracy on the scored pairs seen only once, if every re-shown pair among them (at most `repeated`)
    was ranked correctly; None when all scored pairs may have been re-shown."""
    twice = min(n_scored, repeated)
    return None if twice >= n_scored else max(0.0, (accuracy * n_scored - twice) / (n_scored - twice))


def premise_sentence(fit: dict) -> str:
    """Whether the two models fit their training pairs alike, read from the gap's interval (EXRM minus DPORM)."""
    low, high = fit["gap_ci"]
    numbers = (f"DPORM ranks {fit['dporm_acc']:.3f} {format_interval(fit['dporm_ci'])} of {fit['n']} training pairs "
               f"correctly and EXRM {fit['exrm_acc']:.3f} {format_interval(fit['exrm_ci'])}, a gap (EXRM minus DPORM) "
               f"of {fit['gap']:+.3f} {format_interval(fit['gap_ci'], signed=True)}")
    if low <= 0 <= high:
        return (f"{numbers}: the interval covers zero, so no difference in fit to the training pairs was detected (which "
                "does not show the fits equal). That is one half of the premise of the paper's comparison; the other, "
                "that both models rank new pairs of the training distribution above chance and alike, is checked on "
                "the in-distribution test set in part 3.")
    worse, better = ("EXRM", "DPORM") if high < 0 else ("DPORM", "EXRM")
    return (f"{numbers}: **{worse} fits the training pairs clearly worse than {better}**, so the premise of the paper's "
            "comparison, that both models fit the training data, does not hold here; a gap between them out of "
            "distribution may reflect this difference in fit rather than generalization.")


def passes_sentence(passes: Passes, batch: dict[str, tuple[float, float | None]], fit: dict) -> str:
    """The epoch boundary, the batch accuracy before and after it, and what the re-shown pairs can add to the fit."""
    p = passes
    if p.repeated == 0:
        return (f"The {p.steps} steps of {p.batch_size} pairs show {min(p.steps * p.batch_size, p.n_pairs)} of the "
                f"{p.n_pairs} training pairs once; no pair is shown twice.")
    text = (f"The {p.n_pairs} training pairs in batches of {p.batch_size} make a first pass of {p.first_pass_steps} "
            f"steps (its last batch holds {p.last_batch} pairs), so the first pass ends at step {p.first_pass_steps} "
            f"and steps {p.first_pass_steps + 1}-{p.steps} re-show {p.repeated} pairs the models were already trained "
            "on. Each batch's logged accuracy is computed before that batch's update: over the first pass (pairs not "
            "yet trained on) ")
    text += " and ".join(f"{SHORT_NAMES[m]} averages {batch[m][0]:.3f}" for m in SHORT_NAMES)
    text += ", over the later steps (re-shown pairs) "
    text += " and ".join(f"{SHORT_NAMES[m]} {batch[m][1]:.3f}" for m in SHORT_NAMES) + " (seeds pooled)."
    jumps = [SHORT_NAMES[m] for m in SHORT_NAMES if batch[m][1] - batch[m][0] >= JUMP]
    if jumps:
        text += (f" The batch accuracy of {' and of '.join(jumps)} jumps by at least {JUMP:g} at the epoch boundary: a "
                 "model right far more often on pairs it was trained on once than on pairs it had not yet seen has "
                 "memorized seen pairs, which is not a preference that carries to new ones.")
    floors = {m: once_seen_floor(fit[f"{m}_acc"], fit["n"], p.repeated) for m in SHORT_NAMES}
    if all(f is not None for f in floors.values()):
        twice = min(fit["n"], p.repeated)
        text += (f" The fit above is measured on {fit['n']} training pairs, of which at most {twice} were shown twice "
                 "(which ones depends on the trainer's seeded shuffle, not recorded, so the split is not reported); "
                 "even if every one of those was ranked correctly, on the pairs shown only once "
                 + " and ".join(f"{SHORT_NAMES[m]} ranks at least {floors[m]:.3f} correctly" for m in SHORT_NAMES) + ".")
        above = [SHORT_NAMES[m] for m in SHORT_NAMES if floors[m] > 0.5]
        if above:
            text += (f" So the fit of {' and of '.join(above)} is not made by the re-shown pairs alone: it includes pairs "
                     "seen once, whether or not that carries to new pairs (the next page's in-distribution test set "
                     "says).")
    return text


def fit_note(fit: dict, passes: Passes, logs: dict[int, dict[str, list[dict]]]) -> str:
    """The training page's result in two paragraphs: whether the fit premise holds, and what the passes over the
    training pairs mean for the fit and the training curves."""
    return premise_sentence(fit) + "\n\n" + passes_sentence(passes, batch_accuracy_by_pass(logs, passes), fit)
