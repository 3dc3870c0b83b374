"""Execute notebooks through papermill with a profile's parameters, skipping those already up to date."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from companion.core import precision, threads
from companion.core.errors import UserError
from companion.publish import allocator, executors, preflight, profiles, schedule, sweep
from companion.publish.hashing import input_hash, is_up_to_date, package_versions
from companion.publish.progress import CellProgress, RunProgress, engine_name, last_seconds
from companion.publish.project import Outcome, Project
from companion.publish.results import RESULTS_ENV, to_jsonable, write_json_atomic
from companion.publish.sweep import Task


def git_commit(root: Path) -> str:
    """The current commit (with '-dirty' when the tree has changes), or 'unknown' outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def kernel_dir() -> Path:
    """A Jupyter data folder whose 'python3' kernel is this interpreter, so notebooks run where companion runs."""
    folder = Path(tempfile.gettempdir()) / f"companion-kernel-{hashlib.sha256(sys.executable.encode()).hexdigest()[:10]}"
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                     "--IPKernelApp.log_level=ERROR"],  # not the plain-TCP notice on every run
            "display_name": "Python 3 (companion)", "language": "python"}
    target = folder / "kernels" / "python3" / "kernel.json"
    if not target.exists() or json.loads(target.read_text()) != spec:
        write_json_atomic(target, spec)
    return folder


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables (inherited by the notebook's kernel) and restore them afterwards."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _error_message(name: str, exc: Exception, failed_copy: Path) -> str:
    """One line naming the notebook, the failing cell and its error (a multi-line message joined into one line)."""
    cell = getattr(exc, "exec_count", None)
    ename, evalue = getattr(exc, "ename", type(exc).__name__), " ".join(str(getattr(exc, "evalue", exc)).split())
    where = f"cell [{cell}]" if cell else "a cell"
    return f"{name} failed in {where}: {ename}: {evalue} (partial run kept at {failed_copy}; last good output left in place)"


KERNEL_DOWN = ("Kernel didn't respond", "Kernel died before replying")  # how nbclient says a kernel never came up


def retrying_kernel_start(run: Callable[[], object], name: str, tries: int = 2) -> None:
    """run(), once more when its kernel never came up: jupyter picks a kernel's ports by binding free ones and letting
    them go, so two notebooks starting at once (--jobs) can draw the same port, and the kernel that loses never replies."""
    for attempt in range(1, tries + 1):
        try:
            run()
            return
        except RuntimeError as exc:
            if attempt == tries or not str(exc).startswith(KERNEL_DOWN):
                raise
            print(f"companion: {name}: its kernel did not start ({exc}); starting it again", file=sys.stderr, flush=True)


def execute(project: Project, task: Task, profile: str, generated: Path) -> Outcome:
    """Run one task into generated; on success atomically replace its output and results, on failure keep both."""
    import nbformat  # imported here, not at the top: a run with nothing to execute stays fast
    import papermill

    from companion.publish.presentation import present  # loads matplotlib and seaborn

    target, results = generated / f"{task.output}.ipynb", generated / "results" / f"{task.output}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    results.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    staging = target.with_name(f".{target.name}.running.ipynb")
    staged_results = results.with_name(f".{results.name}.running.json")
    failed_copy = generated / f"{task.output}.failed.ipynb"
    staged_results.unlink(missing_ok=True)
    kernel_env = {RESULTS_ENV: str(staged_results), "COMPANION_PROFILE": profile,
                  "JUPYTER_PATH": os.pathsep.join(filter(None, [str(kernel_dir()), os.environ.get("JUPYTER_PATH")])),
                  "PYTHONPATH": os.pathsep.join(filter(None, [str(project.source.parent), os.environ.get("PYTHONPATH")])),
                  **allocator.kernel_settings()}
    code_cells = sum(c.cell_type == "code" for c in nbformat.read(task.notebook.path, as_version=4).cells)
    try:
        with environment(kernel_env):
            retrying_kernel_start(lambda: papermill.execute_notebook(
                str(task.notebook.path), str(staging), parameters=to_jsonable(task.params), kernel_name="python3",
                progress_bar=False, cwd=str(project.root), engine_name=engine_name(),
                progress=CellProgress(task.output, code_cells + bool(task.params), task.expected)), task.output)
        if not staged_results.exists():
            raise UserError(f"{task.name} did not call companion.results.record(...); add it as the last cell")
    except Exception as exc:  # any failure in the notebook: keep the partial copy, report the failing cell
        if staging.exists():
            os.replace(staging, failed_copy)
        staged_results.unlink(missing_ok=True)
        return Outcome(task.output, "failed", time.perf_counter() - started, _error_message(task.output, exc, failed_copy))
    seconds = time.perf_counter() - started
    recorded = json.loads(staged_results.read_text(encoding="utf-8"))
    provenance = {"git": git_commit(project.root), "models": recorded.get("models", []),
                  "data": recorded.get("data", []), "packages": package_versions(), "seconds": round(seconds, 1),
                  "input_hash": task.digest}
    executed = nbformat.read(staging, as_version=4)
    present(executed, profile, task.params, provenance)
    nbformat.write(executed, staging)
    payload = {"notebook": task.name, "profile": profile, "parameters": task.params,
               "metrics": recorded.get("metrics", {}), "provenance": provenance}
    write_json_atomic(staged_results, {**payload, "point": task.point} if task.point else payload)
    os.replace(staging, target)
    os.replace(staged_results, results)
    failed_copy.unlink(missing_ok=True)
    return Outcome(task.output, "ran", seconds)


def shares_default(task: Task, where_from: Callable[[str, str], str]) -> bool:
    """Whether the task's `threads` is the notebook's default, which the runner may share out (see share_threads)."""
    return "threads" in task.params and where_from(task.name, "threads") == "the notebook's default"


@contextmanager
def following_shares(enabled: bool, cap: int) -> Iterator[Callable[[int], None] | None]:
    """While enabled, a file of how many notebooks run (and cap, the most threads one may take), named to their kernels
    by $COMPANION_CORE_SHARE, so each follows its share of the cores as others start and end (companion.core.threads);
    yields what updates it."""
    if not enabled:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="companion-cores-") as folder:
        path = Path(folder) / "running"
        threads.write_running(path, 0, cap)
        with environment({threads.SHARE_FILE: str(path)}):
            yield lambda running: threads.write_running(path, running, cap)


def share_threads(task: Task, jobs: int, where_from: Callable[[str, str], str]) -> Task:
    """With jobs notebooks at once, a notebook's default `threads` becomes its share of the cores (at least 1).

    Two notebooks each asking torch for every core oversubscribe them, and OpenMP's busy-waiting then runs many
    times slower than one notebook at a time; a `threads` from --set or the profile is kept as given. A notebook that
    starts alone with only its dependents left (see schedule.run_tasks) is given jobs=1: the whole machine.
    """
    if not shares_default(task, where_from):
        return task
    return replace(task, params={**task.params, "threads": min(task.params["threads"], threads.share(jobs))})


def resolve_auto(tasks: list[Task]) -> tuple[list[Task], str | None]:
    """Tasks with each "auto" dtype or precision replaced by its choice (precision.auto_choice: a task with a device_map
    runs on GPUs), and the CPU's choice when some task left there had "auto" (None otherwise), for the note.

    Resolved before the up-to-date hashes, so a results file and the cache record the precision actually used.
    """
    def resolved(task: Task) -> Task:
        """The task with its "auto" values chosen."""
        gpu = bool(task.params.get("device_map"))
        return replace(task, params={name: precision.resolve(value, gpu) if name in precision.PARAMETERS else value
                                     for name, value in task.params.items()})

    on_cpu = any(not t.params.get("device_map") and t.params.get(name) == precision.AUTO
                 for t in tasks for name in precision.PARAMETERS)
    return [resolved(t) for t in tasks], precision.auto_choice() if on_cpu else None


def run(project: Project, profile: str = "default", only: str | None = None, sets: list[str] | None = None,
        force: bool = False, jobs: int = 1, sweeps: list[str] | None = None, executor: str = "local",
        address: str | None = None, dry_run: bool = False) -> list[Outcome]:
    """Validate everything first, then execute the selected notebooks (and grid points) that are not up to date.

    dry_run: check the parameters and report what would run, executing nothing.
    """
    executors.check(executor, jobs, address)
    notebooks = profiles.discover(project.notebooks)
    if not notebooks:
        raise UserError(f"no notebooks found under {project.notebooks}")
    selected = profiles.select(notebooks, only)
    settings = profiles.load_profile(project.profiles, profile)
    names = [nb.name for nb in notebooks]
    after, needs = schedule.prerequisites(settings, names), schedule.resources(settings, names)
    hints = schedule.minutes(settings, names)  # the profile's figures, for notebooks with no recorded run yet
    set_values = profiles.parse_sets(sets or [])
    grid = sweep.parse_sweeps(sweeps or [])
    for name in precision.PARAMETERS:  # a grid point's name would mean another precision on another machine
        if precision.AUTO in grid.get(name, []):
            raise UserError(f"--sweep {name}: 'auto' is bfloat16 or float32 depending on the machine; sweep the "
                            f"precisions by name, e.g. --sweep {name}=[float32,bfloat16]")
    tasks, auto = resolve_auto(sweep.plan(notebooks, selected, settings, set_values, grid, profile))
    outcomes, todo = [], []
    for task in tasks:
        task = replace(task, digest=input_hash(project, task.notebook, task.params))
        if not force and is_up_to_date(project, task.output, task.digest):
            outcomes.append(Outcome(task.output, "skipped", 0.0, "up to date"))
        else:
            todo.append(replace(task, expected=last_seconds(project.results, task.output, task.name)))
    shared = executor == "local" and jobs > 1

    def where_from(task: Task) -> Callable[[str, str], str]:
        """Where each of the task's parameters came from (--set, its grid point, a variant, the profile, a default)."""
        return profiles.origin(settings, set_values, profile, task.point)

    def prepare(task: Task, alone: bool) -> Task:
        """The task as submitted: its share of the cores, or all of them when it runs alone."""
        return share_threads(task, 1 if alone else jobs, where_from(task)) if shared else task

    for task in todo:  # every grid point's own parameters, before anything is written
        preflight.check([task.notebook], {task.notebook.name: prepare(task, False).params}, where_from(task))
    auto_note = precision.auto_note(auto) if auto and todo else None
    if dry_run:
        if auto_note:
            print(auto_note, file=sys.stderr, flush=True)
        return sorted(outcomes + [Outcome(task.output, "would run", 0.0) for task in todo], key=lambda o: o.name)
    todo = schedule.longest_chain_first(todo, after, {t.output: t.expected if t.expected is not None else
                                                      60 * hints.get(t.name, 0.0) for t in todo})
    if todo:
        where = executors.executor(executor, execute, project, profile, jobs, needs, address)  # may refuse: before any note
        asked = any("bfloat16" in (t.params.get("dtype"), t.params.get("precision")) for t in todo)
        for note in filter(None, [auto_note, precision.slow_bfloat16_note(asked)]):
            print(note, file=sys.stderr, flush=True)
        report = RunProgress({t.output: t.expected for t in todo}, len(outcomes), where.parallel)
        try:
            # notebooks follow their share unless a user set some notebook's threads (those without threads don't care)
            follows = shared and all(shares_default(t, where_from(t)) for t in todo if "threads" in t.params)
            with following_shares(follows, max((t.params.get("threads", 1) for t in todo), default=1)) as on_running:
                outcomes += schedule.run_tasks(todo, after, where, report, prepare, on_running)
        finally:
            where.close()
    return sorted(outcomes, key=lambda o: o.name)


def timing_table(outcomes: list[Outcome]) -> str:
    """A markdown table of each notebook's status and run time."""
    lines = ["| notebook | status | seconds |", "|---|---|---:|"]
    lines += [f"| {o.name} | {o.status} | {o.seconds:.1f} |" for o in outcomes]
    lines.append(f"| **total** | {sum(o.status == 'ran' for o in outcomes)} ran | {sum(o.seconds for o in outcomes):.1f} |")
    return "\n".join(lines)
