"""Run the speed benchmarks side by side with the reference way, print one markdown table, write bench.json.

    python benchmarks/run.py [--only ROW ...] [--quick]

ROW is a number (1-11) or a name (ap, capture, intervention, batching, peak, memory, training, precision,
steering_precision, allocator, sampled_arms). --quick uses
smaller samples and the smoke profile for the memory row, and says so in each row's detail.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import bench_allocator  # noqa: E402  (after the environment is set)
import bench_memory  # noqa: E402
import bench_precision  # noqa: E402
import bench_sampling  # noqa: E402
import bench_steering  # noqa: E402
import bench_training  # noqa: E402
from common import RESULTS, Row, markdown_table, use_physical_cores, write_rows  # noqa: E402

ROWS: dict[str, Callable[[bool], Row]] = {**bench_steering.ROWS, **bench_memory.ROWS, **bench_training.ROWS, **bench_precision.ROWS,
                                         **bench_allocator.ROWS, **bench_sampling.ROWS}


def selected(only: list[str] | None) -> list[str]:
    """Row names to run, in table order, from numbers or names (all when only is empty)."""
    names = list(ROWS)
    if not only:
        return names
    chosen = {names[int(item) - 1] if item.isdigit() and 1 <= int(item) <= len(names) else item for item in only}
    unknown = sorted(chosen - set(names))
    if unknown:
        raise SystemExit(f"unknown row(s) {', '.join(unknown)}; use 1-{len(names)} or {', '.join(names)}")
    return [name for name in names if name in chosen]


def merged(previous: list[dict], rows: dict[str, Row]) -> list[Row]:
    """The rows measured now, plus those of a previous bench.json that were not rerun, in table order."""
    kept = {entry["key"]: Row(**entry) for entry in previous if entry.get("key") in ROWS}
    return [rows.get(key) or kept[key] for key in ROWS if key in rows or key in kept]


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, run the chosen rows with progress lines, print the table and write bench.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="ROW", help="rows to run: numbers 1-11 or names")
    parser.add_argument("--quick", action="store_true", help="small samples; smoke profile for the memory row")
    args = parser.parse_args(argv)
    threads, started, rows = use_physical_cores(), time.perf_counter(), {}
    for name in selected(args.only):
        print(f"[bench] {name} ({threads} threads{', quick' if args.quick else ''}) …", flush=True)
        rows[name] = replace(ROWS[name](args.quick), key=name)
        print(f"[bench] {name}: {rows[name].value} (bar {rows[name].bar}), {rows[name].seconds:.0f} s", flush=True)
    previous = json.loads(RESULTS.read_text(encoding="utf-8")) if args.only and RESULTS.exists() else []
    table = merged(previous, rows)
    write_rows(table)
    print(markdown_table(table))
    print(f"\n{len(rows)} row(s) in {time.perf_counter() - started:.0f} s; wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
