"""Sphinx extension for a self-contained book: no duplicate inline scripts, MathJax only where a page has math."""

from __future__ import annotations

from typing import Any

from sphinx.application import Sphinx

MATHJAX_HOST = "mathjax"


def _script_key(script: Any) -> tuple[str, str]:
    """What identifies a script tag: its file name and its inline body."""
    return (str(getattr(script, "filename", script) or ""), str(getattr(script, "attributes", {}).get("body", "")))


def tidy_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    """Drop repeated script tags (sphinx-thebe adds its config twice) and MathJax on pages without math."""
    has_math = app.env.get_domain("math").has_equations(pagename)
    seen: set[tuple[str, str]] = set()
    kept = []
    for script in context.get("script_files", []):
        key = _script_key(script)
        if key in seen or (not has_math and MATHJAX_HOST in key[0] + key[1].lower()):
            continue
        seen.add(key)
        kept.append(script)
    context["script_files"] = kept


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the page hook after the other extensions' own hooks."""
    app.connect("html-page-context", tidy_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
