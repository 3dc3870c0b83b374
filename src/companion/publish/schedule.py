"""Run order and resources from the profile (`after:`, `resources:`), and the loop that hands ready tasks to an executor."""

from __future__ import annotations

import sys
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from typing import Any, Protocol

from companion.core.errors import UserError
from companion.publish.progress import RunProgress
from companion.publish.project import Outcome
from companion.publish.sweep import Task


@dataclass(frozen=True)
class Resources:
    """What one notebook execution asks of a cluster node."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float | None = None


RESOURCE_KEYS = ("cpus", "gpus", "memory_gb")


def _non_negative(value: Any) -> bool:
    """Whether a profile value is a number (not a bool) of at least 0."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value >= 0


def _resource(where: str, values: Any) -> dict[str, float]:
    """One resources entry checked: known keys, non-negative numbers."""
    if not isinstance(values, dict):
        raise UserError(f"profile resources.{where} must be a mapping like {{cpus: 2, gpus: 1, memory_gb: 16}}")
    for key, value in values.items():
        if key not in RESOURCE_KEYS:
            raise UserError(f"profile resources.{where}: unknown key '{key}'; allowed: {', '.join(RESOURCE_KEYS)}")
        if not _non_negative(value):
            raise UserError(f"profile resources.{where}.{key} must be a non-negative number, got {value!r}")
    return values


def resources(profile: dict[str, Any], names: list[str]) -> dict[str, Resources]:
    """Each notebook's resources: defaults < resources.all < resources.NOTEBOOK."""
    declared = profile.get("resources") or {}
    unknown = [key for key in declared if key != "all" and key not in names]
    if unknown:
        raise UserError(f"profile resources names notebook '{unknown[0]}', which does not exist; use 'all' or one of: "
                        f"{', '.join(names)}")
    base = _resource("all", declared.get("all") or {})
    return {name: Resources(**{**base, **_resource(name, declared.get(name) or {})}) for name in names}


def prerequisites(profile: dict[str, Any], names: list[str]) -> dict[str, list[str]]:
    """The profile's `after:` map (notebook -> notebooks whose outputs it needs), checked for names and cycles."""
    after = profile.get("after") or {}
    for name, needs in after.items():
        if not isinstance(needs, list):
            raise UserError(f"profile after.{name} must be a list of notebook names, e.g. [steering_1_experts]")
        for other in [name, *needs]:
            if other not in names:
                raise UserError(f"profile after: notebook '{other}' does not exist; names are: {', '.join(names)}")
    state: dict[str, str] = {}

    def visit(name: str) -> None:
        """Depth-first search that fails on a back edge."""
        if state.get(name) == "open":
            raise UserError(f"profile after: notebook '{name}' ends up waiting for itself; remove one entry of the cycle")
        if state.get(name) != "done":
            state[name] = "open"
            for other in after.get(name, []):
                visit(other)
            state[name] = "done"

    for name in after:
        visit(name)
    return {name: list(after.get(name, [])) for name in names}


def minutes(profile: dict[str, Any], names: list[str]) -> dict[str, float]:
    """The profile's `minutes:` map (notebook -> minutes a run took), checked: known names, non-negative numbers."""
    declared = profile.get("minutes") or {}
    for name, value in declared.items():
        if name not in names:
            raise UserError(f"profile minutes: notebook '{name}' does not exist; names are: {', '.join(names)}")
        if not _non_negative(value):
            raise UserError(f"profile minutes.{name} must be a non-negative number of minutes, got {value!r}")
    return {name: float(value) for name, value in declared.items()}


def longest_chain_first(tasks: list[Task], after: dict[str, list[str]], seconds: dict[str, float]) -> list[Task]:
    """The tasks ordered so that, among those ready at once, the one heading the longest chain of expected work (its
    own seconds plus the longest chain of the tasks that need it) starts first; ties keep the given order.

    seconds: expected seconds by task output (a task without an estimate counts 0)."""
    needed_by = {t.output: [o for o in tasks if o is not t and depends_on(o, t, after)] for t in tasks}
    chain: dict[str, float] = {}

    def length(task: Task) -> float:
        """Expected seconds from this task's start to the end of its longest chain of dependents."""
        if task.output not in chain:
            chain[task.output] = seconds.get(task.output, 0.0) + max((length(o) for o in needed_by[task.output]), default=0.0)
        return chain[task.output]

    return sorted(tasks, key=lambda t: -length(t))


def depends_on(task: Task, other: Task, after: dict[str, list[str]]) -> bool:
    """True when task needs other first: its notebook is a prerequisite and their grid points agree."""
    return other.name in after.get(task.name, []) and all(
        task.point[key] == value for key, value in other.point.items() if key in task.point)


class Executor(Protocol):
    """Where tasks run: submit returns a future of the task's Outcome; cancel stops the outstanding ones."""

    parallel: int  # how many tasks it runs at once

    def submit(self, task: Task) -> Future:
        """Start the task; a future of its Outcome."""

    def cancel(self, futures: list[Future]) -> None:
        """Stop the given outstanding tasks."""


def dependents(needs: dict[str, list[str]]) -> dict[str, set[str]]:
    """For each task, every task that needs it first, directly or through others."""
    found: dict[str, set[str]] = {name: set() for name in needs}
    for name in needs:
        stack = list(needs[name])
        while stack:
            prerequisite = stack.pop()
            if name not in found[prerequisite]:
                found[prerequisite].add(name)
                stack += needs[prerequisite]
    return found


def run_tasks(tasks: list[Task], after: dict[str, list[str]], executor: Executor, progress: RunProgress,
              prepare: Callable[[Task, bool], Task] | None = None,
              on_running: Callable[[int], None] | None = None) -> list[Outcome]:
    """Submit each task once its prerequisites ran; a failed prerequisite fails its dependents; Ctrl-C cancels the rest.

    prepare(task, alone) gives the task as submitted; alone: nothing else runs and every task still waiting needs this
    one first, so it has the machine to itself until it ends. on_running(n) hears how many tasks run whenever that
    changes (the runner's core share, `companion.core.threads`).
    """
    tell = on_running or (lambda n: None)
    needs = {t.output: [o.output for o in tasks if o is not t and depends_on(t, o, after)] for t in tasks}
    later = dependents(needs)
    pending, running, done, starting = list(tasks), {}, {}, 0  # starting: a submit in progress (inline execution)
    try:
        while pending or running:
            for task in [t for t in pending if all(n in done for n in needs[t.output])]:
                if len(running) >= executor.parallel:
                    break
                pending.remove(task)
                failed = [n for n in needs[task.output] if done[n].status == "failed"]
                if failed:
                    done[task.output] = Outcome(task.output, "failed", 0.0, f"{task.output} not run: it needs {failed[0]}, "
                                                                            "which failed")
                    progress.done(done[task.output])
                else:
                    progress.start(task.output)
                    starting = 1
                    alone = not running and all(t.output in later[task.output] for t in pending)
                    tell(len(running) + 1)  # before the kernel starts, so its first look sees itself counted
                    running[executor.submit(prepare(task, alone) if prepare else task)] = task
                    starting = 0
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED) if running else (set(), set())
            for future in finished:
                task = running.pop(future)
                tell(len(running))
                try:
                    done[task.output] = future.result()
                except Exception as exc:  # the executor lost the task (a worker died): report it, keep the others
                    done[task.output] = Outcome(task.output, "failed", 0.0, f"{task.output} failed: {type(exc).__name__}: {exc}")
                progress.done(done[task.output])
    except KeyboardInterrupt:
        executor.cancel(list(running))
        print(f"companion: interrupted; cancelled {len(running) + starting} running and {len(pending)} waiting notebook(s); "
              "the last good outputs are left in place", file=sys.stderr, flush=True)
        raise
    return [done[t.output] for t in tasks]
