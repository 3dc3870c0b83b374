"""Plain progress lines on stderr while notebooks run: cells done of total, elapsed time, and time left from the last run."""

from __future__ import annotations

import json
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any, TextIO

from companion.publish.project import Outcome

ENGINE = "companion-progress"


def _say(text: str, stream: TextIO | None = None) -> None:
    """One line on stderr (or stream), flushed at once so CI logs show it as it happens."""
    print(f"companion: {text}", file=stream or sys.stderr, flush=True)


def last_seconds(results: Path, output: str, name: str) -> float | None:
    """The recorded duration of the last run of this output (or of the notebook's plain run), if any."""
    for path in (results / f"{output}.json", results / f"{name}.json"):
        try:
            return float(json.loads(path.read_text(encoding="utf-8"))["provenance"]["seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def _left(expected: float | None, elapsed: float) -> str:
    """'about N s left (last run M s)', or a note that there is no earlier run to go by."""
    if expected is None:
        return "no earlier run to estimate from"
    return f"about {max(expected - elapsed, 0):.0f} s left (last run {expected:.0f} s)"


class CellProgress:
    """Reports one notebook's progress as each code cell completes."""

    def __init__(self, output: str, total: int, expected: float | None) -> None:
        """Start the clock for a notebook of total code cells expected to take about `expected` seconds."""
        self.output, self.total, self.expected = output, total, expected
        self.done, self.started = 0, time.perf_counter()
        _say(f"{output}: started, {total} code cells; {_left(expected, 0.0)}")

    def cell(self, cell: Any) -> None:
        """Count a completed cell; print a line for each code cell."""
        if cell.get("cell_type") != "code":
            return
        self.done += 1
        elapsed = time.perf_counter() - self.started
        _say(f"{self.output}: cell {self.done}/{self.total} done, {elapsed:.0f} s elapsed, {_left(self.expected, elapsed)}")


@cache
def engine_name() -> str:
    """Register (once) a papermill engine that calls a CellProgress after every cell; return its name."""
    from papermill.engines import NBClientEngine, papermill_engines

    class ProgressEngine(NBClientEngine):
        """nbclient execution that reports each completed cell."""

        @classmethod
        def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, progress: CellProgress | None = None,
                                     **kwargs: Any) -> Any:
            """Wrap the execution manager's cell_complete hook, then execute as papermill does."""
            if progress is not None:
                complete = nb_man.cell_complete

                def cell_complete(cell: Any, cell_index: int | None = None, **more: Any) -> Any:
                    """Papermill's bookkeeping, then one progress line."""
                    result = complete(cell, cell_index=cell_index, **more)
                    progress.cell(cell)
                    return result

                nb_man.cell_complete = cell_complete
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register(ENGINE, ProgressEngine)
    return ENGINE


class RunProgress:
    """Run-level lines: the plan with its expected work, then one line per finished notebook with the time left."""

    def __init__(self, expected: dict[str, float | None], skipped: int, workers: int) -> None:
        """Announce how many notebooks run, how many are up to date, and the recorded work ahead."""
        self.expected, self.workers, self.finished = expected, workers, 0
        self.started: dict[str, float] = {}
        known = sum(v for v in expected.values() if v is not None)
        unknown = sum(v is None for v in expected.values())
        _say(f"{len(expected)} notebook(s) to run, {skipped} up to date, {workers} at a time; last recorded durations "
             f"add up to {known:.0f} s" + (f" ({unknown} without a record)" if unknown else ""))

    def start(self, output: str) -> None:
        """Note when a notebook was handed to the executor."""
        self.started[output] = time.perf_counter()

    def left(self) -> float:
        """Seconds left by the recorded durations: the longest running remainder, or all remainders shared by the workers."""
        now = time.perf_counter()
        remainders = [max((seconds or 0.0) - (now - self.started[o] if o in self.started else 0.0), 0.0)
                      for o, seconds in self.expected.items()]
        running = [r for o, r in zip(self.expected, remainders) if o in self.started]
        return max(max(running, default=0.0), sum(remainders) / self.workers)

    def done(self, outcome: Outcome) -> None:
        """One line when a notebook finishes: its status and time, and the time left by the recorded durations."""
        self.finished += 1
        self.expected.pop(outcome.name, None)
        self.started.pop(outcome.name, None)
        _say(f"[{self.finished}/{self.finished + len(self.expected)}] {outcome.name} {outcome.status} in "
             f"{outcome.seconds:.0f} s; about {self.left():.0f} s left by the recorded durations")
