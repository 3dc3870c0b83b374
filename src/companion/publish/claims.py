"""The reproduction-status page: each paper's claims beside what the results files measured, with a verdict."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VERDICT_RULE = (
    "**Reproduced**: the interval of our estimate reaches the paper's number (or the estimate exceeds it); for a "
    "claim without a number, the interval excludes no effect in the claimed direction. "
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
    label: str = ""  # which case of the claim this row is (e.g. a target language)


@dataclass(frozen=True)
class Claim:
    """One claim of a paper: its number, the no-effect value, and how to read our estimate from results."""

    paper: str
    text: str
    paper_value: float | None  # None: the paper states a direction, not a number
    null_value: float
    source: str  # results file (notebook name) the estimate comes from
    extract: Callable[[dict[str, Any]], list[Measured]]
    unit: str = ""


def verdict(claim: Claim, measured: Measured | None) -> str:
    """Apply the stated rule to an estimate (direction taken from the paper's number against no effect)."""
    if measured is None:
        return "not measured"
    paper_value = claim.null_value + 1.0 if claim.paper_value is None else claim.paper_value
    sign = 1.0 if paper_value >= claim.null_value else -1.0
    low, high = sorted((sign * (measured.low - claim.null_value), sign * (measured.high - claim.null_value)))
    target = sign * (paper_value - claim.null_value)
    if low <= 0:
        return "not reproduced"
    if claim.paper_value is None or high >= target or sign * (measured.value - claim.null_value) >= target:
        return "reproduced"
    return "same direction, smaller"


def _best_ratio(metrics: dict[str, Any]) -> list[Measured]:
    """Largest top-1 ratio (post/pre) with a conservative interval from the two accuracies' intervals."""
    best = metrics["best_ratio"]
    record = best["record"]
    low = record["ci_post"][0] / record["ci_pre"][1] if record["ci_pre"][1] > 0 else float("inf")
    high = record["ci_post"][1] / record["ci_pre"][0] if record["ci_pre"][0] > 0 else float("inf")
    where = (f"{record['src']}→{record['tgt']}, layer {record['layer']}, k={record['k']}, "
             f"top-1 {record['top1_pre']:.3f}→{record['top1_post']:.3f}")
    controls = "; ".join(f"{name}: {b['ratio']:.3g}" for name, b in metrics.get("best_ratio_controls", {}).items()
                         if b.get("ratio") is not None)
    return [Measured(best["ratio"], low, high, f"largest ratio over pairs, layers and k ({where}); interval from the "
                     f"two top-1 intervals; biased upward by the maximum — same maximum for random units: {controls or 'n/a'}")]


def _best_layer(metrics: dict[str, Any]) -> list[Measured]:
    """Each pair's best-layer top-1 after / before, averaged over pairs, at the largest k (no interval recorded)."""
    rows = [r for r in metrics["best_layer_top1"] if r["selection"] == "experts" and r["k"] > 0]
    row = max(rows, key=lambda r: r["k"])
    ratio = row["top1_post"] / row["top1_pre"]
    return [Measured(ratio, ratio, ratio, f"mean over pairs of best-layer top-1, {row['top1_pre']:.3f}→"
                     f"{row['top1_post']:.3f} at k={row['k']} (point estimate: no interval recorded)")]


def _steered_generation(metrics: dict[str, Any]) -> list[Measured]:
    """Share of continuations in each target language at the largest k, one row per target."""
    rows = [r for r in metrics["share_in_target"] if r["selection"] == "experts"]
    largest = max(r["k"] for r in rows)
    return [Measured(r["mean"], r["low"], r["high"], f"k={largest}, prompts in {metrics['prompt_language']}",
                     label=r["target"]) for r in rows if r["k"] == largest]


def _gap(metrics: dict[str, Any], key: str, note: str) -> list[Measured]:
    """EXRM-minus-DPORM accuracy gap over the OOD settings, with its interval when the notebook recorded one."""
    value = metrics[key]
    interval = metrics.get(f"{key}_ci") or [value, value]
    where = f" ({metrics['gap_max_ood_setting']})" if key == "gap_max_ood" and metrics.get("gap_max_ood_setting") else ""
    return [Measured(value, interval[0], interval[1], note + where)]


CLAIMS: tuple[Claim, ...] = (
    Claim("A", "Forcing language experts improves cross-lingual retrieval top-1 accuracy, up to 2x",
          2.0, 1.0, "steering_4_retrieval", _best_ratio, "× top-1"),
    Claim("A", "…which also shows at each pair's best layer (our robustness check: the paper compares layer by layer)",
          2.0, 1.0, "steering_4_retrieval", _best_layer, "× top-1"),
    Claim("A", "Forcing a language's experts makes the model continue in that language (the premise, from "
               "Kojima et al. 2024): share of continuations in the target language",
          None, 0.0, "steering_2_generation", _steered_generation, "(increase)"),
    Claim("B", "Under distribution shift the DPO implicit reward (DPORM) ranks pairs worse than an explicit "
               "reward model (EXRM): mean accuracy drop 3% over five OOD settings",
          0.03, 0.0, "dpo_3_generalization",
          lambda m: _gap(m, "gap_mean_ood", "mean over OOD settings of EXRM − DPORM accuracy"), "accuracy"),
    Claim("B", "…with a maximum drop of 7%",
          0.07, 0.0, "dpo_3_generalization",
          lambda m: _gap(m, "gap_max_ood", "largest EXRM − DPORM gap over OOD settings"), "accuracy"),
)


def measure(claim: Claim, results_dir: Path) -> list[Measured | None]:
    """Our estimates for a claim from its results file ([None] when it has not been produced)."""
    path = results_dir / f"{claim.source}.json"
    if not path.exists():
        return [None]
    try:
        return claim.extract(json.loads(path.read_text(encoding="utf-8"))["metrics"]) or [None]
    except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError):
        return [None]


def _fmt(value: float) -> str:
    """A number for the table (∞ where an interval is unbounded)."""
    return "∞" if value == float("inf") else f"{value:.3g}"


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
        profile = _profile(results_dir, claim.source)
        paper = "direction only" if claim.paper_value is None else f"{_fmt(claim.paper_value)} {claim.unit}"
        for measured in measure(claim, results_dir):
            ours = "—" if measured is None else f"{_fmt(measured.value)} [{_fmt(measured.low)}, {_fmt(measured.high)}]"
            text = f"{claim.text} — **{measured.label}**" if measured is not None and measured.label else claim.text
            note = "" if measured is None else measured.note
            lines.append(f"| {claim.paper} | {text} | {paper} | {ours} | **{verdict(claim, measured)}** | {note} | {profile} |")
    return "\n".join(lines) + "\n"


def _profile(results_dir: Path, name: str) -> str:
    """The profile a results file was produced with ('—' when absent)."""
    path = results_dir / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")).get("profile", "—") if path.exists() else "—"
