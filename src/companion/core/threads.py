"""A notebook's share of the cores, followed while it runs.

When the runner executes several notebooks side by side it keeps, in the file named by $COMPANION_CORE_SHARE, how
many run now and the most threads one may take (the notebooks' default `threads`). Long loops call `follow()` between
batches and steps: torch then uses cores // running threads, at most that many, so a notebook left alone (say, paper
B's scoring after paper A is done) takes the cores the others gave back instead of keeping the one it started with.
Without the variable (a notebook run by hand, one at a time, or with its `threads` set) nothing changes.
"""

from __future__ import annotations

import os
from pathlib import Path

SHARE_FILE = "COMPANION_CORE_SHARE"


def cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it, else the CPU count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def share(running: int, cap: int | None = None) -> int:
    """Threads for one of `running` notebooks: an equal share of the cores, at least 1 and at most cap."""
    equal = max(1, cores() // max(1, running))
    return min(equal, cap) if cap else equal


def write_running(path: Path, running: int, cap: int) -> None:
    """Record how many notebooks run now and the most threads one may take (written whole, then renamed, so a reader
    never sees half of it)."""
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(f"{running} {cap}")
    os.replace(staging, path)


def follow() -> int:
    """Set torch's threads to this notebook's share now when the runner shares the cores; return the threads in use."""
    import torch  # here, not above: the runner writes the shares without loading torch

    path = os.environ.get(SHARE_FILE)
    if path:
        try:
            running, cap = (int(part) for part in Path(path).read_text().split())
            wanted = share(running, cap)
        except (OSError, ValueError):
            wanted = torch.get_num_threads()  # the runner is gone or rewriting: keep what we have
        if wanted != torch.get_num_threads():
            torch.set_num_threads(wanted)
    return torch.get_num_threads()
