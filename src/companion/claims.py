"""The reproduction-status page: each paper's claims beside what the results files measured, with a verdict."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

VERDICT_RULE = (
    "**Reproduced**: the interval of our estimate reaches the paper's number (or the estimate exceeds it). "
    "**Same direction, smaller**: the interval excludes no effect and lies on the paper's side of it, but below "
    "the paper's number. **Not reproduced**: the interval includes no effect, or the effect points the other way. "
    "**Not measured**: the notebook has not been run with this build's results."
)


@dataclass(frozen=True)
class Measured:
    """Our estimate with its 95% interval and a short note on how it was computed."""

    value: float
    low: float
    high: float
    note: str = ""


@dataclass(frozen=True)
class Claim:
    """One claim of a paper: its number, the no-effect value, and how to read our estimate from results."""

    paper: str
    text: str
    paper_value: float
    null_value: float
    source: str  # results file (notebook name) the estimate comes from
    extract: Callable[[dict[str, Any]], Measured]
    unit: str = ""


def verdict(claim: Claim, measured: Measured | None) -> str:
    """Apply the stated rule to an estimate (direction taken from the paper's number against no effect)."""
    if measured is None:
        return "not measured"
    sign = 1.0 if claim.paper_value >= claim.null_value else -1.0
    low, high = sorted((sign * (measured.low - claim.null_value), sign * (measured.high - claim.null_value)))
    target = sign * (claim.paper_value - claim.null_value)
    if low <= 0:
        return "not reproduced"
    if high >= target or sign * (measured.value - claim.null_value) >= target:
        return "reproduced"
    return "same direction, smaller"


def _best_ratio(metrics: dict[str, Any]) -> Measured:
    """Largest top-1 ratio (post/pre) with a conservative interval from the two accuracies' intervals."""
    best = metrics["best_ratio"]
    record = best["record"]
    low = record["ci_post"][0] / max(record["ci_pre"][1], 1e-9)
    high = record["ci_post"][1] / max(record["ci_pre"][0], 1e-9)
    where = f"{record['src']}→{record['tgt']}, layer {record['layer']}, k={record['k']}"
    return Measured(best["ratio"], low, high, f"best over pairs, layers and k ({where}); interval from the two top-1 intervals")


def _gap(metrics: dict[str, Any], key: str, note: str) -> Measured:
    """EXRM-minus-DPORM accuracy gap over the OOD settings, with its interval when the notebook recorded one."""
    value = metrics[key]
    interval = metrics.get(f"{key}_ci", [value, value])
    return Measured(value, interval[0], interval[1], note)


CLAIMS: tuple[Claim, ...] = (
    Claim("A", "Forcing language experts improves cross-lingual retrieval top-1 accuracy, up to 2x",
          2.0, 1.0, "steering_4_retrieval", _best_ratio, "× top-1"),
    Claim("B", "Under distribution shift the DPO implicit reward (DPORM) ranks pairs worse than an explicit "
               "reward model (EXRM): mean accuracy drop 3% over five OOD settings",
          0.03, 0.0, "dpo_3_generalization",
          lambda m: _gap(m, "gap_mean_ood", "mean over OOD settings of EXRM − DPORM accuracy"), "accuracy"),
    Claim("B", "…with a maximum drop of 7%",
          0.07, 0.0, "dpo_3_generalization",
          lambda m: _gap(m, "gap_max_ood", "largest EXRM − DPORM gap over OOD settings"), "accuracy"),
)


def measure(claim: Claim, results_dir: Path) -> Measured | None:
    """Our estimate for a claim from its results file, or None when it has not been produced."""
    path = results_dir / f"{claim.source}.json"
    if not path.exists():
        return None
    try:
        return claim.extract(json.loads(path.read_text(encoding="utf-8"))["metrics"])
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def _fmt(value: float) -> str:
    """A number for the table."""
    return f"{value:.3g}"


def render(results_dir: Path, claims: tuple[Claim, ...] = CLAIMS) -> str:
    """The claims page as MyST markdown, computed from the results files."""
    lines = [
        "# Reproduction status",
        "",
        "This page is generated from `book/_generated/results/*.json` each time the book is built; nothing on it "
        "is typed by hand. Each row is a claim of one of the papers, the paper's number, our estimate with its "
        "95% interval, and a verdict computed by this rule:",
        "",
        VERDICT_RULE,
        "",
        "| paper | claim | paper | ours (95% CI) | verdict | how we measured | profile |",
        "|---|---|---|---|---|---|---|",
    ]
    for claim in claims:
        measured = measure(claim, results_dir)
        profile = _profile(results_dir, claim.source)
        ours = "—" if measured is None else f"{_fmt(measured.value)} [{_fmt(measured.low)}, {_fmt(measured.high)}]"
        note = "" if measured is None else measured.note
        lines.append(f"| {claim.paper} | {claim.text} | {_fmt(claim.paper_value)} {claim.unit} | {ours} | "
                     f"**{verdict(claim, measured)}** | {note} | {profile} |")
    return "\n".join(lines) + "\n"


def _profile(results_dir: Path, name: str) -> str:
    """The profile a results file was produced with ('—' when absent)."""
    path = results_dir / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")).get("profile", "—") if path.exists() else "—"
