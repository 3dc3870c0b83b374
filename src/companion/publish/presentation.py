"""How an executed notebook is shown in the book: parameters, figures with captions and alt text, provenance."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import nbformat
import yaml

from companion.core.precision import PARAMETERS
from companion.core.style import FIGURE_KEY
from companion.publish.results import to_jsonable


def _format_value(value: Any) -> str:
    """A parameter value in compact form for the reader."""
    text = json.dumps(to_jsonable(value), ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "…"



def papermill_options(params: dict[str, Any]) -> list[str]:
    """papermill options that set exactly these values: -p for numbers, booleans and None, -r for text, -y for the rest."""
    options = []
    for key, value in params.items():
        if isinstance(value, str):
            options += ["-r", key, value]
        elif value is None or isinstance(value, (bool, int, float)):
            options += ["-p", key, repr(value)]
        else:
            options += ["-y", yaml.safe_dump({key: value}, default_flow_style=True, width=10_000).strip()]
    return options


def run_note(notebook: nbformat.NotebookNode, profile: str) -> str:
    """A collapsed note with the two commands that re-run this page: companion run, and papermill with its parameters."""
    papermill = notebook.metadata.get("papermill", {})
    source, output = Path(papermill["input_path"]), Path(papermill["output_path"])
    root = output.parents[2]  # papermill wrote to ROOT/book/_generated/...
    relative = source.relative_to(root) if source.is_relative_to(root) else Path("notebooks") / source.name
    name = source.stem
    command = ["papermill", str(relative), f"{name}.ipynb", "-k", "companion"] + papermill_options(papermill["parameters"])
    # the precision this page ran at, which "auto" might not choose on the reader's machine
    pinned = "".join(f" --set {key}={papermill['parameters'][key]}" for key in PARAMETERS if key in papermill["parameters"])
    return (
        ":::{admonition} Run this page\n:class: dropdown tip\n\n"
        f"From the repository root, after `make setup` (or the conda environment, see the README), re-run this page "
        f"with the parameters it ran with here (profile `{profile}`); the results land in "
        f"`book/_generated/results/{name}.json`:\n\n"
        f"```bash\n.venv/bin/companion run --only {name} --profile {profile}{pinned}\n```\n\n"
        f"Or open `{relative}` in JupyterLab (`make lab`, kernel *Python (companion)*), or run it with papermill "
        f"(`COMPANION_RESULTS=FILE.json` before the command also writes its metrics to `FILE.json`):\n\n"
        f"```bash\n{shlex.join(command)}\n```\n:::"
    )


def _data_label(record: Any) -> str:
    """One data record for the provenance note: its name, else its settings as `key value` (unset ones left out)."""
    if not isinstance(record, dict):
        return str(record)
    if "name" in record:
        return str(record["name"])
    return ", ".join(f"{key} {', '.join(map(str, value)) if isinstance(value, list) else value}"
                     for key, value in record.items() if value not in (None, "", []))


def present(notebook: nbformat.NotebookNode, profile: str, params: dict[str, Any], provenance: dict[str, Any]) -> None:
    """Hide the parameter cells, show the parameters compactly, caption the figures, add run and provenance notes."""
    caption_figures(notebook)
    position = None
    for index, cell in enumerate(notebook.cells):
        tags = cell.get("metadata", {}).get("tags", [])
        if "parameters" in tags or "injected-parameters" in tags:
            cell.metadata["tags"] = sorted(set(tags) | {"remove-cell"})
            position = index + 1
    rows = " · ".join(f"`{key}={_format_value(value)}`" for key, value in params.items())
    table = nbformat.v4.new_markdown_cell(f"**Parameters** (profile `{profile}`): {rows}")
    notebook.cells.insert(position if position is not None else 0, table)
    _after_title(notebook, run_note(notebook, profile))
    models = ", ".join(f"{m.get('name')} ({m.get('source')})" for m in provenance["models"]) or "none"
    data = "; ".join(_data_label(d) for d in provenance["data"]) or "none"
    packages = ", ".join(f"{k} {v}" for k, v in provenance["packages"].items())
    note = (
        ":::{admonition} Provenance\n:class: note\n\n"
        f"- **Run**: profile `{profile}`, git commit `{provenance['git']}`, {provenance['seconds']:.0f} s\n"
        f"- **Models**: {models}\n- **Data**: {data}\n- **Packages**: {packages}\n:::"
    )
    notebook.cells.append(nbformat.v4.new_markdown_cell(note))


def _after_title(notebook: nbformat.NotebookNode, text: str) -> None:
    """Put markdown text right under the page's title (the first line of its first markdown cell)."""
    first = next((cell for cell in notebook.cells if cell.cell_type == "markdown"), None)
    if first is None or not first.source.startswith("# "):
        notebook.cells.insert(0, nbformat.v4.new_markdown_cell(text))
        return
    title, _, rest = first.source.partition("\n")
    first.source = f"{title}\n\n{text}\n\n{rest.lstrip()}"


def caption_figures(notebook: nbformat.NotebookNode) -> None:
    """Give each cell that showed a book figure myst-nb's figure options: name, caption and alt text."""
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            meta = output.get("metadata", {}).get(FIGURE_KEY)
            if meta:
                cell.metadata["mystnb"] = {"figure": {"name": meta["name"], "caption": meta["caption"]},
                                           "image": {"alt": meta["alt"]}}
