"""Render the book: check that every page it lists was executed, then run Jupyter Book with -W."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from companion.errors import UserError


def toc_files(toc: Path) -> list[str]:
    """Every file entry of a Jupyter Book _toc.yml (root, chapters, sections), in order."""
    content = yaml.safe_load(toc.read_text(encoding="utf-8"))
    found = [content["root"]]

    def walk(entries: list[dict]) -> None:
        for entry in entries or []:
            if "file" in entry:
                found.append(entry["file"])
            walk(entry.get("chapters", []) + entry.get("sections", []))

    walk(content.get("parts", []) + content.get("chapters", []))
    return found


def missing_pages(book: Path) -> list[str]:
    """Executed notebooks the table of contents lists but that do not exist yet."""
    return [f for f in toc_files(book / "_toc.yml")
            if f.startswith("_generated/") and not (book / f"{f}.ipynb").exists()]


def build(root: Path) -> int:
    """Build _build/html with warnings as errors; one clear error when pages have not been executed."""
    book = root / "book"
    missing = missing_pages(book)
    if missing:
        raise UserError(
            f"the book lists {len(missing)} page(s) not executed yet ({', '.join(missing[:3])}…); "
            "run 'companion run' (or 'make book') first"
        )
    jupyter_book = shutil.which("jupyter-book") or str(Path(sys.executable).parent / "jupyter-book")
    command = [jupyter_book, "build", str(book), "--config", str(root / "_config.yml"), "--toc",
               str(book / "_toc.yml"), "--path-output", str(root), "-W", "-n", "--keep-going"]
    return subprocess.run(command, cwd=root).returncode
