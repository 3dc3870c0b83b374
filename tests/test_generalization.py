"""Paper B summaries (accuracy, gaps over shifted settings) and the notebooks' parameter contract."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from companion.rewards import experiments as gen
from companion.rewards.preferences import PreferenceSet

ROOT = Path(__file__).resolve().parents[1]


def synthetic_frame() -> pd.DataFrame:
    """Two seeds on an id set (both models right) and two OOD sets where EXRM is right more often."""
    frames = []
    for name, shift, dporm, exrm in [("a", "id", [1, 1, 1, 1], [1, 1, 1, 1]),
                                     ("b", "prompt", [1, 0, 1, 0], [1, 1, 1, 0]),
                                     ("c", "response", [0, 0, 1, 1], [1, 1, 1, 1])]:
        t = PreferenceSet(name, shift, "", ())
        for seed in (0, 1):
            scores = {"dporm": np.array([[v, 0.5] for v in dporm], dtype=float),
                      "exrm": np.array([[v, 0.5] for v in exrm], dtype=float)}
            frames.append(gen.rewards_frame(t, seed, scores))
    return pd.concat(frames, ignore_index=True)


def test_summary_holds_the_contract_and_the_right_numbers():
    frame = synthetic_frame()
    settings = gen.summarize(frame, n_boot=200)
    assert [r["name"] for r in settings] == ["a", "b", "c"]
    for record in settings:
        assert {"name", "shift", "dporm_acc", "exrm_acc", "dporm_ci", "exrm_ci", "seeds"} <= set(record)
        assert record["seeds"] == [0, 1]
        for model in ("dporm", "exrm"):
            low, high = record[f"{model}_ci"]
            assert low <= record[f"{model}_acc"] <= high
    b = settings[1]
    assert (b["dporm_acc"], b["exrm_acc"], b["gap"]) == pytest.approx((0.5, 0.75, 0.25))
    gaps = gen.ood_gaps(frame, settings, n_boot=200)
    assert gaps["gap_mean_ood"] == pytest.approx((0.25 + 0.5) / 2)
    assert gaps["gap_max_ood"] == pytest.approx(0.5) and gaps["gap_max_ood_setting"] == "c"
    assert gaps["gap_mean_ood_ci"][0] <= gaps["gap_mean_ood"] <= gaps["gap_mean_ood_ci"][1]
    json.dumps(settings), json.dumps(gaps)  # JSON-ready


def test_no_ood_settings_give_empty_gaps():
    frame = synthetic_frame()
    settings = [r for r in gen.summarize(frame, n_boot=50) if r["shift"] == "id"]
    assert gen.ood_gaps(frame, settings)["gap_mean_ood"] is None


def parameter_names(notebook: Path) -> set[str]:
    """Names assigned in the cell tagged 'parameters'."""
    cells = json.loads(notebook.read_text())["cells"]
    source = "".join(next(c for c in cells if "parameters" in c["metadata"].get("tags", []))["source"])
    return {target.id for node in ast.parse(source).body if isinstance(node, ast.Assign) for target in node.targets}


@pytest.mark.parametrize("profile", ["smoke", "default", "paper"])
def test_profiles_only_set_existing_parameters(profile):
    notebooks = yaml.safe_load((ROOT / "notebooks" / "profiles" / f"paper_b.{profile}.yaml").read_text())["notebooks"]
    for name, values in notebooks.items():
        path = ROOT / "notebooks" / "paper_b" / f"{name}.ipynb"
        assert path.exists(), name
        assert set(values) <= parameter_names(path), f"{profile}/{name}: {set(values) - parameter_names(path)}"


def test_notebooks_are_committed_without_outputs():
    for path in sorted((ROOT / "notebooks" / "paper_b").glob("dpo_*.ipynb")):
        notebook = json.loads(path.read_text())
        assert notebook["metadata"]["kernelspec"]["name"] == "python3"
        assert all(not c.get("outputs") for c in notebook["cells"] if c["cell_type"] == "code"), path.name
        assert notebook["cells"][0]["cell_type"] == "markdown"
        assert "results.record(" in "".join([c for c in notebook["cells"] if c["cell_type"] == "code"][-1]["source"])
