"""A fair start for both reward models: a learning rate chosen for each on held-out training pairs.

The training pairs are split once into pairs to fit and a validation tail; each model is trained at every rate of
a small grid (first seed only, cached) and keeps the rate with the lowest loss on the validation pairs: its own
training loss, -log sigmoid(reward of chosen - reward of rejected), which is DPO's loss for DPORM's implicit reward
and the Bradley-Terry loss for EXRM. Validation accuracy is recorded too; on a few dozen pairs it takes few values and
often ties across rates. The runs at the chosen rates are then reused from the cache as the first seed.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from companion.core.errors import UserError
from companion.rewards.preferences import Pair
from companion.rewards.scoring import cached_reference_logps, correct, score_models
from companion.rewards.training import SHORT_NAMES, TrainSettings, trained_models


def split_validation(pairs: list[Pair], fraction: float) -> tuple[list[Pair], list[Pair]]:
    """(pairs to fit, validation pairs): the last share `fraction` of the (already shuffled) training pairs."""
    n_val = int(np.ceil(len(pairs) * fraction))
    if not 0 < fraction < 1 or n_val >= len(pairs):
        raise UserError(f"val_fraction must leave pairs to fit and to validate on, got {fraction} of {len(pairs)} pairs")
    return pairs[:-n_val], pairs[-n_val:]


def learning_rate_search(s: TrainSettings, fit: list[Pair], val: list[Pair], grid: list[float]) -> pd.DataFrame:
    """Validation loss and accuracy of both models at every rate of the grid (seed s.seed): rows (model, learning_rate,
    val_loss, val_acc)."""
    runs = [replace(s, learning_rate=rate, rm_learning_rate=rate) for rate in grid]
    return pd.DataFrame([row for run in runs for row in rate_rows(run, fit, val)])


def rate_rows(s: TrainSettings, fit: list[Pair], val: list[Pair]) -> list[dict]:
    """Both models trained at one rate, as search rows; the models are released on return, before the next rate trains."""
    models = trained_models(s, fit)
    ref = cached_reference_logps(models, val, s.max_length)  # the same reference at every rate: computed once
    return [{"model": model, "learning_rate": s.learning_rate, "val_loss": preference_loss(values),
             "val_acc": float(correct(values).mean())}
            for model, values in score_models(models, val, ref, s.beta, s.max_length).items()]


def preference_loss(rewards: np.ndarray) -> float:
    """Mean -log sigmoid(chosen - rejected) over (pairs, 2) rewards: DPO's loss for implicit rewards, Bradley-Terry's
    for a reward model's."""
    return float(np.logaddexp(0.0, rewards[:, 1] - rewards[:, 0]).mean())


def chosen_rates(search: pd.DataFrame) -> dict[str, float]:
    """Per model, the rate with the lowest validation loss (the smallest rate among exact ties)."""
    best = search.sort_values(["model", "val_loss", "learning_rate"]).groupby("model").head(1)
    return {row.model: float(row.learning_rate) for row in best.itertuples()}


def grid_edge(search: pd.DataFrame, model: str, rate: float) -> str:
    """Where a model's kept rate sits in the grid it was searched over: at its top or bottom (a rate beyond was not
    tried), or inside."""
    grid = sorted(search[search["model"] == model]["learning_rate"].unique())
    if len(grid) > 1 and rate == grid[-1]:
        return "; the top of the grid, so a larger rate was not tried"
    if len(grid) > 1 and rate == grid[0]:
        return "; the bottom of the grid, so a smaller rate was not tried"
    return ""


def loss_trend(search: pd.DataFrame) -> str:
    """One sentence for the page: per model, whether its validation loss rose or fell as the rate rose, with the
    losses at each rate of the grid (what the chosen rates rest on, read from this run's search)."""
    parts = []
    for model, part in search.sort_values(["model", "learning_rate"]).groupby("model"):
        losses = part["val_loss"].to_numpy()
        steps = np.diff(losses)
        trend = ("rose as the rate rose" if (steps > 0).all() else "fell as the rate rose" if (steps < 0).all() else
                 f"was lowest at {part['learning_rate'].iloc[int(np.argmin(losses))]:g}")
        values = ", ".join(f"{loss:.3f} at {rate:g}" for rate, loss in zip(part["learning_rate"], losses))
        parts.append(f"{SHORT_NAMES.get(model, model)}'s validation loss {trend} ({values})")
    return "In this run's search, " + "; ".join(parts) + "."


def search_note(search: pd.DataFrame, rates: dict[str, float]) -> str:
    """One sentence per model for the page: the rate it keeps, whether its validation loss there is below log 2
    (the loss of a reward that prefers neither response: a rate chosen by loss may be one that barely moved), and
    whether that rate is at an edge of the grid."""
    parts = []
    for model, rate in rates.items():
        loss = float(search[(search["model"] == model) & (search["learning_rate"] == rate)]["val_loss"].iloc[0])
        side = ("below log 2 = 0.693, so its margins lean the right way on the held-out pairs" if loss < np.log(2) else
                "not below log 2 = 0.693, so on the held-out pairs it does no better than preferring neither response")
        parts.append(f"{SHORT_NAMES.get(model, model)} keeps {rate:g} (validation loss {loss:.3f}, {side}"
                     f"{grid_edge(search, model, rate)})")
    return "; ".join(parts) + "."


def tuned_settings(s: TrainSettings, pairs: list[Pair], grid: list[float],
                   val_fraction: float) -> tuple[TrainSettings, list[Pair], pd.DataFrame]:
    """Settings with each model's chosen rate, the pairs both are trained on, and the search table.

    With a single rate in the grid nothing is searched and every training pair is used.
    """
    if len(grid) == 1:
        return replace(s, learning_rate=grid[0], rm_learning_rate=grid[0]), pairs, pd.DataFrame()
    fit, val = split_validation(pairs, val_fraction)
    search = learning_rate_search(s, fit, val, grid)
    rates = chosen_rates(search)
    return replace(s, learning_rate=rates["dporm"], rm_learning_rate=rates["exrm"]), fit, search
