"""environment.yml mirrors requirements.txt; committed notebooks are clean and parameterized."""

from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines: list[str]) -> dict[str, str]:
    """name -> pinned version from requirement lines."""
    pins = {}
    for line in lines:
        line = line.strip()
        if line and not line.startswith(("#", "-")):
            name, _, ver = line.partition("==")
            pins[name.lower()] = ver
    return pins


def test_environment_yml_matches_requirements() -> None:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    from_env = _pins(pip_section)
    from_reqs = _pins((ROOT / "requirements.txt").read_text().splitlines())
    assert from_env == from_reqs
    assert all(from_reqs.values()), "every requirement is pinned with =="


NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_committed_clean_with_parameters_cell(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert not any(c.outputs or c.execution_count for c in code), "outputs must be stripped"
    assert "parameters" in code[0].metadata.get("tags", []), "first code cell must be tagged 'parameters'"
    assert notebook.cells[0].cell_type == "markdown", "a page states what it computes before computing it"
