"""The stated rule that turns an estimate and its 95% interval into one of five verdicts on a paper's claim."""

from __future__ import annotations

import math
from dataclasses import dataclass

REPRODUCED, SMALLER, INCONCLUSIVE, NOT_REPRODUCED, OPPOSITE = (
    "reproduced", "smaller effect", "inconclusive", "not reproduced", "opposite")
OUTCOMES = (REPRODUCED, SMALLER, INCONCLUSIVE, NOT_REPRODUCED, OPPOSITE)

RULE = (
    "Each verdict is computed from our estimate's 95% interval, the paper's value and the no-effect value "
    "(1 for a ratio, 0 for a difference). "
    f"**{REPRODUCED}**: the interval excludes no effect, on the paper's side, and contains the paper's value or lies "
    f"beyond it. **{SMALLER}**: the interval excludes no effect on the paper's side but lies wholly short of the "
    f"paper's value. **{INCONCLUSIVE}**: the interval contains both no effect and the paper's value. "
    f"**{NOT_REPRODUCED}**: the interval contains no effect and excludes the paper's value. **{OPPOSITE}**: the "
    "interval lies wholly on the other side of no effect. An interval that touches a value contains it. Where the "
    "paper states a direction but no number, every effect in that direction counts as the paper's value. A row "
    "whose estimate has no interval gets no verdict."
)


@dataclass(frozen=True)
class Estimate:
    """An estimate with its 95% interval (a bound is None when the results file recorded none)."""

    value: float | None
    low: float | None
    high: float | None

    @property
    def has_interval(self) -> bool:
        """Whether both bounds are numbers (infinite bounds count; missing or NaN bounds do not)."""
        return all(bound is not None and not math.isnan(bound) for bound in (self.low, self.high))


def verdict(estimate: Estimate, paper_value: float | None, null_value: float, direction: int = 1) -> str | None:
    """The rule's verdict, or None when the estimate has no interval.

    `paper_value` None means the paper claims a direction only (`direction`: +1 an increase, -1 a decrease);
    otherwise the direction is the side of `null_value` the paper's value lies on.
    """
    if not estimate.has_interval:
        return None
    if paper_value is not None:
        if paper_value == null_value:
            raise ValueError(f"the paper's value {paper_value} equals the no-effect value: there is no claim to test")
        direction = 1 if paper_value > null_value else -1
    elif direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction}")
    low, high = sorted(direction * (bound - null_value) for bound in (estimate.low, estimate.high))
    target = 0.0 if paper_value is None else direction * (paper_value - null_value)
    reaches_paper = high > target if paper_value is None else high >= target
    if low > 0:
        return REPRODUCED if reaches_paper else SMALLER
    if high < 0:
        return OPPOSITE
    return INCONCLUSIVE if reaches_paper else NOT_REPRODUCED
