"""How a page's tables show numbers: rounded, and 95% intervals as '[low, high]' (the results files keep the numbers)."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real

import pandas as pd


def format_interval(interval: Sequence[float | None] | None, digits: int = 3, signed: bool = False) -> str:
    """An interval for a table: '[0.012, 0.057]', or '[+0.012, +0.057]' when signed; '—' for none or a missing bound."""
    if interval is None:
        return "—"
    bound = f"{{:{'+' if signed else ''}.{digits}f}}"
    return "[" + ", ".join("—" if value is None else bound.format(value) for value in interval) + "]"


def readable(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """A copy of table for the page: numbers rounded, missing ones as a dash, every ``*_ci`` column or row written with
    format_interval.

    Intervals of differences (names starting with 'diff' or 'gap') are signed.
    """
    def cell(name: object, value: object) -> object:
        """One value as shown, given the name of its column or row."""
        if str(name).endswith("_ci"):
            return format_interval(value, digits, signed=str(name).startswith(("diff", "gap")))
        return round(float(value), digits) if isinstance(value, Real) and not isinstance(value, Integral) else value

    shown = table.round(digits)
    for column in shown.columns:
        if str(column).endswith("_ci") or shown[column].dtype == object:
            shown[column] = [cell(column, value) for value in shown[column]]
    for index in shown.index:
        if str(index).endswith("_ci"):
            shown.loc[index] = [cell(index, value) for value in shown.loc[index]]
    return shown.astype(object).where(shown.notna(), "—")  # a missing number shows as a dash, not NaN
