"""A toy project for the runner's tests: notebooks made in the test, a small package, profiles."""

import shutil
from pathlib import Path

import nbformat

from companion.publish.project import Project

RECORD = (
    "import json, os\n"
    "json.dump({'metrics': metrics, 'models': [], 'data': []}, open(os.environ['COMPANION_RESULTS'], 'w'))"
)

REPO = Path(__file__).resolve().parents[1]


def real_project(root: Path) -> Path:
    """A copy of the repository's notebooks and profiles under root, with the companion source linked, not copied."""
    shutil.copytree(REPO / "notebooks", root / "notebooks")
    (root / "src").mkdir()
    (root / "src" / "companion").symlink_to(REPO / "src" / "companion")
    return root


def notebook(path: Path, params: str, *cells: str) -> Path:
    """Write a notebook: a markdown title, a parameters cell, the given code cells, and one that records `metrics`."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    parameters = nbformat.v4.new_code_cell(params)
    parameters.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Toy"), parameters, *map(nbformat.v4.new_code_cell, cells),
                nbformat.v4.new_code_cell(RECORD)]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def toy_project(root: Path, profile: str = "") -> Project:
    """Two notebooks: 'alpha' (parameters x, seed; fails when x == 0) and 'beta' (parameter z); profile text as smoke.yaml."""
    (root / "src" / "toypkg").mkdir(parents=True)
    (root / "src" / "toypkg" / "__init__.py").write_text("SCALE = 2\n")
    notebook(root / "notebooks" / "alpha.ipynb", "x: int = 1\nseed: int = 0\ntag: str = 'a'",
             "from toypkg import SCALE\nassert x != 0, 'x must not be zero'",
             "metrics = {'y': x * SCALE, 'y_ci': [x * SCALE - 1, x * SCALE + 1], 'seed': seed}")
    notebook(root / "notebooks" / "beta.ipynb", "z: int = 1", "metrics = {'w': z}")
    (root / "notebooks" / "profiles").mkdir(parents=True)
    (root / "notebooks" / "profiles" / "smoke.yaml").write_text(profile or "description: toy\n")
    return Project(root, package="toypkg")
