"""A sweep of the smoke profile through a real local Ray cluster: per-point results, the up-to-date skip, a failing point."""

import json
import os
from pathlib import Path

import pytest
from toy_project import notebook, real_project

os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # read when ray is imported: keep every progress line
import ray  # noqa: E402

from companion.publish.book import write_generated_pages  # noqa: E402
from companion.publish.project import Project  # noqa: E402
from companion.publish.runner import run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster():
    """A two-CPU Ray cluster started for these tests and stopped after them."""
    ray.init(address="local", num_cpus=2, include_dashboard=False)  # never a stale cluster left by `ray start`
    yield
    ray.shutdown()


def test_smoke_sweep_through_ray(cluster, tmp_path: Path) -> None:
    real_project(tmp_path)
    # Beside the cheapest real notebook, one whose seed=1 point fails, so a failure and successes share a run.
    notebook(tmp_path / "notebooks" / "00_fails_on_seed_1.ipynb", "seed: int = 0",
             "assert seed != 1, 'seed 1 is the failing point'", "metrics = {'seed': seed}")
    project = Project(tmp_path)
    first = {o.name: o for o in run(project, "smoke", only="00", sweeps=["seed=[0,1]"], executor="ray")}
    assert {name: o.status for name, o in first.items()} == {
        "00_data_and_models/seed=0": "ran", "00_data_and_models/seed=1": "ran",
        "00_fails_on_seed_1/seed=0": "ran", "00_fails_on_seed_1/seed=1": "failed"}
    failure = first["00_fails_on_seed_1/seed=1"].message
    assert "AssertionError: seed 1 is the failing point" in failure
    assert str(project.generated / "00_fails_on_seed_1" / "seed=1.failed.ipynb") in failure
    assert (project.generated / "00_fails_on_seed_1" / "seed=1.failed.ipynb").exists(), "the partial run came back"
    for seed in (0, 1):
        result = json.loads((project.results / "00_data_and_models" / f"seed={seed}.json").read_text())
        assert result["point"] == {"seed": seed} and result["parameters"]["seed"] == seed
        assert result["parameters"]["n_sample"] == 100, "the smoke profile's values reach every point"
        assert result["metrics"]["aligned_verses"] > 0
        assert (project.generated / "00_data_and_models" / f"seed={seed}.ipynb").exists()
    assert not (project.results / "00_fails_on_seed_1" / "seed=1.json").exists()

    second = {o.name: o.status for o in run(project, "smoke", only="00", sweeps=["seed=[0,1]"], executor="ray")}
    assert second == {"00_data_and_models/seed=0": "skipped", "00_data_and_models/seed=1": "skipped",
                      "00_fails_on_seed_1/seed=0": "skipped", "00_fails_on_seed_1/seed=1": "failed"}

    write_generated_pages(project.generated)
    page = (project.generated / "sweeps.md").read_text()
    assert "## 00_data_and_models" in page and "`seed=0`" in page and "`seed=1`" in page
