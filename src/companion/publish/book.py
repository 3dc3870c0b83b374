"""Render the book: check that every page it lists was executed, then run Jupyter Book with -W."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from companion.core.errors import UserError


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
            if f.startswith("_generated/") and not any((book / f"{f}{ext}").exists() for ext in (".ipynb", ".md"))]


def bench_page(results_dir: Path) -> str:
    """The benchmarks appendix as MyST markdown, from results/bench.json when `make bench` has written it."""
    lines = ["# Appendix: speed benchmarks", "",
             "`make bench` measures our implementation side by side with the reference way of doing the same "
             "work and writes `results/bench.json`; this page renders that file.", ""]
    path = results_dir / "bench.json"
    if not path.exists():
        return "\n".join(lines + ["The benchmarks have not been run for this build: run `make bench`, then "
                                  "`companion build`."]) + "\n"
    rows = json.loads(path.read_text(encoding="utf-8"))
    lines += ["| benchmark | measured | bar | holds | how it was measured |", "|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['value']} | {r['bar']} | {'yes' if r['holds'] else '**no**'} | {r.get('detail', '')} |"
              for r in rows]
    return "\n".join(lines) + "\n"


def write_generated_pages(generated: Path) -> None:
    """Write the pages computed from results files (claims, benchmarks) before the book is rendered."""
    from companion.publish import sweep_page
    from companion.publish.claims import render

    results = generated / "results"
    (generated / "claims.md").parent.mkdir(parents=True, exist_ok=True)
    for name, text in (("claims.md", render(results)), ("bench.md", bench_page(results)),
                       ("sweeps.md", sweep_page.render(results))):
        target = generated / name
        if not target.exists() or target.read_text(encoding="utf-8") != text:  # keep mtimes for incremental builds
            target.write_text(text, encoding="utf-8")


def build(root: Path) -> int:
    """Build _build/html with warnings as errors (plus .nojekyll for GitHub Pages); one clear error for unexecuted pages."""
    book = root / "book"
    write_generated_pages(book / "_generated")
    missing = missing_pages(book)
    if missing:
        raise UserError(
            f"the book lists {len(missing)} page(s) not executed yet ({', '.join(missing[:3])}…); "
            "run 'companion run' (or 'make book') first"
        )
    jupyter_book = shutil.which("jupyter-book") or str(Path(sys.executable).parent / "jupyter-book")
    command = [jupyter_book, "build", str(book), "--config", str(root / "_config.yml"), "--toc",
               str(book / "_toc.yml"), "--path-output", str(root), "-W", "--keep-going"]
    returncode = subprocess.run(command, cwd=root).returncode
    html = root / "_build" / "html"
    if html.is_dir():  # GitHub Pages' Jekyll would drop _generated/ and _static/ (leading underscores)
        (html / ".nojekyll").touch()
    return returncode
