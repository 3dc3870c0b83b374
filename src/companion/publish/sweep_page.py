"""The sweeps page: each swept notebook's grid points side by side, read from results/NAME/KEY=VALUE.json."""

from __future__ import annotations

import json
from collections.abc import Iterator
from numbers import Real
from pathlib import Path
from typing import Any

MAX_ROWS = 40  # numbers per notebook shown on the page; the results files hold them all


def _number(value: Any) -> bool:
    """A real number that is not a bool."""
    return isinstance(value, Real) and not isinstance(value, bool)


def _interval(value: Any) -> bool:
    """A [low, high] pair of numbers."""
    return isinstance(value, list) and len(value) == 2 and all(_number(v) for v in value)


def numbers(metrics: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, float, list[float] | None]]:
    """(name, value, interval or None) for every number in metrics, nested names joined by '.', `X_ci` read as X's interval.

    A list of records is named by each record's first text field (e.g. targets.fr.share).
    """
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if _number(value) and not key.endswith("_ci"):
            interval = metrics.get(f"{key}_ci")
            yield name, float(value), [float(v) for v in interval] if _interval(interval) else None
        elif isinstance(value, dict):
            yield from numbers(value, f"{name}.")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for index, record in enumerate(value):
                tag = next((str(v) for v in record.values() if isinstance(v, str)), str(index))
                yield from numbers(record, f"{name}.{tag}.")


def headline(metrics: dict[str, Any]) -> list[tuple[str, float, list[float] | None]]:
    """The numbers to compare: metrics.primary when recorded, else the metrics with intervals, else every number."""
    if isinstance(metrics.get("primary"), dict):
        return list(numbers(metrics["primary"], "primary."))
    found = list(numbers(metrics))
    return [row for row in found if row[2] is not None] or found


def _cell(value: float | None, interval: list[float] | None) -> str:
    """'v [low, high]' for the table, '—' when the point lacks the number."""
    if value is None:
        return "—"
    text = str(int(value)) if value.is_integer() and abs(value) < 1e12 else f"{value:.4g}"
    return text + (f" [{interval[0]:.4g}, {interval[1]:.4g}]" if interval else "")


def _label(point: dict[str, Any]) -> str:
    """A grid point as the column header, e.g. `seed=1`."""
    return "`" + ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in point.items()) + "`"


def notebook_section(folder: Path) -> list[str]:
    """One notebook's points as a table: a row per number, a column per point."""
    points = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))]
    points = [p for p in points if isinstance(p.get("point"), dict)]
    if not points:
        return []
    columns = [{name: (value, interval) for name, value, interval in headline(p.get("metrics", {}))} for p in points]
    rows = list(dict.fromkeys(name for column in columns for name in column))
    if len(columns) > 1 and not any(interval for column in columns for _, interval in column.values()):
        rows = [row for row in rows if len({column.get(row) for column in columns}) > 1]  # without intervals: what differs
    lines = [f"## {folder.name}", "",
             f"Profile `{points[0].get('profile', '?')}`; {len(points)} points; numbers from "
             f"`book/_generated/results/{folder.name}/*.json`, with 95% intervals where the notebook recorded one.", "",
             "| | " + " | ".join(_label(p["point"]) for p in points) + " |", "|---|" + "---:|" * len(points)]
    lines += [f"| {row} | " + " | ".join(_cell(*column.get(row, (None, None))) for column in columns) + " |"
              for row in rows[:MAX_ROWS]]
    if len(rows) > MAX_ROWS:
        lines += ["", f"{len(rows) - MAX_ROWS} more numbers are in the results files."]
    return lines + [""]


def render(results: Path) -> str:
    """The sweeps page as MyST markdown."""
    lines = ["# Parameter sweeps", "",
             "`companion run --sweep KEY=[v1,v2,...]` runs every point of a grid and keeps each point's executed notebook "
             "and results apart (`book/_generated/NAME/KEY=VALUE.ipynb`, `book/_generated/results/NAME/KEY=VALUE.json`). "
             "This page puts the points side by side: the notebook's primary analysis where it records one, otherwise "
             "its numbers that carry an interval, otherwise (for a notebook that records none) the numbers that differ "
             "between points.", ""]
    sections = [line for folder in sorted(p for p in results.glob("*") if p.is_dir()) for line in notebook_section(folder)]
    return "\n".join(lines + (sections or ["No sweep has been run for this build."])) + "\n"
