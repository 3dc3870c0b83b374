"""Smoke run: every notebook with the smoke profile and the real embedded models, then the book builds (-W)."""

import json
from pathlib import Path

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
