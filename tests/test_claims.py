"""The claims page: verdicts by the stated rule, values read from results files."""

import json
from pathlib import Path

from companion.publish.claims import CLAIMS, Claim, Measured, render, verdict

RATIO = Claim("A", "up to 2x", 2.0, 1.0, "x", lambda m: [Measured(m["v"], m["lo"], m["hi"])])
DROP = Claim("B", "drop of 3%", 0.03, 0.0, "x", lambda m: [Measured(m["v"], m["lo"], m["hi"])])
DIRECTION = Claim("A", "increases", None, 0.0, "x", lambda m: [])


def test_verdict_rule() -> None:
    assert verdict(RATIO, Measured(1.8, 1.5, 2.1)) == "reproduced"
    assert verdict(RATIO, Measured(2.5, 2.2, 2.9)) == "reproduced"
    assert verdict(RATIO, Measured(1.3, 1.1, 1.5)) == "same direction, smaller"
    assert verdict(RATIO, Measured(1.1, 0.9, 1.3)) == "not reproduced"
    assert verdict(RATIO, Measured(0.7, 0.6, 0.8)) == "not reproduced"
    assert verdict(DROP, Measured(0.01, -0.02, 0.04)) == "not reproduced"
    assert verdict(DROP, Measured(0.02, 0.01, 0.025)) == "same direction, smaller"
    assert verdict(RATIO, None) == "not measured"
    assert verdict(DIRECTION, Measured(0.4, 0.2, 0.6)) == "reproduced"
    assert verdict(DIRECTION, Measured(0.05, 0.0, 0.1)) == "not reproduced"


def test_render_reads_results_and_updates(tmp_path: Path) -> None:
    assert "not measured" in render(tmp_path)
    best = {"ratio": 1.5, "record": {"src": "en", "tgt": "de", "layer": 9, "k": 100, "selection": "experts",
                                     "top1_pre": 0.4, "top1_post": 0.6, "ci_pre": [0.35, 0.45], "ci_post": [0.55, 0.65]}}
    (tmp_path / "steering_4_retrieval.json").write_text(json.dumps({"profile": "default", "metrics": {"best_ratio": best}}))
    page = render(tmp_path)
    row = next(line for line in page.splitlines() if line.startswith("| A |"))
    assert "1.5 [1.22, 1.86]" in row and "same direction, smaller" in row and "default" in row
    assert len([line for line in page.splitlines() if line.startswith("| ")]) == len(CLAIMS) + 1
    shares = [{"target": t, "k": k, "selection": "experts", "mean": m, "low": lo, "high": hi}
              for t, k, m, lo, hi in [("ru", 0, 0, 0, 0), ("ru", 800, 0.78, 0.63, 0.91), ("fr", 800, 0.0, 0.0, 0.0)]]
    (tmp_path / "steering_2_generation.json").write_text(json.dumps(
        {"profile": "default", "metrics": {"share_in_target": shares, "prompt_language": "en"}}))
    rows = [line for line in render(tmp_path).splitlines() if "continue in that language" in line]
    assert len(rows) == 2
    assert "**ru**" in rows[0] and "**reproduced**" in rows[0]
    assert "**fr**" in rows[1] and "**not reproduced**" in rows[1]


def test_bench_page_renders_rows_or_says_not_run(tmp_path: Path) -> None:
    from companion.publish.book import bench_page

    assert "have not been run" in bench_page(tmp_path)
    rows = [{"name": "AP scoring", "value": "46x", "bar": ">= 100x", "holds": False, "detail": "ours 10 s"},
            {"name": "Batching", "value": "1.3%", "bar": "<= 10%", "holds": True}]
    (tmp_path / "bench.json").write_text(json.dumps(rows))
    page = bench_page(tmp_path)
    assert "| AP scoring | 46x | >= 100x | **no** | ours 10 s |" in page
    assert "| Batching | 1.3% | <= 10% | yes |  |" in page
