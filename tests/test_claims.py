"""The claims page: verdicts by the stated rule, values read from results files."""

import json
from pathlib import Path

from companion.claims import CLAIMS, Claim, Measured, render, verdict

RATIO = Claim("A", "up to 2x", 2.0, 1.0, "x", lambda m: Measured(m["v"], m["lo"], m["hi"]))
DROP = Claim("B", "drop of 3%", 0.03, 0.0, "x", lambda m: Measured(m["v"], m["lo"], m["hi"]))


def test_verdict_rule() -> None:
    assert verdict(RATIO, Measured(1.8, 1.5, 2.1)) == "reproduced"
    assert verdict(RATIO, Measured(2.5, 2.2, 2.9)) == "reproduced"
    assert verdict(RATIO, Measured(1.3, 1.1, 1.5)) == "same direction, smaller"
    assert verdict(RATIO, Measured(1.1, 0.9, 1.3)) == "not reproduced"
    assert verdict(RATIO, Measured(0.7, 0.6, 0.8)) == "not reproduced"
    assert verdict(DROP, Measured(0.01, -0.02, 0.04)) == "not reproduced"
    assert verdict(DROP, Measured(0.02, 0.01, 0.025)) == "same direction, smaller"
    assert verdict(RATIO, None) == "not measured"


def test_render_reads_results_and_updates(tmp_path: Path) -> None:
    assert "not measured" in render(tmp_path)
    best = {"ratio": 1.5, "record": {"src": "en", "tgt": "de", "layer": 9, "k": 100, "selection": "experts",
                                     "top1_pre": 0.4, "top1_post": 0.6, "ci_pre": [0.35, 0.45], "ci_post": [0.55, 0.65]}}
    (tmp_path / "steering_4_retrieval.json").write_text(json.dumps({"profile": "default", "metrics": {"best_ratio": best}}))
    page = render(tmp_path)
    row = next(line for line in page.splitlines() if line.startswith("| A |"))
    assert "1.5 [1.22, 1.86]" in row and "same direction, smaller" in row and "default" in row
    assert len([line for line in page.splitlines() if line.startswith("| ")]) == len(CLAIMS) + 1
