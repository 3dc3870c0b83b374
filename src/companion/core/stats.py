"""Small statistics shared by both papers: bootstrap confidence intervals."""

from __future__ import annotations

import numpy as np


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


def resample_means(groups: dict[str, tuple[np.ndarray, ...]], n_boot: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    """Bootstrap replicates of the means of paired (seeds x items) arrays: {group: (n_boot, arrays)}.

    Each replicate draws seeds with replacement (one draw shared by every group: the same training or expert runs),
    then items with replacement within each group (one draw shared by a group's arrays: the same sentences or pairs
    measured before and after, or by both models). Statistics such as a ratio, a difference, a mean over groups or a
    maximum over groups are then computed replicate by replicate, so their intervals are paired and include the
    variance between seeds as well as between items.
    """
    shapes = {np.shape(array) for arrays in groups.values() for array in arrays}
    n_seeds = {shape[0] for shape in shapes}
    if len(n_seeds) != 1 or any(len(shape) != 2 for shape in shapes):
        raise ValueError(f"every array must be (seeds x items) with the same number of seeds, got shapes {sorted(shapes)}")
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, n_seeds.pop(), size=(n_boot, next(iter(shapes))[0]))
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
