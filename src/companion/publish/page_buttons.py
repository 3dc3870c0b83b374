"""Launch, download and repository buttons of an executed page point at its committed notebook, not the executed copy."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from sphinx.application import Sphinx

GENERATED = "_generated/"


def committed_notebook(root: Path, name: str) -> str | None:
    """The repository path of the committed notebook behind executed page `name` (None for generated markdown)."""
    found = sorted((root / "notebooks").rglob(f"{name}.ipynb"))
    return found[0].relative_to(root).as_posix() if found else None


def retarget(buttons: list[dict[str, Any]], replacements: list[tuple[str, str]], download: str, committed_url: str) -> None:
    """Point launch links (repository paths, plain or %-encoded) and the site-copy download at the committed notebook."""
    for button in buttons:
        retarget(button.get("buttons", []), replacements, download, committed_url)
        if "url" not in button:
            continue
        if button["url"].endswith(download):
            button["url"] = committed_url
            continue
        for old, new in replacements:
            button["url"] = button["url"].replace(old, new)


def _on_page(app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any) -> None:
    """Retarget the header buttons of an executed notebook's page."""
    if not pagename.startswith(GENERATED) or "header_buttons" not in context:
        return
    committed = committed_notebook(Path(app.srcdir).parent, pagename.removeprefix(GENERATED))
    if committed is None:
        return
    options = app.config.html_theme_options
    repository, branch = options.get("repository_url", "").rstrip("/"), options.get("repository_branch", "main")
    book = options.get("path_to_docs", "").strip("/")
    executed = f"{book}/{pagename}.ipynb" if book else f"{pagename}.ipynb"
    replacements = [(executed, committed), (quote(executed, safe=""), quote(committed, safe=""))]
    retarget(context["header_buttons"], replacements, f"_sources/{pagename}.ipynb", f"{repository}/blob/{branch}/{committed}")


def setup(app: Sphinx) -> dict[str, Any]:
    """Run after sphinx-book-theme has made its buttons (priority 501)."""
    app.connect("html-page-context", _on_page, priority=510)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
