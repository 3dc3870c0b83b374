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
