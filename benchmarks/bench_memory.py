"""Row 6: peak resident memory of the expert-finding notebook, run through the runner in a throwaway project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from common import ROOT, Row

from companion.core.cache import cache_root

NOTEBOOK = "steering_1_experts"
GIB = 2**30


def throwaway_project(root: Path) -> None:
    """Copy notebooks, book and config into root and link the source (as tests/conftest.py smoke_project does)."""
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    shutil.copytree(ROOT / "book", root / "book", ignore=shutil.ignore_patterns("_generated", "_build"))
    shutil.copy(ROOT / "_config.yml", root / "_config.yml")
    (root / "src").mkdir()
    (root / "src" / "companion").symlink_to(ROOT / "src" / "companion")


def fresh_cache(folder: Path) -> Path:
    """An empty companion cache whose models/ links to the real one: the expert table is recomputed, no model."""
    folder.mkdir()
    (folder / "models").symlink_to(cache_root() / "models", target_is_directory=True)
    return folder


def tree_rss(process: psutil.Process) -> int:
    """Resident bytes of a process and all of its descendants (0 for any that has already gone)."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            continue
    return total


def peak_rss(command: list[str], env: dict[str, str], interval: float = 0.2) -> tuple[int, int]:
    """Run command, sampling its process tree's RSS; returns (peak bytes, exit code)."""
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    process, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        try:
            peak = max(peak, tree_rss(process))
        except psutil.Error:
            break
        time.sleep(interval)
    return peak, child.wait()


def memory_row(quick: bool) -> Row:
    """Row 6: peak RSS of steering_1_experts (default profile; smoke with --quick) with a fresh expert cache."""
    profile = "smoke" if quick else "default"
    code = ("import sys; from pathlib import Path; from companion.publish.project import Project; "
            "from companion.publish.runner import run; "
            f"o = run(Project(Path(sys.argv[1])), {profile!r}, only={NOTEBOOK!r}, force=True); "
            "sys.exit(0 if all(x.status == 'ran' for x in o) else 1)")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        root = Path(tmp) / "project"
        throwaway_project(root)
        env = {**os.environ, "COMPANION_CACHE": str(fresh_cache(Path(tmp) / "cache")),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
        peak, status = peak_rss([sys.executable, "-c", code, str(root)], env)
    elapsed = time.perf_counter() - started
    holds = status == 0 and peak <= 4 * GIB
    return Row(f"Memory (peak RSS, {NOTEBOOK})", f"{peak / GIB:.2f} GiB" + ("" if status == 0 else " (run failed)"),
               "<= 4 GiB", holds, f"{profile} profile through the runner, expert table recomputed, process tree "
               f"sampled every 0.2 s; {elapsed:.0f} s", elapsed)


ROWS = {"memory": memory_row}
