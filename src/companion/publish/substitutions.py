"""Numbers in the prose come from the results: MyST substitutions filled from book/_generated/results at build time.

A prose page (a Markdown file under book/) writes `{{ results["NAME"].metrics.KEY }}` (any Jinja expression, e.g.
`{{ "%.2f" | format(results["NAME"].metrics.KEY) }}`), `{{ run.minutes }}` for the notebooks' total run time, or
`{{ figure("NAME", "PAGE") }}` for a cross-reference to a named book figure (a link to PAGE until that figure exists).
A key no results file has fails the build (-W), so prose and results cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from sphinx.application import Sphinx
from sphinx.config import Config

from companion.core.errors import UserError


@dataclass(frozen=True)
class FigureRef:
    """Callable from a substitution: a {numref} to a named figure that exists, else a link to the page that will show it."""

    names: frozenset[str]

    def __call__(self, name: str, page: str) -> str:
        """MyST text referring to figure `name`, falling back to the page `page` (a docname)."""
        return f"{{numref}}`{name}`" if name in self.names else f"{{doc}}`/{page}`"


def load_results(results_dir: Path) -> dict[str, Any]:
    """Every results file by notebook name (bench.json included); an unreadable file is a user error."""
    found = {}
    for path in sorted(results_dir.glob("*.json")):
        try:
            found[path.stem] = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"results file {path} is not valid JSON ({exc}); re-run 'companion run --only {path.stem}'") from exc
    return found


def figure_names(generated: Path) -> frozenset[str]:
    """Names of the book figures the executed notebooks show (their cells' myst-nb figure options)."""
    names = set()
    for path in generated.glob("*.ipynb"):
        if path.name.startswith(".") or path.name.endswith(".failed.ipynb"):
            continue
        for cell in nbformat.read(path, as_version=4).cells:
            name = cell.get("metadata", {}).get("mystnb", {}).get("figure", {}).get("name")
            if name:
                names.add(name)
    return frozenset(names)


def run_summary(results: dict[str, Any]) -> dict[str, Any]:
    """What the executed notebooks add up to: profile(s), number of notebooks, total minutes of execution."""
    runs = [r for r in results.values() if isinstance(r, dict) and "provenance" in r]
    seconds = sum(r["provenance"].get("seconds", 0.0) for r in runs)
    return {"profile": ", ".join(sorted({r["profile"] for r in runs})) or "none", "notebooks": len(runs),
            "minutes": round(seconds / 60)}


def substitutions(book: Path) -> dict[str, Any]:
    """The substitutions a page can use: results, run and figure (see the module docstring)."""
    generated = book / "_generated"
    results = load_results(generated / "results")
    return {"results": results, "run": run_summary(results), "figure": FigureRef(figure_names(generated))}


def _add_substitutions(app: Sphinx, config: Config) -> None:
    """Merge the results' substitutions into the book's own myst_substitutions."""
    config.myst_substitutions = {**config.myst_substitutions, **substitutions(Path(app.srcdir))}


def setup(app: Sphinx) -> dict[str, Any]:
    """Fill the substitutions once the configuration is read, before any page is parsed."""
    app.connect("config-inited", _add_substitutions)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
