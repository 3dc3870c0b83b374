"""companion.core.stats: the paired, seed-and-item bootstrap against a direct computation."""

import numpy as np
import pytest

from companion.core.stats import percentile_interval, resample_means


def test_resample_means_equals_a_direct_loop() -> None:
    rng = np.random.default_rng(1)
    pre, post = rng.random((3, 7)), rng.random((3, 7))
    other = rng.random((3, 5))
    got = resample_means({"a": (pre, post), "b": (other,)}, n_boot=50, seed=4)
    draw = np.random.default_rng(4)
    seeds = draw.integers(0, 3, size=(50, 3))
    items_a = draw.integers(0, 7, size=(50, 7))
    items_b = draw.integers(0, 5, size=(50, 5))
    for r in range(50):
        rows = seeds[r]
        direct_pre = np.mean([[pre[s, i] for i in items_a[r]] for s in rows])
        direct_post = np.mean([[post[s, i] for i in items_a[r]] for s in rows])
        direct_other = np.mean([[other[s, i] for i in items_b[r]] for s in rows])
        assert got["a"][r].tolist() == pytest.approx([direct_pre, direct_post])
        assert got["b"][r, 0] == pytest.approx(direct_other)


def test_pairing_removes_shared_item_variance() -> None:
    rng = np.random.default_rng(0)
    base = rng.random((1, 400))
    after = base + 0.01  # the same items, shifted: the paired difference is exactly 0.01 in every replicate
    reps = resample_means({"x": (base, after)}, n_boot=200)["x"]
    low, high = percentile_interval(reps[:, 1] - reps[:, 0])
    assert low == pytest.approx(0.01) and high == pytest.approx(0.01)


def test_seed_variance_enters_the_interval() -> None:
    items = np.zeros((3, 50))
    items[1] += 1.0  # one seed differs from the others: resampling seeds must widen the interval
    reps = resample_means({"x": (items,)}, n_boot=500)["x"][:, 0]
    low, high = percentile_interval(reps)
    assert low < 0.34 < high and high - low > 0.3


def test_mismatched_seeds_and_infinite_replicates_are_errors() -> None:
    with pytest.raises(ValueError, match="same number of seeds"):
        resample_means({"a": (np.zeros((2, 3)),), "b": (np.zeros((3, 3)),)})
    with pytest.raises(ValueError, match="not finite"):
        percentile_interval(np.array([1.0, np.inf]))
