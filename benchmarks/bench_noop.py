"""Time the no-op `companion run` (everything up to date) on an executed project: median of 5 runs.

    python benchmarks/bench_noop.py --root PROJECT [-- RUN ARGS ...]

PROJECT must have been executed with the same run arguments first (e.g. the smoke project of `make test`,
or `companion run --profile smoke` in a copy of the repository); every run must then report only 'skipped'.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def time_runs(root: str, args: list[str], repeats: int = 5) -> list[float]:
    """Wall seconds of each `companion run` in a fresh interpreter; fails if any notebook would execute."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "companion.publish.cli", "--root", root, "run", *args],
                              capture_output=True, text=True, env=env, check=True)
        seconds.append(time.perf_counter() - started)
        if "| ran |" in done.stdout or "| failed |" in done.stdout:
            raise SystemExit(f"not a no-op run; execute the project with the same arguments first:\n{done.stdout}")
    return seconds


def main() -> None:
    """Print the median and every run's time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("args", nargs="*", default=["--profile", "smoke"])
    options = parser.parse_args()
    seconds = time_runs(options.root, options.args)
    print(f"no-op companion run: median {statistics.median(seconds):.2f} s over {len(seconds)} runs "
          f"({', '.join(f'{s:.2f}' for s in seconds)})")


if __name__ == "__main__":
    main()
