"""The benchmark table and bench.json helpers (no timing: speed targets never go in timed tests)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from common import Row, markdown_table, ratio_row, side_by_side, write_rows  # noqa: E402

from companion.publish.book import bench_page  # noqa: E402


def test_ratio_row_holds_at_the_limit_and_names_both_times():
    row = ratio_row("hooks", {"ours": 1.1, "plain": 1.0}, "ours", "plain", 1.10, "8 sentences")
    assert row.holds and row.value == "1.100x" and row.bar == "<= 1.10x"
    assert "1.10 s vs 1.00 s" in row.detail
    assert not ratio_row("hooks", {"ours": 1.2, "plain": 1.0}, "ours", "plain", 1.10, "").holds


def test_side_by_side_alternates_the_order_after_a_warm_up():
    calls = []
    times = side_by_side({name: lambda name=name: calls.append(name) for name in "ab"}, 3)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert set(times) == {"a", "b"} and all(t >= 0 for t in times.values())


def test_table_has_one_line_per_row_and_flags_misses():
    rows = [Row("fast", "2x", ">= 1x", True), Row("slow", "0.5x", ">= 1x", False, "why")]
    lines = markdown_table(rows).splitlines()
    assert len(lines) == 4 and lines[2].startswith("| fast | 2x |") and "**no** | why |" in lines[3]


def test_bench_json_is_a_list_the_book_renders(tmp_path: Path):
    path = write_rows([Row("AP", "120x", ">= 100x", True, "detail", 1.5, "ap")], tmp_path / "results" / "bench.json")
    rows = json.loads(path.read_text())
    assert rows == [{"name": "AP", "value": "120x", "bar": ">= 100x", "holds": True, "detail": "detail",
                     "seconds": 1.5, "key": "ap"}]
    assert not list(path.parent.glob(".bench.json*"))  # no temporary file left behind
    assert "| AP | 120x | >= 100x | yes |" in bench_page(path.parent)


@pytest.mark.parametrize("only, expected", [(None, 11), (["1", "memory", "allocator"], 3)])
def test_run_selects_rows_by_number_or_name(only, expected):
    import run

    assert len(run.selected(only)) == expected
    with pytest.raises(SystemExit, match="unknown row"):
        run.selected(["nope"])


def test_rerunning_some_rows_keeps_the_others_in_table_order():
    import run

    previous = [{"name": "old AP", "value": "1x", "bar": "b", "holds": False, "key": "ap"},
                {"name": "old memory", "value": "1 GiB", "bar": "b", "holds": True, "key": "memory"}]
    table = run.merged(previous, {"capture": Row("capture", "1.0x", "b", True, key="capture"),
                                  "ap": Row("new AP", "200x", "b", True, key="ap")})
    assert [row.name for row in table] == ["new AP", "capture", "old memory"]
