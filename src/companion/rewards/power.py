"""How paper B's test sets are sized: the pairs a target half-width of the mean OOD gap needs, and what a run reached."""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

Z95 = float(norm.ppf(0.975))  # the two-sided 95% normal quantile, 1.96 (as stats.wilson_interval computes it)
ASSUMED_DISAGREEMENT = 0.3  # the share of pairs the two models rank differently, assumed on the data page to size the sets
TARGET_HALF_WIDTH = 0.03  # the 95% half-width of the mean OOD gap the default test sets are sized for (dpo_1, "How many pairs")


def pairs_for_half_width(disagreement: float, n_sets: int, half_width: float) -> int:
    """Pairs per set for a target 95% half-width of the mean gap over n_sets equal sets, pairs treated as independent.

    A pair's gap (EXRM minus DPORM correctness) is -1, 0 or +1; with the two models disagreeing on a share d of
    pairs and a small mean gap its variance is about d, so the half-width is 1.96 * sqrt(d / (n_sets * n)).
    """
    return int(np.ceil(disagreement * (Z95 / half_width) ** 2 / n_sets))


def expected_half_width(disagreement: float, n_pairs: int) -> float:
    """The 95% half-width of a mean gap over n_pairs independent pairs on which the models disagree on a share d (the
    model of pairs_for_half_width, read the other way)."""
    return Z95 * float(np.sqrt(disagreement / n_pairs))


def half_width(interval: list[float] | None) -> float | None:
    """Half the width of an interval."""
    return None if interval is None else (interval[1] - interval[0]) / 2


def power_note(records: list[dict], primary: dict, n_seeds: int) -> str:
    """One paragraph for the page: the disagreement the set size assumed against the one measured, the half-width
    that disagreement gives one seed's pairs, and the half-width reached with the seeds averaged."""
    reached, ood = half_width(primary.get("gap_mean_ood_ci")), primary.get("settings") or []
    shares = [r["disagreement"] for r in records if r["name"] in ood]
    if reached is None or not shares:
        return ""
    n_pairs = sum(primary["n_pairs"][name] for name in ood)
    single = expected_half_width(float(np.mean(shares)), n_pairs)
    text = (f"Part 1 sized the sets for a half-width of {TARGET_HALF_WIDTH:g} assuming the two models rank a share "
            f"d = {ASSUMED_DISAGREEMENT:g} of pairs differently; on the out-of-distribution sets here d is "
            f"{min(shares):.2f} to {max(shares):.2f} (pooled over seeds), which for the pairs of one seed would give a "
            f"half-width of about {single:.3f}. The half-width reached is {reached:.3f}")
    if reached <= TARGET_HALF_WIDTH < single and n_seeds > 1:
        text += (f": the target is met although d is larger than assumed, because each pair's gap is averaged over "
                 f"{n_seeds} seeds, whose calls on a pair differ, which lowers its variance below d; the spread "
                 "between seeds adds some back.")
    elif reached <= TARGET_HALF_WIDTH:
        text += ": the target is met."
    else:
        text += ": the target is missed, so the mean OOD gap is resolved less finely than planned."
    return text
