"""The five-outcome rule: each outcome, intervals touching a value, unbounded and missing bounds, no interval."""

import math

import pytest

from companion.publish.verdicts import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    OPPOSITE,
    OUTCOMES,
    REPRODUCED,
    RULE,
    SMALLER,
    Estimate,
    verdict,
)


def ratio(low: float | None, high: float | None, value: float | None = 1.5) -> str | None:
    """Verdict on 'up to 2x' (paper 2.0, no effect 1.0)."""
    return verdict(Estimate(value, low, high), 2.0, 1.0)


def drop(low: float | None, high: float | None) -> str | None:
    """Verdict on 'a 3-point drop' (paper 0.03, no effect 0)."""
    return verdict(Estimate(None, low, high), 0.03, 0.0)


def direction(low: float, high: float, sign: int = 1) -> str | None:
    """Verdict on a direction-only claim (no effect 0)."""
    return verdict(Estimate(None, low, high), None, 0.0, sign)


def test_each_of_the_five_outcomes() -> None:
    assert ratio(1.5, 2.1) == REPRODUCED  # contains the paper's value
    assert ratio(2.2, 2.9) == REPRODUCED  # lies beyond it
    assert ratio(1.1, 1.5) == SMALLER
    assert ratio(0.9, 2.3) == INCONCLUSIVE
    assert ratio(0.9, 1.3) == NOT_REPRODUCED
    assert ratio(0.6, 0.8) == OPPOSITE
    assert drop(0.01, 0.025) == SMALLER
    assert drop(-0.02, 0.04) == INCONCLUSIVE  # the old rule called this "not reproduced"
    assert drop(-0.02, 0.02) == NOT_REPRODUCED
    assert drop(-0.05, -0.01) == OPPOSITE
    assert set(OUTCOMES) == {REPRODUCED, SMALLER, INCONCLUSIVE, NOT_REPRODUCED, OPPOSITE}
    assert all(outcome in RULE for outcome in OUTCOMES)


def test_a_claim_of_a_decrease_mirrors_the_rule() -> None:
    assert verdict(Estimate(None, 0.4, 0.6), 0.5, 1.0) == REPRODUCED
    assert verdict(Estimate(None, 0.7, 0.9), 0.5, 1.0) == SMALLER
    assert verdict(Estimate(None, 1.1, 1.3), 0.5, 1.0) == OPPOSITE
    assert direction(-0.3, -0.1, sign=-1) == REPRODUCED
    assert direction(0.1, 0.3, sign=-1) == OPPOSITE


def test_an_interval_touching_a_value_contains_it() -> None:
    assert ratio(1.0, 1.5) == NOT_REPRODUCED  # touches no effect, short of the paper
    assert ratio(1.0, 2.0) == INCONCLUSIVE  # touches both
    assert ratio(1.2, 2.0) == REPRODUCED  # touches the paper's value
    assert drop(0.0, 0.02) == NOT_REPRODUCED
    assert drop(-0.01, 0.0) == NOT_REPRODUCED
    assert direction(0.0, 0.1) == INCONCLUSIVE  # contains no effect and effects in the claimed direction
    assert direction(0.0, 0.0) == NOT_REPRODUCED  # e.g. a share that stayed at zero
    assert direction(-0.1, 0.0) == NOT_REPRODUCED
    assert direction(1e-9, 0.2) == REPRODUCED


def test_infinite_bounds_follow_the_rule_and_missing_bounds_get_no_verdict() -> None:
    assert ratio(1.2, math.inf) == REPRODUCED  # unbounded above, excludes no effect
    assert ratio(-math.inf, math.inf) == INCONCLUSIVE
    assert ratio(0.5, math.inf) == INCONCLUSIVE  # the old rule's 33x "reproduced" from a baseline of ~0
    assert ratio(-math.inf, 0.9) == OPPOSITE
    assert ratio(None, 2.1) is None
    assert ratio(1.5, None) is None
    assert ratio(math.nan, 2.1) is None
    assert Estimate(1.0, None, 2.0).has_interval is False


def test_no_interval_means_no_verdict_whatever_the_estimate() -> None:
    assert ratio(None, None, value=33.0) is None
    assert direction(0.2, 0.4) == REPRODUCED  # the same estimate with an interval gets one


def test_a_claim_whose_value_is_no_effect_is_refused() -> None:
    with pytest.raises(ValueError, match="no-effect"):
        verdict(Estimate(1.0, 0.9, 1.1), 1.0, 1.0)
    with pytest.raises(ValueError, match="direction"):
        verdict(Estimate(1.0, 0.9, 1.1), None, 0.0, 0)
