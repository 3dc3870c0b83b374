"""Shared pieces of the benchmarks: a result row, side-by-side timing, the markdown table and bench.json."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import psutil
import torch

from companion.publish.results import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "book" / "_generated" / "results" / "bench.json"
MODEL = "gemma-3-270m"
LANGUAGES = ["en", "de", "fr", "es", "ru"]
T = TypeVar("T")


@dataclass(frozen=True)
class Row:
    """One benchmark: its figure and bar as short strings, whether the bar holds, and how it was measured."""

    name: str
    value: str
    bar: str
    holds: bool
    detail: str = ""
    seconds: float = 0.0
    key: str = ""  # the short name run.py selects it by (--only)


def physical_cores() -> int:
    """Physical CPU cores (logical ones when psutil cannot tell)."""
    return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1


def use_physical_cores() -> int:
    """Set torch's thread count to the physical cores and return it."""
    torch.set_num_threads(physical_cores())
    return torch.get_num_threads()


def seconds(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternating(fns: dict[str, Callable[[], T]], repeats: int) -> dict[str, list[T]]:
    """Each function's results over repeats, run in alternation: the order flips every repeat (A B, B A, ...), so
    whatever the first or second place costs falls on both."""
    results: dict[str, list[T]] = {name: [] for name in fns}
    for repeat in range(repeats):
        for name, fn in list(fns.items())[:: -1 if repeat % 2 else 1]:
            results[name].append(fn())
    return results


def side_by_side(fns: dict[str, Callable[[], object]], repeats: int, warmup: bool = True) -> dict[str, float]:
    """Median seconds of each function, run in alternation (after one untimed warm-up each) so noise hits all."""
    if warmup:
        for fn in fns.values():
            fn()
    times = alternating({name: lambda fn=fn: seconds(fn) for name, fn in fns.items()}, repeats)
    return {name: statistics.median(values) for name, values in times.items()}


def ratio_row(name: str, times: dict[str, float], ours: str, reference: str, limit: float, what: str) -> Row:
    """A row for 'ours takes at most limit x the reference's time', with both medians in the detail."""
    ratio = times[ours] / times[reference]
    return Row(name, f"{ratio:.3f}x", f"<= {limit:.2f}x", ratio <= limit,
               f"{what}: {times[ours]:.2f} s vs {times[reference]:.2f} s (medians)", times[ours] + times[reference])


def markdown_table(rows: list[Row]) -> str:
    """The rows as one markdown table: benchmark, measured figure, bar, holds and the detail."""
    lines = ["| benchmark | measured | bar | holds | detail |", "|---|---|---|---|---|"]
    lines += [f"| {r.name} | {r.value} | {r.bar} | {'yes' if r.holds else '**no**'} | {r.detail} |" for r in rows]
    return "\n".join(lines)


def write_rows(rows: list[Row], path: Path = RESULTS) -> Path:
    """Write the rows to bench.json (a list of {name, value, bar, holds, detail, seconds}) atomically."""
    return write_json_atomic(path, [asdict(row) for row in rows])
