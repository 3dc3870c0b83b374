"""Paper B summaries (accuracy, gaps over shifted settings) and the notebooks' parameter contract."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import t as student_t

from companion.core.errors import UserError
from companion.rewards import experiments as gen
from companion.rewards import power
from companion.rewards.preferences import PreferenceSet

ROOT = Path(__file__).resolve().parents[1]


def synthetic_frame() -> pd.DataFrame:
    """Two seeds on an id set (both models right) and two OOD sets where EXRM is right more often."""
    frames = []
    for name, shift, dporm, exrm in [("a", "id", [1, 1, 1, 1], [1, 1, 1, 1]),
                                     ("b", "prompt", [1, 0, 1, 0], [1, 1, 1, 0]),
                                     ("c", "response", [0, 0, 1, 1], [1, 1, 1, 1])]:
        t = PreferenceSet(name, shift, "", ())
        for seed in (0, 1):
            scores = {"dporm": np.array([[v, 0.5] for v in dporm], dtype=float),
                      "exrm": np.array([[v, 0.5] for v in exrm], dtype=float)}
            frames.append(gen.rewards_frame(t, seed, scores))
    return pd.concat(frames, ignore_index=True)


PRIMARY_KEYS = {"settings", "seeds", "n_pairs", "gap_mean_ood", "gap_mean_ood_ci", "gap_max_ood", "gap_max_ood_ci",
                "id_gap", "id_gap_ci", "train_acc_dporm", "train_acc_exrm", "train_gap", "train_gap_ci"}


def test_summary_holds_the_contract_and_the_right_numbers():
    frame = synthetic_frame()
    settings = gen.summarize(frame, n_boot=200)
    assert [r["name"] for r in settings] == ["a", "b", "c"]
    for record in settings:
        assert {"name", "shift", "dporm_acc", "exrm_acc", "dporm_ci", "exrm_ci", "seeds", "gap_ci"} <= set(record)
        assert record["seeds"] == [0, 1]
        for model in ("dporm", "exrm"):
            low, high = record[f"{model}_ci"]
            assert low <= record[f"{model}_acc"] <= high
    b = settings[1]
    assert (b["dporm_acc"], b["exrm_acc"], b["gap"], b["disagreement"]) == pytest.approx((0.5, 0.75, 0.25, 0.25))
    primary = gen.primary(frame, ["b", "c"], n_boot=200)
    assert PRIMARY_KEYS <= set(primary)
    assert primary["gap_mean_ood"] == pytest.approx((0.25 + 0.5) / 2)
    assert primary["gap_max_ood"] == pytest.approx(0.5) and primary["gap_max_ood_setting"] == "c"
    assert primary["id_gap"] == 0.0 and primary["n_pairs"] == {"a": 4, "b": 4, "c": 4}
    assert primary["gap_mean_ood_ci"][0] <= primary["gap_mean_ood"] <= primary["gap_mean_ood_ci"][1]
    json.dumps(settings), json.dumps(primary)  # JSON-ready


def test_intervals_equal_a_direct_computation():
    """Pairs drawn within each set (every seed kept) plus the per-seed spread with a t quantile; the maximum over sets
    from a hierarchical bootstrap (seeds drawn once per replicate for every set, then pairs), reflected."""
    frame, n_boot, seed = synthetic_frame(), 300, 7
    frame.loc[(frame["seed"] == 1) & (frame["set"] == "b") & (frame["item"] == 1) & (frame["model"] == "dporm"),
              "correct"] = 1.0  # the seeds disagree on one pair: the seed part of the interval is not 0
    primary = gen.primary(frame, ["b", "c"], n_boot=n_boot, seed=seed)
    arrays = {name: {model: gen.correctness(part, model) for model in ("exrm", "dporm")}
              for name, part in frame.groupby("set", sort=False)}

    def direct(weights: dict[str, float]) -> list[float]:
        """The interval of a weighted sum of the sets' gaps, computed directly."""
        draws = np.random.default_rng(seed)
        items = {name: draws.integers(0, 4, size=(n_boot, 4)) for name in arrays}
        reps = [sum(w * (arrays[n]["exrm"][:, items[n][r]].mean() - arrays[n]["dporm"][:, items[n][r]].mean())
                    for n, w in weights.items()) for r in range(n_boot)]
        per_seed = [sum(w * (arrays[n]["exrm"][s].mean() - arrays[n]["dporm"][s].mean()) for n, w in weights.items())
                    for s in range(2)]
        v_items, v_seeds = np.var(reps, ddof=1), np.var(per_seed, ddof=1) / 2
        dof = (v_items + v_seeds) ** 2 / v_seeds ** 2 if v_seeds else np.inf
        half = student_t.ppf(0.975, dof) * np.sqrt(v_items + v_seeds)
        return [max(np.mean(per_seed) - half, -1), min(np.mean(per_seed) + half, 1)]

    assert primary["gap_mean_ood_ci"] == pytest.approx(direct({"b": 0.5, "c": 0.5}))
    assert primary["id_gap_ci"] == pytest.approx(direct({"a": 1.0}))
    assert primary["gap_ood_minus_id"] == pytest.approx(primary["gap_mean_ood"] - primary["id_gap"])
    assert primary["gap_ood_minus_id_ci"] == pytest.approx(direct({"b": 0.5, "c": 0.5, "a": -1.0}))
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, 2, size=(n_boot, 2))
    items = {name: rng.integers(0, 4, size=(n_boot, 4)) for name in arrays}
    gaps = {name: np.array([np.mean([[arrays[name]["exrm"][s, i] - arrays[name]["dporm"][s, i] for i in items[name][r]]
                                     for s in seeds[r]]) for r in range(n_boot)]) for name in ("b", "c")}
    low, high = np.quantile(np.maximum(gaps["b"], gaps["c"]), [0.025, 0.975])  # reflected: the maximum's upward bias
    assert primary["gap_max_ood_ci"] == pytest.approx([2 * primary["gap_max_ood"] - high, 2 * primary["gap_max_ood"] - low])


def test_no_ood_settings_give_empty_gaps():
    frame = synthetic_frame()
    primary = gen.primary(frame, [], n_boot=50)
    assert primary["gap_mean_ood"] is None and primary["id_gap"] == 0.0 and primary["gap_ood_minus_id"] is None
    with pytest.raises(UserError, match="not scored"):
        gen.primary(frame, ["nowhere"], n_boot=50)


def test_set_size_for_the_target_half_width():
    n = power.pairs_for_half_width(0.3, 5, 0.03)
    assert 1.96 * np.sqrt(0.3 / (5 * n)) <= 0.03 < 1.96 * np.sqrt(0.3 / (5 * (n - 1)))


def parameter_names(notebook: Path) -> set[str]:
    """Names assigned in the cell tagged 'parameters'."""
    cells = json.loads(notebook.read_text())["cells"]
    source = "".join(next(c for c in cells if "parameters" in c["metadata"].get("tags", []))["source"])
    return {node.target.id if isinstance(node, ast.AnnAssign) else node.targets[0].id for node in ast.parse(source).body
            if isinstance(node, (ast.Assign, ast.AnnAssign))}


@pytest.mark.parametrize("profile", ["smoke", "default", "paper"])
def test_profiles_only_set_existing_parameters(profile):
    notebooks = yaml.safe_load((ROOT / "notebooks" / "profiles" / f"paper_b.{profile}.yaml").read_text())["notebooks"]
    for name, values in notebooks.items():
        path = ROOT / "notebooks" / "paper_b" / f"{name}.ipynb"
        assert path.exists(), name
        assert set(values) <= parameter_names(path), f"{profile}/{name}: {set(values) - parameter_names(path)}"


def test_notebooks_are_committed_without_outputs():
    for path in sorted((ROOT / "notebooks" / "paper_b").glob("dpo_*.ipynb")):
        notebook = json.loads(path.read_text())
        assert notebook["metadata"]["kernelspec"]["name"] == "python3"
        assert all(not c.get("outputs") for c in notebook["cells"] if c["cell_type"] == "code"), path.name
        assert notebook["cells"][0]["cell_type"] == "markdown"
        assert "results.record(" in "".join([c for c in notebook["cells"] if c["cell_type"] == "code"][-1]["source"])


PROGRESS_CALLS = ("fitted_sets(", "gold_labeller(", "tuned_settings(", "score_runs(", "primary_for_model(",
                  "iterative_round(", "AutoTokenizer.from_pretrained(", "start_rule_accuracy(", "sft_backbone(")


def test_cells_that_sample_train_or_load_models_keep_their_progress_off_the_page():
    """Their stderr is progress bars (sampling, dataset mapping, weight loading, training): the page drops it."""
    for path in sorted((ROOT / "notebooks" / "paper_b").glob("dpo_*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            source = "".join(cell["source"])
            if cell["cell_type"] == "code" and any(call in source for call in PROGRESS_CALLS):
                assert "remove-stderr" in cell["metadata"].get("tags", []), (path.name, source[:80])


def test_each_model_keeps_the_rate_with_the_lowest_validation_loss():
    from companion.rewards.tuning import chosen_rates, preference_loss, split_validation

    search = pd.DataFrame({"model": ["dporm"] * 3 + ["exrm"] * 3, "learning_rate": [3e-4, 1e-3, 3e-3] * 2,
                           "val_loss": [0.69, 0.60, 0.60, 0.70, 0.71, 0.65],
                           "val_acc": [0.6, 0.7, 0.7, 0.5, 0.5, 0.5]})  # EXRM's accuracy ties: the loss decides
    assert chosen_rates(search) == {"dporm": 1e-3, "exrm": 3e-3}
    rewards = np.array([[1.0, 0.0], [0.0, 2.0]])  # margins +1 and -2
    assert preference_loss(rewards) == pytest.approx(np.mean([np.log1p(np.exp(-1.0)), np.log1p(np.exp(2.0))]))
    fit, val = split_validation(list(range(20)), 0.1)
    assert fit == list(range(18)) and val == [18, 19]
    with pytest.raises(UserError, match="val_fraction"):
        split_validation([1, 2], 0.9)


@pytest.mark.parametrize("with_ood", [True, False])
def test_gap_figure_names_sets_on_the_y_axis_and_keeps_the_legend_off_the_data(with_ood):
    import matplotlib

    matplotlib.use("Agg")
    from companion.rewards.figures import gap_by_shift

    frame = synthetic_frame()
    settings = gen.summarize(frame, n_boot=50)
    primary = gen.primary(frame, ["b", "c"] if with_ood else [], n_boot=50)
    figure = gap_by_shift(settings, primary, gen.PAPER_CLAIM["gap_mean_ood"])
    ax = figure.figure.axes[0]
    rows = sorted(ax.get_yticklabels(), key=lambda t: -t.get_position()[1])
    assert [t.get_text() for t in rows] == ["a", "b", "c"], "one row per set, top to bottom in the order of the sets"
    assert "percentage points" in ax.get_xlabel()
    anchor = ax.get_legend().get_bbox_to_anchor().transformed(ax.transAxes.inverted())
    assert anchor.x0 >= 1.0, "the legend sits to the right of the data"
    assert ("grey band" in figure.caption) == with_ood, "the caption mentions the band only when it is drawn"


def test_fit_note_says_when_neither_model_beats_chance_in_distribution():
    held = {"name": "in-distribution", "shift": "id", "dporm_acc": 0.53, "dporm_ci": [0.47, 0.59],
            "exrm_acc": 0.49, "exrm_ci": [0.43, 0.55]}
    fit = {"name": "training pairs", "shift": "train", "dporm_acc": 0.95, "dporm_ci": [0.9, 0.99],
           "exrm_acc": 0.62, "exrm_ci": [0.54, 0.71]}
    note = gen.fit_note([fit, held])
    assert "DPORM ranks 0.530 [0.470, 0.590] correctly, not distinguishable from chance" in note
    assert "they reach 0.950 and 0.620" in note and "two rankers at chance" in note
    learned = gen.fit_note([fit, {**held, "exrm_acc": 0.7, "exrm_ci": [0.64, 0.76]}])
    assert "EXRM 0.700 [0.640, 0.760], above chance" in learned and "at chance" not in learned
    assert gen.fit_note([held]) == ""


def test_primary_records_the_training_pairs_gap_with_its_interval():
    frame = synthetic_frame()
    train = frame[frame["set"] == "a"].assign(set="training pairs", shift="train")
    train.loc[(train["model"] == "exrm") & (train["item"] < 2), "correct"] = 0.0  # EXRM fits 2 of 4 training pairs
    primary = gen.primary(pd.concat([frame, train], ignore_index=True), ["b", "c"], n_boot=200)
    assert primary["train_acc_dporm"] == 1.0 and primary["train_acc_exrm"] == 0.5
    assert primary["train_gap"] == pytest.approx(-0.5)
    assert primary["train_gap_ci"][0] <= -0.5 <= primary["train_gap_ci"][1]
    assert primary["id_gap"] == 0.0  # the training pairs are not a test set


def test_search_note_says_whether_the_chosen_loss_beats_no_preference_and_which_edge_of_the_grid():
    from companion.rewards.tuning import search_note

    search = pd.DataFrame({"model": ["dporm", "dporm", "exrm", "exrm"], "learning_rate": [1e-3, 3e-3] * 2,
                           "val_loss": [0.65, 0.6, 0.71, 0.75], "val_acc": [0.6, 0.7, 0.46, 0.46]})
    note = search_note(search, {"dporm": 3e-3, "exrm": 1e-3})
    assert ("DPORM keeps 0.003 (validation loss 0.600, below log 2 = 0.693, so its margins lean the right way on the "
            "held-out pairs; the top of the grid, so a larger rate was not tried)") in note
    assert ("EXRM keeps 0.001 (validation loss 0.710, not below log 2 = 0.693, so on the held-out pairs it does no "
            "better than preferring neither response; the bottom of the grid, so a smaller rate was not tried)") in note
    three = pd.concat([search, pd.DataFrame({"model": ["exrm"], "learning_rate": [3e-4], "val_loss": [0.8],
                                             "val_acc": [0.4]})], ignore_index=True)
    inside = search_note(three, {"dporm": 3e-3, "exrm": 1e-3})
    assert "the top of the grid" in inside, "DPORM's grid is still 1e-3, 3e-3: its edge is its own"
    assert "EXRM keeps 0.001 (validation loss 0.710, not below log 2" in inside and "bottom" not in inside


def test_loss_trend_reads_the_direction_from_the_search():
    from companion.rewards.tuning import loss_trend

    search = pd.DataFrame({"model": ["dporm", "exrm", "dporm", "exrm"], "learning_rate": [1e-3, 1e-3, 3e-3, 3e-3],
                           "val_loss": [0.706, 0.724, 0.809, 0.669], "val_acc": [0.5, 0.5, 0.42, 0.69]})
    note = loss_trend(search)
    assert "DPORM's validation loss rose as the rate rose (0.706 at 0.001, 0.809 at 0.003)" in note
    assert "EXRM's validation loss fell as the rate rose (0.724 at 0.001, 0.669 at 0.003)" in note
    three = pd.DataFrame({"model": ["exrm"] * 3, "learning_rate": [3e-4, 1e-3, 3e-3], "val_loss": [0.7, 0.6, 0.65],
                          "val_acc": [0.5] * 3})
    assert "EXRM's validation loss was lowest at 0.001" in loss_trend(three)


def test_passes_find_the_epoch_boundary_and_the_reshown_pairs():
    from companion.rewards.fit import Passes, once_seen_floor

    p = Passes(230, 8, 32)
    assert (p.first_pass_steps, p.last_batch, p.repeated) == (29, 6, 24)
    assert Passes(230, 8, 20).repeated == 0 and Passes(10, 8, 100).repeated == 10
    assert once_seen_floor(0.9, 64, 24) == pytest.approx((0.9 * 64 - 24) / 40)
    assert once_seen_floor(0.2, 64, 24) == 0.0 and once_seen_floor(1.0, 20, 24) is None


def fit_logs(first: float, later: float) -> dict:
    """Two seeds of training logs: batch accuracy `first` over steps 1-29, `later` over steps 30-32 (both models)."""
    def log(metric: str) -> list[dict]:
        return [{"step": step, "loss": 0.6, metric: first if step <= 29 else later} for step in range(1, 33)]
    return {seed: {"dpo": log("rewards/accuracies"), "rm": log("accuracy")} for seed in (0, 1)}


def test_fit_note_states_the_premise_and_the_epoch_boundary_from_the_numbers():
    from companion.rewards.fit import Passes, fit_note

    fit = {"n": 64, "dporm_acc": 0.932, "dporm_ci": [0.892, 0.973], "exrm_acc": 0.760, "exrm_ci": [0.643, 0.878],
           "gap": -0.172, "gap_ci": [-0.299, -0.045]}
    note = fit_note(fit, Passes(230, 8, 32), fit_logs(0.45, 1.0))
    assert "EXRM fits the training pairs clearly worse than DPORM" in note and "does not hold here" in note
    assert "-0.172 [-0.299, -0.045]" in note
    assert "the first pass ends at step 29 and steps 30-32 re-show 24 pairs" in note
    assert "DPORM averages 0.450" in note and "DPORM 1.000" in note and "jumps by at least 0.2" in note
    assert f"DPORM ranks at least {(0.932 * 64 - 24) / 40:.3f} correctly" in note
    alike = fit_note({**fit, "gap_ci": [-0.2, 0.05]}, Passes(230, 8, 20), fit_logs(0.5, 0.5))
    assert "no difference in fit to the training pairs was detected" in alike and "part 3" in alike
    assert "no pair is shown twice" in alike and "jumps" not in alike


def test_max_gap_note_marks_the_maximum_exploratory_and_reads_the_sets_own_intervals():
    primary = {"settings": ["b", "c"], "gap_max_ood": -0.012, "gap_max_ood_ci": [-0.127, -0.001], "gap_max_ood_setting": "c"}
    records = [{"name": "a", "gap_ci": [0.01, 0.2]}, {"name": "b", "gap_ci": [-0.1, 0.05]}, {"name": "c", "gap_ci": [-0.2, 0.15]}]
    note = gen.max_gap_note(primary, records)
    assert "exploratory" in note and "[-0.127, -0.001]" in note and "is not evidence of a gap in any set here" in note
    records[1]["gap_ci"] = [0.01, 0.05]
    assert "excludes zero: b [+0.010, +0.050]" in gen.max_gap_note(primary, records)
    assert gen.max_gap_note({**primary, "gap_max_ood": None}, records) == ""


def test_power_note_explains_a_met_target_with_a_larger_disagreement_than_assumed():
    primary = {"settings": ["b", "c"], "gap_mean_ood_ci": [-0.056, 0.004], "n_pairs": {"b": 650, "c": 650}}
    records = [{"name": "b", "disagreement": 0.47}, {"name": "c", "disagreement": 0.50}]
    note = power.power_note(records, primary, 3)
    single = 1.959964 * np.sqrt(0.485 / 1300)
    assert "d = 0.3" in note and "0.47 to 0.50" in note and f"about {single:.3f}" in note
    assert "target is met although d is larger than assumed" in note and "averaged over 3 seeds" in note
    assert "target is missed" in power.power_note(records, {**primary, "gap_mean_ood_ci": [-0.1, 0.0]}, 3)


def test_agreement_note_reads_each_labeller_against_chance():
    from companion.rewards.iterative import agreement_note

    record = {"n_agreement": 91, "agreement": {"dporm": 0.637, "exrm": 0.593},
              "agreement_ci": {"dporm": [0.538, 0.736], "exrm": [0.495, 0.692]}}
    note = agreement_note(record)
    assert "DPORM 0.637 [0.538, 0.736], above chance" in note and "EXRM 0.593 [0.495, 0.692], not distinguishable" in note
    assert agreement_note({**record, "n_agreement": 0}) == ""


def test_iterative_figure_keeps_each_models_colour_in_both_panels():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.colors import to_rgb

    from companion.rewards.figures import iterative_round

    record = {"agreement": {"dporm": 0.6, "exrm": 0.55}, "agreement_ci": {"dporm": [0.5, 0.7], "exrm": [0.45, 0.65]},
              "gold_reward": {"policy": 0.1, "next (DPORM labels)": 0.0, "next (EXRM labels)": 0.15},
              "gold_reward_ci": {"policy": [0, 0.2], "next (DPORM labels)": [-0.1, 0.1], "next (EXRM labels)": [0.05, 0.25]}}
    left, right = iterative_round(record).figure.axes[:2]

    def colours(ax):
        return [to_rgb(line.get_color()) for line in ax.get_lines() if line.get_marker() == "o"]

    assert colours(left)[:2] == colours(right)[1:3], "DPORM's and EXRM's colours mark their next policies"
    assert colours(right)[0] not in colours(left), "the first policy has a colour of its own"
