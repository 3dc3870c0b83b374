"""Small statistics shared by both papers: bootstrap confidence intervals, and intervals over few seeds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm
from scipy.stats import t as student_t

# A statistic of group means: {group: (n, arrays) means} -> (n,) values, for n replicates, seeds or 1 (the estimate).
Statistic = Callable[[dict[str, np.ndarray]], np.ndarray]


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of values (e.g. 0/1 correctness per item)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n_boot, values.size))
    means = values[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def mean_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """Mean with its bootstrap 95% interval, as a JSON-ready record."""
    low, high = bootstrap_ci(values, n_boot=n_boot, seed=seed)
    return {"mean": float(np.mean(values)), "low": low, "high": high}


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion successes / n: unlike a bootstrap, not [1, 1] at n / n (nan for n = 0)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    z = float(norm.ppf(0.5 + level / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))


def against_chance(interval: tuple[float, float] | list[float]) -> str:
    """Where a 95% interval of an accuracy or agreement lies against chance (0.5), as the pages say it."""
    low, high = interval
    return "above chance" if low > 0.5 else "below chance" if high < 0.5 else "not distinguishable from chance"


def share_ci(flags: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """A share of 0/1 flags with its Wilson score interval, as a JSON-ready record (mean, low, high)."""
    flags = np.asarray(flags, dtype=bool)
    low, high = wilson_interval(int(flags.sum()), int(flags.size), level)
    return {"mean": float(flags.mean()) if flags.size else float("nan"), "low": low, "high": high}


def resample_means(groups: dict[str, tuple[np.ndarray, ...]], n_boot: int = 1000, seed: int = 0,
                   resample_seeds: bool = True) -> dict[str, np.ndarray]:
    """Bootstrap replicates of the means of paired (seeds x items) arrays: {group: (n_boot, arrays)}.

    Each replicate draws seeds with replacement (one draw shared by every group: the same training or expert runs),
    then items with replacement within each group (one draw shared by a group's arrays: the same sentences or pairs
    measured before and after, or by both models). Statistics such as a ratio, a difference, a mean over groups or a
    maximum over groups are then computed replicate by replicate, so their intervals are paired and include the
    variance between seeds as well as between items. With `resample_seeds` False every replicate keeps all the seeds
    once and only the items are drawn (the item part of `seed_item_draws`).
    """
    shapes = {np.shape(array) for arrays in groups.values() for array in arrays}
    n_seeds = {shape[0] for shape in shapes}
    if len(n_seeds) != 1 or any(len(shape) != 2 for shape in shapes):
        raise ValueError(f"every array must be (seeds x items) with the same number of seeds, got shapes {sorted(shapes)}")
    rng = np.random.default_rng(seed)
    n = n_seeds.pop()
    seeds = rng.integers(0, n, size=(n_boot, n)) if resample_seeds else np.broadcast_to(np.arange(n), (n_boot, n))
    replicates = {}
    for name, arrays in groups.items():
        n_items = np.shape(arrays[0])[1]
        items = rng.integers(0, n_items, size=(n_boot, n_items))
        replicates[name] = np.stack([np.asarray(a, dtype=np.float64)[seeds[:, :, None], items[:, None, :]].mean(axis=(1, 2))
                                     for a in arrays], axis=1)
    return replicates


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap replicates of a statistic (non-finite replicates are an error)."""
    replicates = np.asarray(replicates, dtype=np.float64)
    if not np.isfinite(replicates).all():
        raise ValueError("a bootstrap replicate is not finite (e.g. a ratio over a zero baseline); use a difference")
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(replicates, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def maximum_interval(replicates: np.ndarray, estimate: float, level: float = 0.95, log: bool = False) -> tuple[float, float]:
    """The basic (reflected) bootstrap interval of a maximum over several estimates: (2 m - q_high, 2 m - q_low).

    The largest of several noisy estimates is biased upward, and its replicates (each the largest of the resampled
    estimates) are shifted upward once more, so their percentile interval sits above the estimate. Reflecting the
    replicates about the estimate removes that shift to first order. With `log`, for a ratio, on the log scale.
    """
    low, high = percentile_interval(np.log(replicates) if log else replicates, level)
    centre = np.log(estimate) if log else estimate
    low, high = 2 * centre - high, 2 * centre - low
    return (float(np.exp(low)), float(np.exp(high))) if log else (float(low), float(high))


@dataclass(frozen=True)
class SeedItemDraws:
    """Means of paired (seeds x items) arrays three ways: overall, per seed, and over item-bootstrap replicates.

    Crossed (the default): item i is the same sentence or pair under every seed. Nested: item i of one seed has nothing
    to do with item i of another (e.g. samples drawn with each seed).
    """

    overall: dict[str, np.ndarray]  # group -> (1, arrays): every seed and item
    per_seed: dict[str, np.ndarray]  # group -> (seeds, arrays): every item of one seed
    items: dict[str, np.ndarray]  # group -> (n_boot, arrays): every seed, items resampled (one draw per group)
    nested: bool = False

    def interval(self, statistic: Statistic, level: float = 0.95, log: bool = False,
                 bounds: tuple[float, float] = (-np.inf, np.inf)) -> tuple[float, float] | None:
        """The statistic's 95% (`level`) interval, clipped to `bounds`; with `log`, for a ratio, on the log scale (None
        if a value is not positive).

        Crossed: its variance over item replicates plus the variance of its mean over seeds (per-seed spread / seeds),
        with a t quantile on Welch-Satterthwaite degrees of freedom (the seed part has seeds - 1). The seed-by-item
        interaction enters both parts, so the interval is somewhat conservative (at most by the seed part's share).
        Nested: the per-seed spread / seeds alone already holds all the variance of the mean (t on seeds - 1), but it is
        never taken below the item part, the within-seed sampling variance, which three seeds can underestimate.

        Resampling 3 seeds with replacement is too coarse: the bootstrap's seed part then spans about the range of
        the 3 values, which holds the mean only about 75% of the time. With one seed the seed part is unknown and left
        out.
        """
        values = [np.asarray(statistic(means), dtype=np.float64) for means in (self.overall, self.per_seed, self.items)]
        if log:
            if any((v <= 0).any() for v in values):
                return None
            values = [np.log(v) for v in values]
        estimate, per_seed, items = values
        n_seeds = len(per_seed)
        v_items = float(np.var(items, ddof=1))
        v_seeds = float(np.var(per_seed, ddof=1)) / n_seeds if n_seeds > 1 else 0.0
        if self.nested:
            total, dof = (v_seeds, n_seeds - 1) if v_seeds >= v_items and v_seeds > 0 else (v_items, np.inf)
        else:
            total = v_items + v_seeds
            dof = total ** 2 / (v_seeds ** 2 / (n_seeds - 1)) if v_seeds > 0 else np.inf
        half = float(student_t.ppf(0.5 + level / 2, dof)) * np.sqrt(total)
        low, high = estimate[0] - half, estimate[0] + half
        if log:
            low, high = np.exp(low), np.exp(high)
        return (float(max(low, bounds[0])), float(min(high, bounds[1])))


def seed_item_draws(groups: dict[str, tuple[np.ndarray, ...]], n_boot: int = 1000, seed: int = 0,
                    nested: bool = False) -> SeedItemDraws:
    """The means `SeedItemDraws.interval` needs, from paired (seeds x items) arrays per group (as `resample_means`);
    `nested` when item i of one seed is unrelated to item i of another."""
    stacked = {name: np.stack([np.asarray(a, dtype=np.float64) for a in arrays], axis=-1) for name, arrays in groups.items()}
    return SeedItemDraws(overall={name: a.mean(axis=(0, 1))[None] for name, a in stacked.items()},
                         per_seed={name: a.mean(axis=1) for name, a in stacked.items()},
                         items=resample_means(groups, n_boot, seed, resample_seeds=False), nested=nested)
