"""Where notebook executions run: in this process, in a local process pool (--jobs), or as Ray tasks (--executor ray)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from companion.core.errors import UserError
from companion.core.files import staged_file
from companion.publish.project import Outcome, Project
from companion.publish.schedule import Resources
from companion.publish.sweep import Task

Execute = Callable[[Project, Task, str, Path], Outcome]  # runner.execute: project, task, profile, output folder
EXECUTORS = ("local", "ray")
UPLOAD_EXCLUDES = [".git", ".venv", "_build", "book/_generated", "**/.ipynb_checkpoints", "**/__pycache__"]


class LocalExecutor:
    """Runs tasks here: one after another in this process (jobs=1) or in a pool of jobs processes."""

    def __init__(self, execute: Execute, project: Project, profile: str, jobs: int) -> None:
        """Keep what every execution needs; start a process pool when jobs > 1."""
        self.execute, self.project, self.profile = execute, project, profile
        self.pool = ProcessPoolExecutor(max_workers=jobs) if jobs > 1 else None
        self.parallel = jobs

    def submit(self, task: Task) -> Future:
        """Execute now (jobs=1) or queue in the pool; either way a future of the Outcome."""
        if self.pool is not None:
            return self.pool.submit(self.execute, self.project, task, self.profile, self.project.generated)
        future: Future = Future()
        future.set_result(self.execute(self.project, task, self.profile, self.project.generated))
        return future

    def cancel(self, futures: list[Future]) -> None:
        """Drop queued tasks; running ones stop with the interrupt they received too."""
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Shut the pool down."""
        if self.pool is not None:
            self.pool.shutdown()


def collect(folder: Path) -> dict[str, bytes]:
    """Every file an execution left under folder, by path relative to it."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def land(files: dict[str, bytes], outcome: Outcome, generated: Path, task: Task) -> Outcome:
    """Write a remote execution's files into the project (results last), each replaced whole."""
    for relative in sorted(files, key=lambda p: (p.startswith("results/"), p)):
        with staged_file(generated / relative) as tmp:
            tmp.write_bytes(files[relative])
    if outcome.status == "ran":
        (generated / f"{task.output}.failed.ipynb").unlink(missing_ok=True)
    return outcome


def execute_elsewhere(execute: Execute, project: Project, task: Task, profile: str) -> tuple[Outcome, dict[str, bytes]]:
    """Ray task body: execute into a scratch folder on the worker and return the outcome with the files it wrote."""
    home = project.generated
    if not project.root.exists():  # another node: the project was uploaded as the task's working directory
        moved = Project(Path.cwd(), project.package)
        notebook = replace(task.notebook, path=moved.root / task.notebook.path.relative_to(project.root))
        project, task = moved, replace(task, notebook=notebook)
    with tempfile.TemporaryDirectory(prefix="companion-") as scratch:
        outcome = execute(project, task, profile, Path(scratch))
        return replace(outcome, message=outcome.message.replace(scratch, str(home))), collect(Path(scratch))


class RayExecutor:
    """Sends each task to a Ray cluster with its notebook's resources; files come back to the project folder."""

    def __init__(self, execute: Execute, project: Project, profile: str, resources: dict[str, Resources],
                 address: str | None) -> None:
        """Connect to the cluster at address (a new local one when None, never a stale one; reuse an initialised one)."""
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # every progress line, not 'repeated 2x across cluster'
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # plain lines for CI logs
        try:
            import ray
        except ImportError as exc:
            raise UserError("--executor ray needs the 'ray' package; pip install -r requirements.txt") from exc
        self.ray, self.execute, self.project, self.profile, self.resources = ray, execute, project, profile, resources
        self.started = not ray.is_initialized()
        if self.started:
            upload = {"working_dir": str(project.root), "excludes": UPLOAD_EXCLUDES,
                      "py_modules": [str(project.source)]} if address else {}
            try:
                ray.init(address=address or "local", include_dashboard=False, runtime_env=upload, log_to_driver=True)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise UserError(f"cannot reach a Ray cluster at --address {address}: {exc}; start one with "
                                "'ray start --head' or leave out --address for a local one") from exc
        self.remote = ray.remote(execute_elsewhere)
        smallest = min((r.cpus for r in resources.values()), default=1.0) or 1.0
        self.parallel = max(1, int(ray.cluster_resources().get("CPU", 1) // smallest))
        self.refs: dict[Future, Any] = {}

    def submit(self, task: Task) -> Future:
        """Start the task on the cluster; the future lands its files, then yields its Outcome."""
        needs = self.resources[task.name]
        options: dict[str, Any] = {"num_cpus": needs.cpus, "num_gpus": needs.gpus, "max_retries": 0}
        if needs.memory_gb:
            options["memory"] = int(needs.memory_gb * 2**30)
        ref = self.remote.options(**options).remote(self.execute, self.project, task, self.profile)
        landed: Future = Future()

        def finish(remote: Future) -> None:
            """Copy the returned files into the project when the remote task ends."""
            try:
                outcome, files = remote.result()
                landed.set_result(land(files, outcome, self.project.generated, task))
            except BaseException as exc:  # a lost or cancelled task still settles its future
                landed.set_exception(exc)

        ref.future().add_done_callback(finish)
        self.refs[landed] = ref
        return landed

    def cancel(self, futures: list[Future]) -> None:
        """Cancel the outstanding tasks on the cluster (nothing they did reaches the project folder)."""
        for future in futures:
            self.ray.cancel(self.refs[future], force=True)

    def close(self) -> None:
        """Disconnect when this executor started the connection."""
        if self.started:
            self.ray.shutdown()


def check(name: str, jobs: int, address: str | None) -> None:
    """Refuse executor options that do not go together, before anything runs."""
    if name not in EXECUTORS:
        raise UserError(f"--executor '{name}' is unknown; choose one of: {', '.join(EXECUTORS)}")
    if address and name != "ray":
        raise UserError(f"--address {address} needs --executor ray")
    if jobs > 1 and name == "ray":
        raise UserError(f"--jobs {jobs} is for the local executor; Ray runs as many notebooks at once as the cluster's "
                        "resources allow (see resources: in the profile)")


def executor(name: str, execute: Execute, project: Project, profile: str, jobs: int,
             resources: dict[str, Resources], address: str | None) -> LocalExecutor | RayExecutor:
    """The executor a run asked for (options already checked)."""
    if name == "ray":
        return RayExecutor(execute, project, profile, resources, address)
    return LocalExecutor(execute, project, profile, jobs)
