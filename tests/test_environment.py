"""environment.yml mirrors requirements.txt; committed notebooks are clean and parameterized."""

import re
import subprocess
import sys
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


def test_conda_environment_is_complete_with_binders_post_build() -> None:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip_section, "the companion itself is installed by environment.yml"
    post_build = (ROOT / "postBuild").read_text()
    assert (ROOT / "postBuild").stat().st_mode & 0o111, "Binder runs postBuild only when it is executable"
    assert "pip install --no-deps -r requirements-nodeps.txt" in post_build
    assert "--no-deps -r requirements-nodeps.txt" in (ROOT / "Makefile").read_text()
    kernel = re.search(r"ipykernel install .*--name companion .*", post_build).group(0)
    assert kernel.replace("--sys-prefix", "--prefix $(KERNEL_PREFIX)") in (ROOT / "Makefile").read_text()
    assert "./postBuild" in (ROOT / "README.md").read_text()


def test_make_kernel_installs_the_named_kernel_for_this_interpreter(tmp_path: Path) -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    subprocess.run(["make", "-s", "-o", "setup", "kernel", f"PY={sys.executable}", f"KERNEL_PREFIX={tmp_path}"],
                   cwd=ROOT, check=True, capture_output=True)
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "share" / "jupyter" / "kernels")]).get_all_specs()
    spec = specs["companion"]["spec"]
    assert spec["argv"][0] == sys.executable and spec["display_name"] == "Python (companion)"
    assert "lab: kernel" in (ROOT / "Makefile").read_text()


def test_papermill_reads_the_parameter_types() -> None:
    from papermill.inspection import inspect_notebook

    inferred = inspect_notebook(str(ROOT / "notebooks" / "00_data_and_models.ipynb"))
    assert {name: p["inferred_type_name"] for name, p in inferred.items()} == {
        "models": "list[str]", "languages": "list[str]", "n_sample": "int", "seed": "int"}


def test_a_cell_that_shows_a_figure_shows_nothing_else() -> None:
    """myst-nb gives every output of a figure cell the figure's name: a second output would repeat the label."""
    for path in sorted((ROOT / "notebooks").rglob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code" and "show(" in cell.source:
                others = ("display(", "print(")
                assert cell.source.count("show(") == 1 and not any(o in cell.source for o in others), (path.name, cell.source)
