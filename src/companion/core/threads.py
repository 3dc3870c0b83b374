"""A notebook's share of the cores, followed while it runs.

When the runner executes several notebooks side by side it keeps, in the file named by $COMPANION_CORE_SHARE, how
many run now. Long loops call `follow()` between batches and steps: torch then uses cpu_count // running threads,
so a notebook left alone (say, paper B's scoring after paper A is done) takes the cores the others gave back
instead of keeping the one it started with. Without the variable (a notebook run by hand, one at a time, or with
its `threads` set) nothing changes.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

SHARE_FILE = "COMPANION_CORE_SHARE"


def share(running: int) -> int:
    """Threads for one of `running` notebooks: an equal share of the cores, at least 1."""
    return max(1, (os.cpu_count() or 1) // max(1, running))


def write_running(path: Path, running: int) -> None:
    """Record how many notebooks run now (written whole, then renamed, so a reader never sees half a number)."""
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(str(running))
    os.replace(staging, path)


def follow() -> int:
    """Set torch's threads to this notebook's share now when the runner shares the cores; return the threads in use."""
    path = os.environ.get(SHARE_FILE)
    if path:
        try:
            wanted = share(int(Path(path).read_text()))
        except (OSError, ValueError):
            wanted = torch.get_num_threads()  # the runner is gone or rewriting: keep what we have
        if wanted != torch.get_num_threads():
            torch.set_num_threads(wanted)
    return torch.get_num_threads()
