"""The claims page read from results files: well-formed fixtures, broken ones, the smoke profile's own results."""

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from companion.core.errors import UserError
from companion.publish.claims import render
from companion.publish.paper_claims import CLAIMS, MAXIMA
from companion.publish.verdicts import OUTCOMES, RULE

RETRIEVAL = {"notebook": "steering_4_retrieval", "profile": "default", "parameters": {}, "provenance": {}, "metrics": {
    "primary": {"layer": 9, "k": 100, "selection": "experts", "pairs": ["en→de", "de→en"], "n_eval": 500,
                "seeds": [0, 1, 2], "top1_pre": 0.40, "top1_post": 0.62, "ratio": 1.55, "ratio_ci": [1.30, 1.85],
                "diff": 0.22, "diff_ci": [0.15, 0.29], "diff_vs_control": 0.18, "diff_vs_control_ci": [0.10, 0.26],
                "center": False,
                "other_centring": {"center": True, "n_eval": 500, "top1_pre": 0.55, "top1_post": 0.57, "ratio": 1.04,
                                   "ratio_ci": [0.98, 1.1], "diff": 0.02, "diff_ci": [-0.03, 0.07],
                                   "diff_vs_control": 0.01, "diff_vs_control_ci": [-0.05, 0.07]}},
    "exploratory": {
        "best_ratio": {"ratio": 33.0, "ratio_ci": [0.9, None], "cells": 24,
                       "record": {"src": "en", "tgt": "vi", "layer": 3, "k": 800, "top1_pre": 0.005, "top1_post": 0.165}},
        "best_ratio_control": {"ratio": 3.1, "ratio_ci": [1.2, 8.0], "cells": 24,
                               "record": {"src": "de", "tgt": "en", "layer": 5, "k": 800, "top1_pre": 0.01,
                                          "top1_post": 0.031}}},
    "into_pivot": {"layer": 9, "k": 100, "seeds": [0], "control": None, "pairs": ["de→en", "fr→en"], "n_eval": 500,
                   "top1_pre": 0.48, "top1_post": 0.16, "ratio": 0.33, "ratio_ci": [0.3, 0.37], "diff": -0.32,
                   "diff_ci": [-0.35, -0.29]}}}
GENERATION = {"notebook": "steering_2_generation", "profile": "default", "parameters": {}, "provenance": {}, "metrics": {
    "primary": {"k": 800, "selection": "experts", "prompt": "en", "targets": [
        {"target": "ru", "share": 0.78, "share_ci": [0.63, 0.91], "share_k0": 0.02, "share_control": 0.05,
         "diff_vs_k0": 0.76, "diff_vs_k0_ci": [0.6, 0.9], "diff_vs_control": 0.73, "diff_vs_control_ci": [0.55, 0.88]},
        {"target": "fr", "share": 0.0, "share_ci": [0.0, 0.0], "share_k0": 0.0, "share_control": 0.0,
         "diff_vs_k0": 0.0, "diff_vs_k0_ci": [0.0, 0.0], "diff_vs_control": 0.0, "diff_vs_control_ci": [-0.02, 0.01]}]}}}
GENERALIZATION = {"notebook": "dpo_3_generalization", "profile": "smoke", "parameters": {}, "provenance": {}, "metrics": {
    "primary": {"settings": ["prompt shift", "response shift", "both"], "seeds": [0, 1, 2], "n_pairs": 600,
                "gap_mean_ood": 0.01, "gap_mean_ood_ci": [-0.02, 0.04], "gap_max_ood": 0.05, "gap_max_ood_ci": [0.01, 0.09],
                "id_gap": 0.0, "id_gap_ci": [-0.01, 0.01], "gap_ood_minus_id": 0.01, "gap_ood_minus_id_ci": [-0.03, 0.05],
                "train_acc_dporm": 0.97, "train_acc_exrm": 0.98, "train_gap": 0.01, "train_gap_ci": [-0.02, 0.04]},
    "settings": [{"name": "in-distribution", "shift": "id", "dporm_acc": 0.8, "dporm_ci": [0.75, 0.85],
                  "exrm_acc": 0.81, "exrm_ci": [0.76, 0.86]}]}}
FIXTURES = {"steering_4_retrieval": RETRIEVAL, "steering_2_generation": GENERATION, "dpo_3_generalization": GENERALIZATION}


def write(folder: Path, name: str, payload: dict[str, Any]) -> None:
    """Write one results file."""
    (folder / f"{name}.json").write_text(json.dumps(payload), encoding="utf-8")


def write_all(folder: Path) -> Path:
    """Write every well-formed fixture and return the folder."""
    for name, payload in FIXTURES.items():
        write(folder, name, payload)
    return folder


def footnotes(page: str) -> dict[str, str]:
    """The page's footnote definitions by label."""
    return dict(re.findall(r"^\[\^(m\d+)\]: (.*)$", page, flags=re.M))


def row(page: str, *parts: str) -> str:
    """The one table line of the page that contains every part, its footnote references replaced by their text."""
    notes = footnotes(page)
    lines = [re.sub(r"\[\^(m\d+)\]", lambda ref: notes[ref.group(1)], line) for line in page.splitlines()
             if line.startswith("| ")]
    found = [line for line in lines if all(p in line for p in parts)]
    assert len(found) == 1, (parts, found)
    return found[0]


def test_page_states_the_rule_and_how_to_read_it_above_the_table(tmp_path: Path) -> None:
    page = render(write_all(tmp_path))
    table = page.index("## Primary analysis")
    assert page.index("## How to read this page") < page.index(RULE) < table < page.index("## Exploratory")
    how = page[page.index("## How to read this page"):page.index("## The rule")]
    assert all(outcome.capitalize() in how for outcome in OUTCOMES)
    assert "smaller" in how and "notebooks/profiles/paper.yaml" in how and "--profile paper" in how


def test_primary_rows_carry_recorded_paired_intervals_and_verdicts(tmp_path: Path) -> None:
    page = render(write_all(tmp_path))
    ratio = row(page, "up to 2x")
    assert "1.55 [1.3, 1.85]" in ratio and "**smaller effect**" in ratio and "| 2 × top-1 |" in ratio
    assert "layer 9, k=100 units (experts), 2 ordered language pairs, 500 sentences, 3 seeds" in ratio
    assert "0.4 → 0.62" in ratio and "not like for like" in ratio
    assert "beside it, the embeddings centred (the same runs): top-1 0.55 → 0.57, 1.04 [0.98, 1.1]" in ratio
    assert ("the other direction (de→en, fr→en; exploratory, added after a review: 1 seed, no control): top-1 0.48 → 0.16, "
            "difference -0.32 [-0.35, -0.29]") in ratio
    assert "**reproduced**" in row(page, "top-1 accuracy rises") and "| Δ top-1 > 0 (direction only) |" in page
    assert "**reproduced**" in row(page, "as many random units are forced")
    assert "**reproduced**" in row(page, "compared with no forcing", "**ru**")
    assert "prompt: 'en'" in row(page, "compared with no forcing", "**ru**")
    assert "**not reproduced**" in row(page, "compared with no forcing", "**fr**")  # stayed at 0 with and without
    assert "**inconclusive**" in row(page, "forcing as many random units", "**fr**")
    mean = row(page, "mean accuracy drop 3%")
    assert "0.01 [-0.02, 0.04]" in mean and "**inconclusive**" in mean  # contains both 0 and the paper's 0.03
    assert "in-distribution gap 0 [-0.01, 0.01]" in mean and "DPORM 0.97, EXRM 0.98" in mean
    assert "prompt shift, response shift, both" in mean and "(the premise holds" in mean and "our interpretation" in mean
    assert ("The rows come from these profiles' results: dpo_3_generalization `smoke`, steering_2_generation `default`, "
            "steering_4_retrieval `default`.") in page
    largest = row(page[page.index("## Exploratory"):], "maximum drop of 7%")  # a maximum: exploratory, no verdict
    assert "0.05 [0.01, 0.09]" in largest and "no control maximum recorded" in largest
    assert not any(outcome in largest for outcome in OUTCOMES)
    assert "{cite:p}`sundar2025steering`" in ratio and "{cite:p}`lin2024limited`" in mean
    assert "under-powered" not in mean  # half-width 0.03: what the sets were sized for
    shift = row(page, "the drop comes with the shift")
    assert "0.01 [-0.03, 0.05]" in shift and "**inconclusive**" in shift
    assert "under-powered: the interval's half-width 0.040 is above the 0.03" in shift
    assert len([line for line in page.splitlines() if line.startswith("| ") and "**" in line.split("|")[5]]) == 9


def test_how_each_row_was_measured_is_one_footnote_per_distinct_text(tmp_path: Path) -> None:
    page = render(write_all(tmp_path))
    notes = footnotes(page)
    cited = set(re.findall(r"\[\^(m\d+)\](?!:)", page))
    assert cited == set(notes) and len(set(notes.values())) == len(notes)  # every reference defined, no text twice
    rows = [line for line in page.splitlines() if line.startswith("| ")]
    assert {line.count(" | ") for line in rows} == {5}  # six columns, no profile column
    assert page.index("## Exploratory") < page.index("[^m1]: ")  # the notes close the page


def test_maxima_are_exploratory_beside_the_controls_maximum(tmp_path: Path) -> None:
    page = render(write_all(tmp_path))
    primary = page[page.index("## Primary analysis"):page.index("## Exploratory")]
    assert "33" not in primary  # the maximum never reaches the headline table
    best = row(page[page.index("## Exploratory"):], "largest over ordered pairs")
    assert "33 [0.9, —]" in best and "en→vi, layer 3, k=800, top-1 0.005 → 0.165" in best
    assert "3.1 [1.2, 8]" in best and "de→en, layer 5" in best
    assert best.count("largest of 24 (pair, layer, k) cells, the interval that of the maximum") == 2
    assert not any(outcome in best for outcome in OUTCOMES)


def test_a_row_without_an_interval_gets_no_verdict(tmp_path: Path) -> None:
    payload = copy.deepcopy(RETRIEVAL)
    payload["metrics"]["primary"]["ratio_ci"] = [None, None]  # how a non-finite bound is recorded
    write(tmp_path, "steering_4_retrieval", payload)
    ratio = row(render(tmp_path), "up to 2x")
    assert "1.55 [—, —]" in ratio and "no verdict (no interval recorded)" in ratio
    assert not any(f"**{outcome}**" in ratio for outcome in OUTCOMES)


def test_not_run_yet_only_when_the_notebook_never_ran(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    page = render(results)
    lines = [line for line in page.splitlines() if line.startswith("| ") and "not run yet" in line]
    assert len(lines) == len(CLAIMS) + len(MAXIMA)
    (tmp_path / "steering_2_generation.ipynb").write_text("{}")  # executed, but its results file is gone
    with pytest.raises(UserError, match=r"steering_2_generation\.json is missing although steering_2_generation was"):
        render(results)


def _drop(*path: str | int) -> Callable[[dict], None]:
    """A mutation that deletes one key."""
    def mutate(payload: dict) -> None:
        """Delete the key."""
        *parents, last = path
        node = payload
        for key in parents:
            node = node[key]
        del node[last]
    return mutate


def _rename(old: str, new: str, *path: str | int) -> Callable[[dict], None]:
    """A mutation that renames one key."""
    def mutate(payload: dict) -> None:
        """Rename the key."""
        node = payload
        for key in path:
            node = node[key]
        node[new] = node.pop(old)
    return mutate


def _set(value: Any, *path: str | int) -> Callable[[dict], None]:
    """A mutation that replaces one value."""
    def mutate(payload: dict) -> None:
        """Replace the value."""
        *parents, last = path
        node = payload
        for key in parents:
            node = node[key]
        node[last] = value
    return mutate


BROKEN = [
    ("steering_4_retrieval", _drop("metrics", "primary", "ratio_ci"), "key 'metrics.primary.ratio_ci' is missing"),
    ("steering_4_retrieval", _drop("metrics", "primary"), "key 'metrics.primary' is missing"),
    ("steering_4_retrieval", _rename("top1_pre", "top1_before", "metrics", "primary"), "'metrics.primary.top1_pre'"),
    ("steering_4_retrieval", _drop("metrics", "exploratory", "best_ratio_control"),
     "key 'metrics.exploratory.best_ratio_control' is missing"),
    ("steering_4_retrieval", _drop("metrics", "exploratory", "best_ratio", "record", "layer"),
     "key 'metrics.exploratory.best_ratio.record.layer' is missing"),
    ("steering_4_retrieval", _set([1.3], "metrics", "primary", "ratio_ci"), "should be a [low, high] pair"),
    ("steering_4_retrieval", _set([1.9, 1.3], "metrics", "primary", "ratio_ci"), "low bound above its high bound"),
    ("steering_4_retrieval", _set("1.55", "metrics", "primary", "ratio"), "should be a number"),
    ("steering_4_retrieval", _drop("profile"), "key 'profile' is missing"),
    ("steering_2_generation", _rename("diff_vs_k0", "diff_vs_k0s", "metrics", "primary", "targets", 1),
     "key 'metrics.primary.targets[1].diff_vs_k0' is missing (did you mean 'diff_vs_k0s'?)"),
    ("steering_2_generation", _set([], "metrics", "primary", "targets"), "should be a non-empty list of mappings"),
    ("dpo_3_generalization", _drop("metrics", "primary", "id_gap_ci"), "key 'metrics.primary.id_gap_ci' is missing"),
    ("dpo_3_generalization", _drop("metrics", "primary", "train_acc_exrm"), "'metrics.primary.train_acc_exrm'"),
    ("dpo_3_generalization", _set("a, b", "metrics", "primary", "settings"), "should be a non-empty list of strings"),
    ("dpo_3_generalization", _drop("metrics"), "key 'metrics' is missing"),
]


@pytest.mark.parametrize(("name", "mutate", "message"), BROKEN)
def test_a_broken_results_file_is_one_error_naming_file_and_key(tmp_path: Path, name: str, mutate: Callable,
                                                                message: str) -> None:
    write_all(tmp_path)
    payload = copy.deepcopy(FIXTURES[name])
    mutate(payload)
    write(tmp_path, name, payload)
    with pytest.raises(UserError) as caught:
        render(tmp_path)
    text = str(caught.value)
    assert text.startswith(f"{name}.json: ") and message in text and "\n" not in text
    assert f"companion run --only {name} --force" in text


def test_an_unreadable_results_file_is_one_error(tmp_path: Path) -> None:
    write_all(tmp_path)
    (tmp_path / "dpo_3_generalization.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(UserError, match=r"^dpo_3_generalization\.json: cannot read the results file"):
        render(tmp_path)


def test_build_ends_with_one_line_on_a_broken_results_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from companion.publish.cli import main

    results = tmp_path / "book" / "_generated" / "results"
    results.mkdir(parents=True)
    write_all(results)
    payload = copy.deepcopy(RETRIEVAL)
    del payload["metrics"]["primary"]["diff_vs_control"]
    write(results, "steering_4_retrieval", payload)
    assert main(["--root", str(tmp_path), "build"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "steering_4_retrieval.json: key 'metrics.primary.diff_vs_control' is missing" in err
    assert not (tmp_path / "book" / "_generated" / "claims.md").exists()


def test_claims_page_reads_the_smoke_profiles_results(smoke_project) -> None:
    """Every extractor on what the notebooks really record (passes once the notebooks write metrics.primary)."""
    page = render(smoke_project.results)
    assert "not run yet" not in page
    for claim in CLAIMS:
        assert any(claim.text in line for line in page.splitlines() if line.startswith("| "))
    shown = {line.split("|")[5].strip() for line in page.split("## Exploratory")[0].splitlines() if line.startswith("| ")}
    verdicts = {s for s in shown - {"verdict", "---"} if not s.startswith("no verdict (")}
    assert verdicts <= {f"**{o}**" for o in OUTCOMES}
    assert "largest over ordered pairs" in page.split("## Exploratory")[1]


def test_bench_page_renders_rows_or_says_not_run(tmp_path: Path) -> None:
    from companion.publish.book import bench_page

    assert "have not been run" in bench_page(tmp_path)
    rows = [{"name": "AP scoring", "value": "46x", "bar": ">= 100x", "holds": False, "detail": "ours 10 s"},
            {"name": "Batching", "value": "1.3%", "bar": "<= 10%", "holds": True}]
    (tmp_path / "bench.json").write_text(json.dumps(rows))
    page = bench_page(tmp_path)
    assert "| AP scoring | 46x | >= 100x | **no** | ours 10 s |" in page
    assert "| Batching | 1.3% | <= 10% | yes |  |" in page


def test_a_run_without_ood_sets_gets_rows_without_verdicts() -> None:
    from companion.publish.fields import Fields

    fields = Fields({"metrics": {"primary": {"gap_mean_ood": None, "gap_mean_ood_ci": None}}}, "dpo_3_generalization.json")
    estimate = fields.child("metrics").child("primary").estimate("gap_mean_ood")
    assert (estimate.value, estimate.low, estimate.high) == (None, None, None)


def test_paper_b_gets_no_verdict_when_the_models_differ_in_distribution(tmp_path: Path) -> None:
    payload = copy.deepcopy(GENERALIZATION)
    payload["metrics"]["primary"].update(id_gap=0.12, id_gap_ci=[0.05, 0.19])  # EXRM already better in distribution
    write(tmp_path, "dpo_3_generalization", payload)
    mean = row(render(tmp_path), "mean accuracy drop 3%")
    assert "no verdict (premise not met" in mean and not any(f"**{outcome}**" in mean for outcome in OUTCOMES)


def test_paper_b_gets_no_verdict_when_the_models_fit_their_training_pairs_unequally(tmp_path: Path) -> None:
    payload = copy.deepcopy(GENERALIZATION)
    payload["metrics"]["primary"].update(train_acc_exrm=0.62, train_gap=-0.33, train_gap_ci=[-0.42, -0.23])
    write(tmp_path, "dpo_3_generalization", payload)
    page = render(tmp_path)
    for claim in ("mean accuracy drop 3%", "the drop comes with the shift"):
        found = row(page, claim)
        assert "premise not met: the two reward models already differ on their training pairs (gap -0.33" in found
        assert not any(f"**{outcome}**" in found for outcome in OUTCOMES)
    write_all(tmp_path)  # the fixture's fit is equal: a verdict again
    assert any(f"**{outcome}**" in row(render(tmp_path), "mean accuracy drop 3%") for outcome in OUTCOMES)


def test_a_maximum_without_a_usable_cell_is_a_row_not_a_failed_build(tmp_path: Path) -> None:
    payload = copy.deepcopy(RETRIEVAL)
    payload["metrics"]["exploratory"]["best_ratio"].update(ratio=None, ratio_ci=None, record=None)
    write(tmp_path, "steering_4_retrieval", payload)
    best = row(render(tmp_path), "largest over ordered pairs")
    assert "no cell had a top-1 above 0 before forcing" in best and "3.1 [1.2, 8]" in best


def test_paper_b_gets_no_verdict_when_a_model_is_at_chance_in_distribution(tmp_path: Path) -> None:
    payload = copy.deepcopy(GENERALIZATION)
    payload["metrics"]["settings"][0].update(dporm_acc=0.517, dporm_ci=[0.462, 0.572])
    write(tmp_path, "dpo_3_generalization", payload)
    found = row(render(tmp_path), "mean accuracy drop 3%")
    assert "premise not met: DPORM 0.517 [0.462, 0.572] does not rank the in-distribution test pairs above chance" in found
    assert not any(f"**{outcome}**" in found for outcome in OUTCOMES)


def test_rows_say_where_the_effect_holds_only_one_way_or_rests_on_degenerate_samples(tmp_path: Path) -> None:
    generation = copy.deepcopy(GENERATION)
    generation["metrics"]["degenerate"] = {"threshold": 0.5, "ngram": 4, "sampled": [
        {"target": "ru", "degenerate_experts": 0.94, "degenerate_k0": 0.0, "degenerate_control": 0.39},
        {"target": "fr", "degenerate_experts": 0.3, "degenerate_k0": 0.0, "degenerate_control": 0.2}]}
    write_all(tmp_path)
    write(tmp_path, "steering_2_generation", generation)
    page = render(tmp_path)
    ru = row(page, "compared with no forcing", "**ru: 0.94 of the forced samples degenerate**")
    assert "degenerate samples (fewer than half their character 4-grams distinct) 0.94 forced, 0 unforced, 0.39" in ru
    fr = row(page, "compared with no forcing", "**fr**")  # 0.3: below half, no label, the note still gives it
    assert "0.3 forced" in fr
    ratio = row(page, "up to 2x")
    assert "**en→de, de→en only; in the other direction top-1 falls, 0.48 → 0.16**" in ratio
    retrieval = copy.deepcopy(RETRIEVAL)
    retrieval["metrics"]["into_pivot"]["diff_ci"] = [-0.35, 0.01]  # a fall the interval does not show: no label
    write(tmp_path, "steering_4_retrieval", retrieval)
    assert "only; in the other direction" not in render(tmp_path)
