"""companion.core.stats: the paired bootstraps and the few-seed interval against direct computations."""

import numpy as np
import pytest
from scipy.stats import t as student_t

from companion.core.stats import maximum_interval, percentile_interval, resample_means, seed_item_draws


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


def test_maximum_interval_reflects_the_replicates_about_the_estimate() -> None:
    reps = np.linspace(0.1, 0.5, 401)
    low, high = np.quantile(reps, [0.025, 0.975])
    assert maximum_interval(reps, 0.2) == pytest.approx((0.4 - high, 0.4 - low))
    ratios = np.exp(reps)  # a ratio: the same reflection on the log scale
    assert maximum_interval(ratios, np.exp(0.2), log=True) == pytest.approx((np.exp(0.4 - high), np.exp(0.4 - low)))


def test_maximum_interval_covers_a_maximum_the_percentile_interval_misses() -> None:
    """Five sets with the same true gap 0: the largest observed gap is biased upward, and so are its replicates."""
    rng = np.random.default_rng(0)
    covered = {"reflected": 0, "percentile": 0}
    for _ in range(60):
        data = rng.choice([-1.0, 0.0, 1.0], p=[0.25, 0.5, 0.25], size=(5, 120))
        draws = rng.integers(0, 120, size=(300, 5, 120))
        reps = np.take_along_axis(np.broadcast_to(data, draws.shape), draws, axis=2).mean(axis=2).max(axis=1)
        for name, (low, high) in (("reflected", maximum_interval(reps, data.mean(axis=1).max())),
                                  ("percentile", percentile_interval(reps))):
            covered[name] += low <= 0 <= high
    assert covered["reflected"] >= 45 and covered["percentile"] <= 30


def direct_seed_item_interval(pre: np.ndarray, post: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """mean(post) - mean(pre): items resampled with every seed kept, plus the per-seed spread, Welch-Satterthwaite t."""
    items = np.random.default_rng(seed).integers(0, pre.shape[1], size=(n_boot, pre.shape[1]))
    reps = np.array([post[:, i].mean() - pre[:, i].mean() for i in items])
    per_seed = post.mean(axis=1) - pre.mean(axis=1)
    v_items, v_seeds = reps.var(ddof=1), per_seed.var(ddof=1) / len(per_seed)
    dof = (v_items + v_seeds) ** 2 / (v_seeds ** 2 / (len(per_seed) - 1))
    half = student_t.ppf(0.975, dof) * np.sqrt(v_items + v_seeds)
    return (post.mean() - pre.mean() - half, post.mean() - pre.mean() + half)


def test_seed_item_interval_equals_a_direct_computation() -> None:
    rng = np.random.default_rng(2)
    pre, post = rng.random((3, 40)), rng.random((3, 40)) + rng.normal(0, 0.2, size=(3, 1))
    draws = seed_item_draws({"x": (pre, post)}, n_boot=300, seed=9)
    got = draws.interval(lambda m: m["x"][:, 1] - m["x"][:, 0])
    assert got == pytest.approx(direct_seed_item_interval(pre, post, 300, 9))
    assert draws.interval(lambda m: m["x"][:, 1] - m["x"][:, 0], bounds=(got[0] + 0.01, 1.0))[0] == got[0] + 0.01
    ratio = draws.interval(lambda m: m["x"][:, 1] / m["x"][:, 0], log=True)
    assert ratio[0] < post.mean() / pre.mean() < ratio[1]
    assert draws.interval(lambda m: m["x"][:, 1] - m["x"][:, 0] - 5, log=True) is None  # not a ratio: no log interval


def test_seed_item_interval_widens_with_the_spread_of_three_seeds() -> None:
    """Three seeds that disagree: the t quantile on 2 degrees of freedom spans well beyond their range."""
    base = np.zeros((3, 50))
    shifted = base + np.array([[0.02], [0.18], [0.06]])  # per-seed differences 0.02, 0.18, 0.06; no item variance
    low, high = seed_item_draws({"x": (base, shifted)}, n_boot=200).interval(lambda m: m["x"][:, 1] - m["x"][:, 0])
    mean, se = np.mean([0.02, 0.18, 0.06]), np.std([0.02, 0.18, 0.06], ddof=1) / np.sqrt(3)
    assert (low, high) == pytest.approx((mean - student_t.ppf(0.975, 2) * se, mean + student_t.ppf(0.975, 2) * se))
    assert low < 0 < 0.18 < high  # while the seeds' bootstrap stays within their range
    reps = resample_means({"x": (base, shifted)}, n_boot=200)["x"]
    assert 0.02 <= percentile_interval(reps[:, 1] - reps[:, 0])[0]


def test_one_seed_leaves_the_seed_part_out() -> None:
    rng = np.random.default_rng(3)
    pre, post = rng.random((1, 60)), rng.random((1, 60))
    draws = seed_item_draws({"x": (pre, post)}, n_boot=400, seed=1)
    items = np.random.default_rng(1).integers(0, 60, size=(400, 60))
    se = np.std([post[0, i].mean() - pre[0, i].mean() for i in items], ddof=1)
    estimate = post.mean() - pre.mean()
    assert draws.interval(lambda m: m["x"][:, 1] - m["x"][:, 0]) == pytest.approx((estimate - 1.959964 * se,
                                                                                    estimate + 1.959964 * se))


def test_a_ratio_interval_is_made_on_the_log_scale() -> None:
    rng = np.random.default_rng(5)
    pre, post = rng.random((3, 30)) + 0.5, rng.random((3, 30)) + 0.8
    got = seed_item_draws({"x": (pre, post)}, n_boot=200, seed=2).interval(lambda m: m["x"][:, 1] / m["x"][:, 0], log=True)
    items = np.random.default_rng(2).integers(0, 30, size=(200, 30))
    reps = np.log([post[:, i].mean() / pre[:, i].mean() for i in items])
    per_seed = np.log(post.mean(axis=1) / pre.mean(axis=1))
    v_items, v_seeds = reps.var(ddof=1), per_seed.var(ddof=1) / 3
    dof = (v_items + v_seeds) ** 2 / (v_seeds ** 2 / 2)
    centre, half = np.log(post.mean() / pre.mean()), student_t.ppf(0.975, dof) * np.sqrt(v_items + v_seeds)
    assert got == pytest.approx((np.exp(centre - half), np.exp(centre + half)))


def test_nested_samples_take_the_seed_spread_but_never_less_than_the_samples() -> None:
    rng = np.random.default_rng(6)
    shares = (rng.random((3, 11)) < np.array([[0.2], [0.6], [0.9]])).astype(float)  # seeds disagree: their spread rules
    got = seed_item_draws({"x": (shares,)}, n_boot=300, seed=1, nested=True).interval(lambda m: m["x"][:, 0])
    per_seed = shares.mean(axis=1)
    half = student_t.ppf(0.975, 2) * per_seed.std(ddof=1) / np.sqrt(3)
    assert got == pytest.approx((shares.mean() - half, shares.mean() + half))
    same = np.tile((np.arange(11) % 2).astype(float), (3, 1))  # three identical seeds: no spread, the samples' part
    low, high = seed_item_draws({"x": (same,)}, n_boot=300, seed=1, nested=True).interval(lambda m: m["x"][:, 0])
    assert low < same.mean() < high


def test_seed_item_interval_covers_when_seeds_vary_and_the_seed_bootstrap_does_not() -> None:
    """Crossed design (the same items under every seed), a large seed effect: 3 seeds drawn from their population."""
    rng = np.random.default_rng(0)
    covered = {"seed-item": 0, "seed bootstrap": 0}
    for trial in range(80):
        items = rng.normal(0.05, 0.1, size=60)
        values = items[None, :] + rng.normal(0, 0.1, size=(3, 1)) + rng.normal(0, 0.1, size=(3, 60))
        groups = {"x": (np.zeros((3, 60)), values)}
        low, high = seed_item_draws(groups, n_boot=200, seed=trial).interval(lambda m: m["x"][:, 1] - m["x"][:, 0])
        covered["seed-item"] += low <= 0.05 <= high
        reps = resample_means(groups, n_boot=200, seed=trial)["x"]
        low, high = percentile_interval(reps[:, 1] - reps[:, 0])
        covered["seed bootstrap"] += low <= 0.05 <= high
    assert covered["seed-item"] >= 70 and covered["seed bootstrap"] <= covered["seed-item"] - 6  # 74 and 66 of 80
