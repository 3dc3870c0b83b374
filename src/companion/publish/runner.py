"""Execute notebooks through papermill with a profile's parameters, skipping those already up to date."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from companion.core.errors import UserError
from companion.publish import preflight, profiles
from companion.publish.hashing import input_hash, is_up_to_date, package_versions
from companion.publish.project import Outcome, Project
from companion.publish.results import RESULTS_ENV, to_jsonable, write_json_atomic


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



def execute(project: Project, notebook: profiles.Notebook, params: dict[str, Any], profile: str, digest: str) -> Outcome:
    """Run one notebook; on success atomically replace its output and results, on failure keep both."""
    import nbformat  # imported here, not at the top: a run with nothing to execute stays fast
    import papermill

    from companion.core.style import FIGURES_ENV  # loads matplotlib and seaborn
    from companion.publish.presentation import present

    project.results.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    staging = project.generated / f".{notebook.name}.running.ipynb"
    staged_results = project.results / f".{notebook.name}.running.json"
    failed_copy = project.generated / f"{notebook.name}.failed.ipynb"
    staged_results.unlink(missing_ok=True)
    staged_figures = project.generated / "figures" / f".{notebook.name}.running"
    shutil.rmtree(staged_figures, ignore_errors=True)
    kernel_env = {RESULTS_ENV: str(staged_results), "COMPANION_PROFILE": profile, FIGURES_ENV: str(staged_figures),
                  "JUPYTER_PATH": os.pathsep.join(filter(None, [str(kernel_dir()), os.environ.get("JUPYTER_PATH")])),
                  "PYTHONPATH": os.pathsep.join(filter(None, [str(project.source.parent), os.environ.get("PYTHONPATH")]))}
    try:
        with environment(kernel_env):
            papermill.execute_notebook(str(notebook.path), str(staging), parameters=to_jsonable(params),
                                       kernel_name="python3", progress_bar=False, cwd=str(project.root))
        if not staged_results.exists():
            raise UserError(f"{notebook.name} did not call companion.results.record(...); add it as the last cell")
    except Exception as exc:  # any failure in the notebook: keep the partial copy, report the failing cell
        if staging.exists():
            os.replace(staging, failed_copy)
        staged_results.unlink(missing_ok=True)
        shutil.rmtree(staged_figures, ignore_errors=True)
        return Outcome(notebook.name, "failed", time.perf_counter() - started, _error_message(notebook.name, exc, failed_copy))
    seconds = time.perf_counter() - started
    recorded = json.loads(staged_results.read_text(encoding="utf-8"))
    provenance = {"git": git_commit(project.root), "models": recorded.get("models", []),
                  "data": recorded.get("data", []), "packages": package_versions(), "seconds": round(seconds, 1),
                  "input_hash": digest}
    executed = nbformat.read(staging, as_version=4)
    present(executed, profile, params, provenance)
    nbformat.write(executed, staging)
    payload = {"notebook": notebook.name, "profile": profile, "parameters": params,
               "metrics": recorded.get("metrics", {}), "provenance": provenance}
    write_json_atomic(staged_results, payload)
    os.replace(staging, project.generated / f"{notebook.name}.ipynb")
    os.replace(staged_results, project.results / f"{notebook.name}.json")
    for figure in sorted(staged_figures.glob("*.png")):
        os.replace(figure, staged_figures.parent / figure.name)
    shutil.rmtree(staged_figures, ignore_errors=True)
    failed_copy.unlink(missing_ok=True)
    return Outcome(notebook.name, "ran", seconds)



def _execute_job(job: tuple[Project, profiles.Notebook, dict[str, Any], str, str]) -> Outcome:
    """Process-pool entry point for execute()."""
    return execute(*job)



def run(project: Project, profile: str = "default", only: str | None = None, sets: list[str] | None = None,
        force: bool = False, jobs: int = 1, dry_run: bool = False) -> list[Outcome]:
    """Validate everything first, then execute the selected notebooks that are not up to date (dry_run: only say which)."""
    notebooks = profiles.discover(project.notebooks)
    if not notebooks:
        raise UserError(f"no notebooks found under {project.notebooks}")
    selected = profiles.select(notebooks, only)
    profile_values, set_values = profiles.load_profile(project.profiles, profile), profiles.parse_sets(sets or [])
    resolved = profiles.resolve(notebooks, selected, profile_values, set_values, profile)
    outcomes, todo = [], []
    for nb in selected:
        digest = input_hash(project, nb, resolved[nb.name])
        if not force and is_up_to_date(project, nb.name, digest):
            outcomes.append(Outcome(nb.name, "skipped", 0.0, "up to date"))
        else:
            todo.append((project, nb, resolved[nb.name], profile, digest))
    preflight.check([job[1] for job in todo], resolved, profiles.origin(profile_values, set_values, profile))
    if dry_run:
        return sorted(outcomes + [Outcome(job[1].name, "would run", 0.0) for job in todo], key=lambda o: o.name)
    if jobs > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            outcomes += list(pool.map(_execute_job, todo))
    else:
        for job in todo:
            print(f"running {job[1].name} (profile {profile}) …", flush=True)
            outcomes.append(_execute_job(job))
    return sorted(outcomes, key=lambda o: o.name)



def timing_table(outcomes: list[Outcome]) -> str:
    """A markdown table of each notebook's status and run time."""
    lines = ["| notebook | status | seconds |", "|---|---|---:|"]
    lines += [f"| {o.name} | {o.status} | {o.seconds:.1f} |" for o in outcomes]
    lines.append(f"| **total** | {sum(o.status == 'ran' for o in outcomes)} ran | {sum(o.seconds for o in outcomes):.1f} |")
    return "\n".join(lines)
