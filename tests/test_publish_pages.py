"""How executed pages are presented: the 'Run this page' note, figure options, buttons, results substitutions."""

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from companion.core.style import FIGURE_KEY
from companion.publish.book import build
from companion.publish.page_buttons import committed_notebook, retarget
from companion.publish.presentation import present
from companion.publish.substitutions import FigureRef, figure_names, run_summary

ROOT = Path(__file__).resolve().parents[1]
PARAMS = {"languages": ["en", "de"], "n_sample": 20, "lr": 1e-05, "label": "2024", "flag": True, "extra": None}


def _executed(tmp_path: Path) -> nbformat.NotebookNode:
    """A notebook as papermill leaves it: a title cell, a parameters cell and papermill's run metadata."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell("# A page\n\nWhat it computes."),
                      nbformat.v4.new_code_cell("n_sample: int = 1", metadata={"tags": ["parameters"]})]
    notebook.metadata["papermill"] = {"input_path": str(tmp_path / "notebooks" / "part" / "a_page.ipynb"),
                                      "output_path": str(tmp_path / "book" / "_generated" / ".a_page.running.ipynb"),
                                      "parameters": PARAMS}
    return notebook


def _provenance() -> dict:
    """A minimal provenance record."""
    return {"git": "abc", "models": [], "data": [], "packages": {}, "seconds": 1.0}


def test_run_note_opens_the_page_collapsed_with_both_commands(tmp_path: Path) -> None:
    notebook = _executed(tmp_path)
    present(notebook, "smoke", PARAMS, _provenance())
    first = notebook.cells[0].source
    assert first.startswith("# A page\n\n:::{admonition} Run this page\n:class: dropdown")
    assert "companion run --only a_page --profile smoke" in first
    assert first.rstrip().endswith("What it computes.")
    papermill = next(line for line in first.splitlines() if line.startswith("papermill "))
    assert shlex.split(papermill)[1:5] == ["notebooks/part/a_page.ipynb", "a_page.ipynb", "-k", "companion"]


def test_papermill_command_sets_exactly_the_parameters_that_ran(tmp_path: Path) -> None:
    notebook = _executed(tmp_path)
    present(notebook, "smoke", PARAMS, _provenance())
    command = shlex.split(next(line for line in notebook.cells[0].source.splitlines() if line.startswith("papermill ")))
    source = tmp_path / "in.ipynb"
    declared = "\n".join(f"{key} = None" for key in PARAMS)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(declared, metadata={"tags": ["parameters"]})]),
                   source)
    args = [sys.executable, "-m", "papermill", str(source), str(tmp_path / "out.ipynb"), "--prepare-only",
            "-k", "python3", "--language", "python"] + command[5:]
    subprocess.run(args, check=True, capture_output=True)
    assert nbformat.read(tmp_path / "out.ipynb", as_version=4).metadata.papermill.parameters == PARAMS


def test_figure_cells_get_name_caption_and_alt(tmp_path: Path) -> None:
    notebook = _executed(tmp_path)
    meta = {"name": "fig-x", "caption": "What it shows.", "alt": "A line rising from 1 to 2."}
    notebook.cells.append(nbformat.v4.new_code_cell("show(...)", outputs=[nbformat.v4.new_output(
        "display_data", data={"image/png": "iVBORw0KGgo="}, metadata={FIGURE_KEY: meta})]))
    present(notebook, "smoke", PARAMS, _provenance())
    figure_cell = next(c for c in notebook.cells if c.cell_type == "code" and c.outputs)
    assert figure_cell.metadata["mystnb"] == {"figure": {"name": "fig-x", "caption": "What it shows."},
                                              "image": {"alt": "A line rising from 1 to 2."}}
    generated = tmp_path / "book" / "_generated"
    generated.mkdir(parents=True)
    nbformat.write(notebook, generated / "a_page.ipynb")
    assert figure_names(generated) == {"fig-x"}


def test_figure_reference_falls_back_to_the_page_until_the_figure_exists() -> None:
    ref = FigureRef(frozenset({"retrieval-layers"}))
    assert ref("retrieval-layers", "_generated/steering_4_retrieval") == "{numref}`retrieval-layers`"
    assert ref("dpo-gap", "_generated/dpo_3_generalization") == "{doc}`/_generated/dpo_3_generalization`"


def test_run_summary_adds_up_the_recorded_run_times() -> None:
    runs = {"a": {"profile": "smoke", "provenance": {"seconds": 90.0}},
            "b": {"profile": "smoke", "provenance": {"seconds": 150.0}}, "bench": [{"name": "x"}]}
    assert run_summary(runs) == {"profile": "smoke", "notebooks": 2, "minutes": 4}


def test_buttons_of_an_executed_page_point_at_the_committed_notebook() -> None:
    repo = "https://github.com/o/r"
    buttons = [{"type": "group", "buttons": [
        {"url": "../_sources/_generated/steering_1_experts.ipynb", "label": "download-notebook-button"},
        {"url": "https://mybinder.org/v2/gh/o/r/main?urlpath=lab/tree/book/_generated/steering_1_experts.ipynb"},
        {"url": "https://hub.example/hub/user-redirect/git-pull?urlpath=lab%2Ftree%2Fr%2Fbook%2F_generated%2Fsteering_1_experts.ipynb"}]},
        {"url": repo, "label": "repository-button"}]
    committed = committed_notebook(ROOT, "steering_1_experts")
    assert committed == "notebooks/paper_a/steering_1_experts.ipynb" and (ROOT / committed).exists()
    executed = "book/_generated/steering_1_experts.ipynb"
    retarget(buttons, [(executed, committed), (executed.replace("/", "%2F"), committed.replace("/", "%2F"))],
             "_sources/_generated/steering_1_experts.ipynb", f"{repo}/blob/main/{committed}")
    urls = [b["url"] for b in buttons[0]["buttons"]] + [buttons[1]["url"]]
    assert urls == [f"{repo}/blob/main/{committed}",
                    f"https://mybinder.org/v2/gh/o/r/main?urlpath=lab/tree/{committed}",
                    "https://hub.example/hub/user-redirect/git-pull?urlpath=lab%2Ftree%2Fr%2Fnotebooks%2Fpaper_a%2Fsteering_1_experts.ipynb",
                    repo]


@pytest.fixture(scope="module")
def tiny_book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-page book with the project's configuration whose prose quotes a results value."""
    root = tmp_path_factory.mktemp("tiny_book")
    shutil.copy(ROOT / "_config.yml", root / "_config.yml")
    (root / "book" / "_generated" / "results").mkdir(parents=True)
    shutil.copy(ROOT / "book" / "references.bib", root / "book" / "references.bib")
    (root / "book" / "_toc.yml").write_text(yaml.safe_dump({"format": "jb-book", "root": "intro"}))
    (root / "book" / "intro.md").write_text(
        "# Tiny\n\nRetrieval among {{ results['steering_3_embedding_space'].metrics.n_eval }} verses, "
        "{{ '%.2f' | format(results['steering_3_embedding_space'].metrics.top1) }} top-1, profile {{ run.profile }}.\n")
    return root


def _build_with(root: Path, n_eval: int, top1: float) -> str:
    """Write a results file, build the book, return the landing page's HTML."""
    payload = {"notebook": "steering_3_embedding_space", "profile": "smoke", "parameters": {},
               "metrics": {"n_eval": n_eval, "top1": top1}, "provenance": {"seconds": 60.0}}
    (root / "book" / "_generated" / "results" / "steering_3_embedding_space.json").write_text(json.dumps(payload))
    assert build(root) == 0
    return (root / "_build" / "html" / "intro.html").read_text()


def test_prose_numbers_follow_the_results_file(tiny_book: Path) -> None:
    assert "Retrieval among 200 verses, 0.31 top-1, profile smoke." in _build_with(tiny_book, 200, 0.3125)
    assert "Retrieval among 500 verses, 0.47 top-1, profile smoke." in _build_with(tiny_book, 500, 0.4701)
    assert (tiny_book / "_build" / "html" / ".nojekyll").exists()


def test_a_number_no_results_file_has_fails_the_build(tiny_book: Path) -> None:
    (tiny_book / "book" / "_generated" / "results" / "steering_3_embedding_space.json").unlink()
    assert build(tiny_book) != 0


def test_the_api_page_documents_every_module() -> None:
    """Each module of the package has its automodule entry on the API page (a new module is not left out)."""
    modules = {".".join(path.relative_to(ROOT / "src").with_suffix("").parts)
               for path in (ROOT / "src" / "companion").rglob("*.py") if path.name != "__init__.py"}
    listed = {line.split("::")[1].strip() for line in (ROOT / "book" / "api.md").read_text().splitlines()
              if line.startswith(".. automodule::")}
    assert modules - listed == set()
    assert listed - modules == set()


def test_provenance_names_data_or_lists_its_settings_not_a_raw_dict(tmp_path: Path) -> None:
    notebook = _executed(tmp_path)
    data = [{"name": "IMDB (embedded)"}, {"corpus": "bible", "parallel_path": None, "languages": ["en", "de"], "seed": 0}]
    present(notebook, "smoke", PARAMS, {**_provenance(), "data": data})
    note = notebook.cells[-1].source
    assert "- **Data**: IMDB (embedded); corpus bible, languages en, de, seed 0\n" in note
    assert "parallel_path" not in note and "None" not in note and "{'" not in note
