"""Progress lines while notebooks run: cells done of total, elapsed time, and time left from the last recorded run."""

import json
import re
from pathlib import Path

import pytest
from toy_project import toy_project

from companion.publish.progress import last_seconds
from companion.publish.runner import run


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("companion: ")]


def test_lines_per_cell_then_estimate_from_last_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    project = toy_project(tmp_path)
    run(project, "smoke")
    first = _lines(capsys.readouterr().err)
    assert first[0].startswith("companion: 2 notebook(s) to run, 0 up to date, 1 at a time")
    assert "companion: alpha: started, 5 code cells; no earlier run to estimate from" in first
    cells = [line for line in first if line.startswith("companion: alpha: cell ")]
    assert [re.search(r"cell (\d+)/5 done, \d+ s elapsed", line).group(1) for line in cells] == ["1", "2", "3", "4", "5"]
    last = r"companion: \[2/2\] beta ran in \d+ s; about 0 s left by the recorded durations"
    assert any(re.fullmatch(last, line) for line in first)
    recorded = json.loads((project.results / "alpha.json").read_text())["provenance"]["seconds"]
    run(project, "smoke", force=True)
    again = _lines(capsys.readouterr().err)
    assert f"companion: alpha: started, 5 code cells; about {recorded:.0f} s left (last run {recorded:.0f} s)" in again
    assert re.search(r"last recorded durations add up to \d+ s$", again[0]), "no 'without a record' once both ran"


def test_lines_come_from_every_worker_under_jobs(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    run(toy_project(tmp_path), "smoke", jobs=2)
    err = capfd.readouterr().err
    assert "companion: alpha: cell 5/5 done" in err and "companion: beta: cell 4/4 done" in err
    assert "2 at a time" in err


def test_estimate_falls_back_to_the_plain_run(tmp_path: Path) -> None:
    results = tmp_path / "results"
    assert last_seconds(results, "alpha/x=2", "alpha") is None
    results.mkdir()
    (results / "alpha.json").write_text(json.dumps({"provenance": {"seconds": 12.5}}))
    assert last_seconds(results, "alpha/x=2", "alpha") == 12.5
    (results / "alpha").mkdir()
    (results / "alpha" / "x=2.json").write_text(json.dumps({"provenance": {"seconds": 3.0}}))
    assert last_seconds(results, "alpha/x=2", "alpha") == 3.0
