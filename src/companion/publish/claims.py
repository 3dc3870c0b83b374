"""The reproduction-status page: each claim beside our primary estimate and its verdict, then the exploratory maxima."""

from __future__ import annotations

from pathlib import Path

from companion.core.errors import UserError
from companion.publish.fields import Fields
from companion.publish.paper_claims import CLAIMS, MAXIMA, Claim, Maximum, fmt, fmt_ci
from companion.publish.verdicts import RULE, verdict

PAPERS = {"A": "sundar2025steering", "B": "lin2024limited"}

HOW_TO_READ = (
    "Each row of the first table is one claim of a paper, tested on our *primary analysis*: the layer, the number "
    "and kind of units forced (paper A) and the set of out-of-distribution settings (paper B) are fixed in the "
    "profile before the run, and every interval in it is a 95% interval recorded by the notebook: a bootstrap over the "
    "sentences or pairs, paired (the same ones before and after, or for both models), plus the spread over seeds with "
    "a t quantile, since three seeds are too few to resample. The verdict says what that interval "
    "allows. *Reproduced*: we see the effect in the paper's direction, at the paper's size or larger. *Smaller "
    "effect*: we see the effect, but it is smaller than the paper's. *Inconclusive*: our data cannot tell no effect "
    "from the paper's effect; more sentences, pairs or seeds would be needed. *Not reproduced*: our data are "
    "compatible with no effect and rule out the paper's size. *Opposite*: we see an effect in the other direction. "
    "None of these verdicts judges the paper: this book runs models of a few hundred million parameters, fewer "
    "sentences and pairs, and shifts of its own making, and an effect found with the papers' larger models and data "
    "may be smaller, absent or different at this scale. The `paper` profile (`notebooks/profiles/paper.yaml`, with "
    "`paper_a.paper.yaml` and `paper_b.paper.yaml`) loads paper-scale models and data from the Hugging Face hub: "
    "run `companion run --profile paper` on a GPU, then `companion build`, and this page is recomputed from those "
    "results. Where the paper's number is itself a maximum (\"up to 2x\"), our primary estimate is one setting fixed "
    "in advance, so it can fall short of that number even when the effect is real; our own maximum is in the "
    "second table. The second table lists maxima over pairs, layers, k and settings (paper B's \"maximum drop of "
    "7%\" is one): they are exploratory and get no verdict. A claim of a direction only (no size) is reproduced, opposite "
    "or inconclusive, and 'not reproduced' only when the interval ends exactly at no effect (e.g. [-0.25, 0], as a share "
    "that stays at 0 can give): it then excludes every effect in the paper's direction. Paper B's "
    "rows get no verdict when their premise fails: if either reward model does not rank the in-distribution test pairs "
    "above chance, there is no learned preference to generalise; if the two already differ on in-distribution pairs "
    "(their training pairs or the in-distribution test set), an out-of-distribution gap does not measure "
    "generalisation. A premise that passes means only that no difference was detected, not that the fits are shown "
    "equal."
)

MAXIMA_TEXT = (
    "A maximum taken over many comparisons is biased upward: even units chosen at random can produce a largest "
    "ratio well above 1 somewhere, and the largest of several gaps clears 0 more often than any one gap. Each maximum "
    "is shown beside the same maximum for the control where the notebook records one (as many random units, forced "
    "the same way); only the gap between the two says something, and it is not tested here. The interval of a "
    "maximum is that of the maximum itself, its bootstrap replicates reflected about the estimate (each replicate's "
    "maximum is biased upward once more). Paper A's maximum is over one seed; paper B's bootstrap draws its three seeds "
    "with replacement, which understates their spread, so read these intervals as rough."
)


def _load(results_dir: Path, name: str, cache: dict[str, Fields | None]) -> Fields | None:
    """A notebook's results file (None only when the notebook has not been run at all)."""
    if name not in cache:
        path = results_dir / f"{name}.json"
        if path.exists():
            cache[name] = Fields.load(path)
        elif (results_dir.parent / f"{name}.ipynb").exists():
            raise UserError(f"{path.name} is missing although {name} was executed; re-run it "
                            f"(companion run --only {name} --force)")
        else:
            cache[name] = None
    return cache[name]


class Notes:
    """The page's footnotes: one per distinct 'how we measured' text, numbered in the order first cited, so the tables
    stay one line per row."""

    def __init__(self) -> None:
        self.numbers: dict[str, int] = {}

    def cite(self, text: str) -> str:
        """A footnote reference to text (the same text is one footnote however often it is cited)."""
        return f"[^m{self.numbers.setdefault(text, len(self.numbers) + 1)}]"

    def definitions(self) -> list[str]:
        """The footnotes' definitions, one paragraph each."""
        return [line for text, n in self.numbers.items() for line in (f"[^m{n}]: {text}", "")]


def _paper(key: str) -> str:
    """The paper column: its letter and a citation."""
    return f"{key} {{cite:p}}`{PAPERS[key]}`"


def _claim_rows(claim: Claim, results: Fields | None, notes: Notes) -> list[str]:
    """The table lines of one claim: one per estimate, or one saying the notebook has not been run yet."""
    side = ">" if claim.direction > 0 else "<"
    paper_value = (f"{claim.unit} {side} {fmt(claim.null_value)} (direction only)" if claim.paper_value is None
                   else f"{fmt(claim.paper_value)} {claim.unit}")
    if results is None:
        return [f"| {_paper(claim.paper)} | {claim.text} | {paper_value} | — | not run yet | run `companion run --only "
                f"{claim.source}` |"]
    lines = []
    metrics = results.child("metrics")
    failed_premise = claim.premise(metrics) if claim.premise else None
    for row in claim.extract(metrics):
        outcome = None if failed_premise else verdict(row.estimate, claim.paper_value, claim.null_value, claim.direction)
        shown = (f"**{outcome}**" if outcome else f"no verdict (premise not met){notes.cite(failed_premise)}" if failed_premise
                 else "no verdict (no interval recorded)")
        text = f"{claim.text} — **{row.label}**" if row.label else claim.text
        lines.append(f"| {_paper(claim.paper)} | {text} | {paper_value} | {fmt_ci(row.estimate)} | {shown} | "
                     f"{notes.cite(row.note)} |")
    return lines


def _maximum_row(maximum: Maximum, results: Fields | None, notes: Notes) -> str:
    """The table line of one exploratory maximum beside the control's."""
    if results is None:
        return f"| {_paper(maximum.paper)} | {maximum.text} | — | not run yet | — | — |"
    ours, control = maximum.extract(results.child("metrics"))
    where = notes.cite(ours.note)
    theirs = (fmt_ci(control.estimate), notes.cite(control.note)) if control else ("—", "no control maximum recorded")
    return f"| {_paper(maximum.paper)} | {maximum.text} | {fmt_ci(ours.estimate)} | {where} | {theirs[0]} | {theirs[1]} |"


def _profiles(cache: dict[str, Fields | None]) -> str:
    """Which profile's results the tables show: one sentence."""
    ran = {name: results.text("profile") for name, results in sorted(cache.items()) if results is not None}
    if not ran:
        return "No notebook behind these tables has been run yet."
    if len(set(ran.values())) == 1:
        return f"Every row comes from the `{next(iter(ran.values()))}` profile's results."
    return "The rows come from these profiles' results: " + ", ".join(f"{name} `{p}`" for name, p in ran.items()) + "."


def render(results_dir: Path, claims: tuple[Claim, ...] = CLAIMS, maxima: tuple[Maximum, ...] = MAXIMA) -> str:
    """The claims page as MyST markdown, computed from the results files (a malformed file is a UserError)."""
    cache: dict[str, Fields | None] = {}
    notes = Notes()
    primary = ["| paper | claim | paper's value | ours (95% CI) | verdict | how we measured |", "|---|---|---|---|---|---|"]
    for claim in claims:
        primary += _claim_rows(claim, _load(results_dir, claim.source, cache), notes)
    exploratory = ["| paper | maximum of | ours (95% CI) | where | random units (95% CI) | where |", "|---|---|---|---|---|---|"]
    exploratory += [_maximum_row(maximum, _load(results_dir, maximum.source, cache), notes) for maximum in maxima]
    lines = ["# Reproduction status", "",
             "This page is generated from `book/_generated/results/*.json` each time the book is built; nothing on it "
             "is typed by hand.", "",
             "## How to read this page", "", HOW_TO_READ, "",
             "## The rule", "", RULE, "",
             "## Primary analysis", "", f"{_profiles(cache)} How each row was measured is in its footnote, at the end "
             "of the page.", "", *primary,
             "", "## Exploratory: maxima", "", MAXIMA_TEXT, "", *exploratory, "", *notes.definitions()]
    return "\n".join(lines).rstrip("\n") + "\n"
