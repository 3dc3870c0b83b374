"""How an executed notebook is shown in the book: parameters, figures with captions and alt text, provenance."""

from __future__ import annotations

import json
from typing import Any

import nbformat

from companion.core.style import FIGURE_KEY
from companion.publish.results import to_jsonable


def _format_value(value: Any) -> str:
    """A parameter value in compact form for the reader."""
    text = json.dumps(to_jsonable(value), ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "…"



def present(notebook: nbformat.NotebookNode, profile: str, params: dict[str, Any], provenance: dict[str, Any]) -> None:
    """Hide the parameter cells, show the parameters compactly, caption the figures, append a provenance note."""
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
    models = ", ".join(f"{m.get('name')} ({m.get('source')})" for m in provenance["models"]) or "none"
    data = ", ".join(str(d.get("name", d)) for d in provenance["data"]) or "none"
    packages = ", ".join(f"{k} {v}" for k, v in provenance["packages"].items())
    note = (
        ":::{admonition} Provenance\n:class: note\n\n"
        f"- **Run**: profile `{profile}`, git commit `{provenance['git']}`, {provenance['seconds']:.0f} s\n"
        f"- **Models**: {models}\n- **Data**: {data}\n- **Packages**: {packages}\n:::"
    )
    notebook.cells.append(nbformat.v4.new_markdown_cell(note))


def caption_figures(notebook: nbformat.NotebookNode) -> None:
    """Give each cell that showed a book figure myst-nb's figure options: name, caption and alt text."""
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            meta = output.get("metadata", {}).get(FIGURE_KEY)
            if meta:
                cell.metadata["mystnb"] = {"figure": {"name": meta["name"], "caption": meta["caption"]},
                                           "image": {"alt": meta["alt"]}}
