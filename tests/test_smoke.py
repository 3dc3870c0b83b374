"""Smoke run: every notebook with the smoke profile and the real embedded models, then the book builds (-W)."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from companion.publish.book import build
from companion.publish.project import Project

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.smoke


def test_every_notebook_writes_a_complete_results_file(smoke_project: Project) -> None:
    names = sorted(p.stem for p in (ROOT / "notebooks").rglob("*.ipynb"))
    for name in names:
        result = json.loads((smoke_project.results / f"{name}.json").read_text())
        assert result["notebook"] == name and result["profile"] == "smoke"
        assert result["metrics"], f"{name} recorded no metrics"
        assert {"git", "models", "data", "packages", "seconds"} <= set(result["provenance"])


def test_data_notebook_measures_the_embedded_models(smoke_project: Project) -> None:
    metrics = json.loads((smoke_project.results / "00_data_and_models.json").read_text())["metrics"]
    layers = {m["model"]: m["layers"] for m in metrics["models"]}
    assert layers == {"gemma-3-270m": 18, "smollm2-135m": 30}
    assert metrics["aligned_verses"] > 30000


def test_book_builds_without_warnings_and_shows_the_figure(smoke_project: Project) -> None:
    assert build(smoke_project.root) == 0
    html = smoke_project.root / "_build" / "html"
    assert "Reproduction status" in (html / "_generated" / "claims.html").read_text()
    assert (html / "index.html").exists()
    page = (html / "_generated" / "00_data_and_models.html").read_text()
    assert "<img" in page and "Provenance" in page
    assert "injected-parameters" not in page
    assert '<figure class="align-default" id="data-lengths">' in page and 'alt="Violin plot of tokens per verse' in page
    assert '<span class="caption-number">Fig. ' in page and "BookFigure(" not in page
    assert '<div class="dropdown tip admonition">' in page and "Run this page" in page
    assert "The pages of this build ran with profile smoke:" in (html / "intro.html").read_text()
    assert (html / ".nojekyll").exists()


def test_run_this_page_papermill_command_reproduces_the_metrics(smoke_project: Project, tmp_path: Path) -> None:
    note = nbformat.read(smoke_project.generated / "00_data_and_models.ipynb", as_version=4).cells[0].source
    command = shlex.split(next(line for line in note.splitlines() if line.startswith("papermill ")))
    command[2] = str(tmp_path / "rerun.ipynb")
    subprocess.run([sys.executable, "-m", "ipykernel", "install", "--prefix", str(tmp_path / "jupyter"), "--name", "companion"],
                   check=True, capture_output=True)
    env = {**os.environ, "JUPYTER_PATH": str(tmp_path / "jupyter" / "share" / "jupyter"),
           "COMPANION_RESULTS": str(tmp_path / "rerun.json"), "PYTHONPATH": str(smoke_project.source.parent)}
    subprocess.run([sys.executable, "-m"] + command, cwd=smoke_project.root, env=env, check=True, capture_output=True)
    recorded = json.loads((smoke_project.results / "00_data_and_models.json").read_text())["metrics"]
    assert json.loads((tmp_path / "rerun.json").read_text())["metrics"] == recorded
