"""Paper B experiment: train both reward models per seed, score every test set, summarise accuracy and gaps.

Intervals cover both sources of variance a rerun would change, stratified by set: the pairs (a bootstrap drawing
pairs within each set, the same pairs for both models) and the seeds (training runs: the spread of the per-seed
values with a t quantile, as 3 seeds are too few to resample; `companion.core.stats.SeedItemDraws`). A statistic over
sets (the mean of the out-of-distribution gaps) is computed replicate by replicate and seed by seed. The maximum over
sets keeps a hierarchical bootstrap (seeds, then pairs within each set; `resample_means`), reflected about the estimate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pandas as pd
from tqdm import tqdm
from transformers import AutoTokenizer

from companion.core.errors import UserError
from companion.core.stats import SeedItemDraws, against_chance, maximum_interval, resample_means, seed_item_draws
from companion.core.tables import format_interval
from companion.rewards.baselines import Shortcuts, shortcut_rows
from companion.rewards.preferences import Pair, PreferenceSet, hub_sets, own_file_sets
from companion.rewards.scoring import BATCH_PAIRS, cached_reference_logps, correct, keep_fitting, score_models
from companion.rewards.sentiment_sets import BuildSettings, embedded_sets, embedded_training
from companion.rewards.training import TrainSettings, backbone_folder, trained_models

MODELS = ("dporm", "exrm")
PAPER_CLAIM = {"gap_mean_ood": 0.03, "gap_max_ood": 0.07, "n_ood_settings": 5,
               "source": "Lin et al., Findings of EMNLP 2024"}


def rewards_frame(t: PreferenceSet, seed: int, scores: dict[str, np.ndarray]) -> pd.DataFrame:
    """Long table of one set and seed: one row per (item, model) with both rewards and correctness."""
    frames = [pd.DataFrame({"set": t.name, "shift": t.shift, "item": np.arange(len(values)), "seed": seed,
                            "model": model, "chosen": values[:, 0], "rejected": values[:, 1],
                            "correct": correct(values)}) for model, values in scores.items()]
    return pd.concat(frames, ignore_index=True)


def score_seed(s: TrainSettings, pairs: list[Pair], sets: list[PreferenceSet],
               batch_size: int) -> tuple[list[pd.DataFrame], dict[str, list[dict]]]:
    """One seed's rewards frames (a frame per set) and training logs: both models trained (or loaded) and every set
    scored; the models and their folded copies are released on return, before the next seed trains or loads."""
    models = trained_models(s, pairs)
    frames = []
    for t in sets:
        ref = cached_reference_logps(models, list(t.pairs), s.max_length, batch_size)
        scores = score_models(models, list(t.pairs), ref, s.beta, s.max_length, batch_size)
        frames.append(rewards_frame(t, s.seed, scores))
    return frames, {"dpo": models.dpo_log, "rm": models.rm_log}


def score_runs(s: TrainSettings, seeds: list[int], pairs: list[Pair], sets: list[PreferenceSet],
               batch_size: int = BATCH_PAIRS) -> tuple[pd.DataFrame, dict[int, dict[str, list[dict]]]]:
    """Train (or load) both models per seed and score every set; reference log-probs are computed once per set (the
    reference, adapters off, is the same backbone for every seed) and cached across runs and notebooks. One seed's
    models are held at a time (`score_seed`)."""
    frames, logs = [], {}
    for seed in tqdm(seeds, desc="seeds"):
        seed_frames, logs[seed] = score_seed(replace(s, seed=seed), pairs, sets, batch_size)
        frames.extend(seed_frames)
    return pd.concat(frames, ignore_index=True), logs


def correctness(frame: pd.DataFrame, model: str) -> np.ndarray:
    """(seeds, items) correctness of one model on one set."""
    return frame[frame["model"] == model].pivot(index="seed", columns="item", values="correct").to_numpy()


def groups(frame: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{set: ((seeds, items) correctness of EXRM, of DPORM)}."""
    return {name: (correctness(part, "exrm"), correctness(part, "dporm")) for name, part in frame.groupby("set", sort=False)}


def replicates(frame: pd.DataFrame, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Hierarchical bootstrap: {set: (n_boot, 2) replicate accuracies of (EXRM, DPORM)}, seeds shared across sets."""
    return resample_means(groups(frame), n_boot=n_boot, seed=seed)


def gap(name: str) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """The statistic EXRM minus DPORM accuracy on one set."""
    return lambda means: means[name][:, 0] - means[name][:, 1]


def mean_gap(names: list[str]) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """The statistic EXRM minus DPORM accuracy, averaged over sets (each weighs the same)."""
    return lambda means: np.mean([gap(name)(means) for name in names], axis=0)


def gap_interval(draws: SeedItemDraws, statistic: Callable[[dict[str, np.ndarray]], np.ndarray]) -> list[float]:
    """A gap's 95% interval (pairs and seeds), as a JSON list."""
    return list(draws.interval(statistic, bounds=(-1, 1)))


def summarize(frame: pd.DataFrame, shortcuts: Shortcuts | None = None, sets: list[PreferenceSet] | None = None,
              n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """One record per set: both accuracies and the gap (EXRM minus DPORM) with 95% intervals (pairs and seeds),
    and, given the fitted shortcuts and the sets, the accuracy of the length and bag-of-words rules."""
    draws = seed_item_draws(groups(frame), n_boot, seed)
    rules = {row["name"]: row for row in shortcut_rows(shortcuts, sets or [])} if shortcuts else {}
    records = []
    for (name, shift), part in frame.groupby(["set", "shift"], sort=False):
        exrm, dporm = correctness(part, "exrm"), correctness(part, "dporm")
        record = {"name": name, "shift": shift, "n": int(exrm.shape[1]), "seeds": sorted(int(x) for x in part["seed"].unique()),
                  "dporm_acc": float(dporm.mean()),
                  "dporm_ci": list(draws.interval(lambda m, name=name: m[name][:, 1], bounds=(0, 1))),
                  "exrm_acc": float(exrm.mean()),
                  "exrm_ci": list(draws.interval(lambda m, name=name: m[name][:, 0], bounds=(0, 1))),
                  "gap": float(exrm.mean() - dporm.mean()), "gap_ci": gap_interval(draws, gap(name)),
                  "disagreement": float((exrm != dporm).mean())}
        if name in rules:
            record.update(length_rule_acc=rules[name]["length_rule_acc"], bow_rule_acc=rules[name]["bow_rule_acc"])
        records.append(record)
    return records


def primary(frame: pd.DataFrame, ood: list[str], n_boot: int = 1000, seed: int = 0) -> dict:
    """The headline analysis fixed in the profile: ID gap, mean and max gap over the named OOD sets, the mean OOD gap
    minus the ID gap (what shift adds to any gap the two models already have), training fit.

    The mean is stratified (each OOD set weighs the same); the maximum's interval is that of the maximum itself
    (the largest gap over sets, computed in every replicate, reflected about the estimate: `maximum_interval`), not
    the interval of whichever set was largest.
    """
    tests = frame[frame["shift"] != "train"]
    draws = seed_item_draws(groups(tests), n_boot, seed)
    missing = [name for name in ood if name not in draws.overall]
    if missing:
        raise UserError(f"OOD setting(s) {missing} were not scored; the scored sets are {list(draws.overall)}")
    point = {name: float(gap(name)(draws.overall)[0]) for name in draws.overall}
    in_dist = [name for name in frame.loc[frame["shift"] == "id", "set"].unique()]
    out = {"settings": list(ood), "seeds": sorted(int(x) for x in frame["seed"].unique()),
           "n_pairs": {name: int(frame.loc[frame["set"] == name, "item"].nunique()) for name in draws.overall},
           "gap_mean_ood": None, "gap_mean_ood_ci": None, "gap_max_ood": None, "gap_max_ood_ci": None,
           "gap_max_ood_setting": None, "id_gap": None, "id_gap_ci": None, "gap_ood_minus_id": None,
           "gap_ood_minus_id_ci": None, "train_gap": None, "train_gap_ci": None}
    if ood:
        reps = replicates(tests, n_boot, seed)
        worst = max(ood, key=point.get)
        out.update(gap_mean_ood=float(np.mean([point[name] for name in ood])),
                   gap_mean_ood_ci=gap_interval(draws, mean_gap(ood)), gap_max_ood=point[worst],
                   gap_max_ood_ci=list(maximum_interval(np.max([gap(name)(reps) for name in ood], axis=0), point[worst])),
                   gap_max_ood_setting=worst)
    if in_dist:
        out.update(id_gap=point[in_dist[0]], id_gap_ci=gap_interval(draws, gap(in_dist[0])))
    if ood and in_dist:  # the drop that shift adds: the same replicates and seeds, so the difference is paired
        out.update(gap_ood_minus_id=out["gap_mean_ood"] - out["id_gap"],
                   gap_ood_minus_id_ci=gap_interval(draws, lambda m: mean_gap(ood)(m) - gap(in_dist[0])(m)))
    train = frame[frame["shift"] == "train"]
    for model in MODELS:
        out[f"train_acc_{model}"] = float(correctness(train, model).mean()) if len(train) else None
    if len(train):
        fit = seed_item_draws(groups(train), n_boot, seed)
        name = next(iter(fit.overall))
        out.update(train_gap=float(gap(name)(fit.overall)[0]), train_gap_ci=gap_interval(fit, gap(name)))
    return out


def _fmt(value: float | None, ci: list[float] | None = None) -> str:
    """A signed value with its interval, or n/a."""
    return "n/a" if value is None else f"{value:+.3f}" + (f" {format_interval(ci, signed=True)}" if ci else "")


def claim_table(primary: dict) -> pd.DataFrame:
    """The paper's numbers (from its abstract) beside the primary analysis: OOD mean and max gap, ID gap, the gap
    shift adds, and the fit of both models to their training pairs."""
    fit = [f"{primary[f'train_acc_{m}']:.3f}" if primary[f"train_acc_{m}"] is not None else "n/a" for m in MODELS]
    worst = f" ({primary['gap_max_ood_setting']})" if primary["gap_max_ood_setting"] else ""
    return pd.DataFrame({
        "paper (Lin et al. 2024, abstract)": [f"{PAPER_CLAIM['gap_mean_ood']:+.3f}", f"{PAPER_CLAIM['gap_max_ood']:+.3f}",
                                              "-", "positive ('especially' under shift)", "fits the training set", "-",
                                              "-"],
        "measured here (95% CI)": [_fmt(primary["gap_mean_ood"], primary["gap_mean_ood_ci"]),
                                   _fmt(primary["gap_max_ood"], primary["gap_max_ood_ci"]) + worst,
                                   _fmt(primary["id_gap"], primary["id_gap_ci"]),
                                   _fmt(primary["gap_ood_minus_id"], primary["gap_ood_minus_id_ci"]), *fit,
                                   _fmt(primary["train_gap"], primary["train_gap_ci"])],
    }, index=["mean OOD gap (EXRM - DPORM)", "max OOD gap (exploratory)", "in-distribution gap", "mean OOD gap - ID gap",
              "DPORM accuracy on training pairs", "EXRM accuracy on training pairs", "training-pairs gap (EXRM - DPORM)"])


def _covers_zero(interval: list[float] | None) -> bool:
    """Whether an interval holds zero (a missing one counts as holding it)."""
    return interval is None or interval[0] <= 0 <= interval[1]


def max_gap_note(primary: dict, records: list[dict]) -> str:
    """One paragraph for the page: the max OOD gap is exploratory, and what its interval does (and does not) say beside
    the intervals of the OOD sets themselves."""
    if primary.get("gap_max_ood") is None:
        return ""
    ci, ood = primary["gap_max_ood_ci"], primary["settings"]
    own = {r["name"]: r["gap_ci"] for r in records if r["name"] in ood}
    text = (f"The row \"max OOD gap\" is exploratory: the largest of {len(ood)} noisy gaps is biased upward, and "
            f"its interval ({format_interval(ci, signed=True)}, for {primary['gap_max_ood_setting']}) is a bootstrap "
            "interval for a maximum, reflected about the estimate, not a test of any set.")
    clear = [name for name, interval in own.items() if not _covers_zero(interval)]
    if not _covers_zero(ci) and not clear:
        text += (" Here it excludes zero while every out-of-distribution set's own interval covers zero (the table above): "
                 "an interval for a maximum that excludes zero is not evidence of a gap in any set here.")
    elif clear:
        text += " The sets whose own interval excludes zero: " + ", ".join(
            f"{name} {format_interval(own[name], signed=True)}" for name in clear) + "."
    else:
        text += " Its interval covers zero."
    return text


def _against_chance(record: dict, model: str) -> str:
    """Whether a model's accuracy interval on a set lies above, below or around chance (0.5)."""
    return against_chance(record[f"{model}_ci"])


def fit_note(records: list[dict]) -> str:
    """One paragraph for the page: does each model rank new in-distribution pairs above chance, beside its fit to its
    own training pairs (what a reader needs before reading any out-of-distribution gap)."""
    by_shift = {record["shift"]: record for record in records}
    if "id" not in by_shift or "train" not in by_shift:
        return ""
    held, fit = by_shift["id"], by_shift["train"]
    text = (f"On new pairs of the training distribution ({held['name']}) DPORM ranks {held['dporm_acc']:.3f} "
            f"{format_interval(held['dporm_ci'])} correctly, {_against_chance(held, 'dporm')}, and EXRM "
            f"{held['exrm_acc']:.3f} {format_interval(held['exrm_ci'])}, {_against_chance(held, 'exrm')}; on their own "
            f"training pairs they reach {fit['dporm_acc']:.3f} and {fit['exrm_acc']:.3f}.")
    if all(_against_chance(held, model) != "above chance" for model in MODELS):
        text += (" Neither model has learned a preference that carries to new pairs from the distribution it was "
                 "trained on, so the out-of-distribution gaps on this page compare two rankers at chance: whatever they show, "
                 "they cannot speak to how a learned reward generalises.")
    return text


def seconds_per_step(logs: dict[int, dict[str, list[dict]]], steps: int) -> dict[str, float]:
    """Mean seconds per optimizer step of each trainer over seeds (TRL's train_runtime divided by the steps)."""
    return {key: float(np.mean([[e["train_runtime"] for e in log[key] if "train_runtime" in e][0] / steps
                                for log in logs.values()])) for key in ("dpo", "rm")}


def experiment_sets(build: BuildSettings, preference_path: str = "", hub_dataset: str = "",
                    test_fraction: float = 0.25, tests: bool = True) -> tuple[list[Pair], list[PreferenceSet], str]:
    """Training pairs, test sets and one line saying where they come from: a user's file, a hub dataset or the
    embedded gold-labelled sets (tests=False: the embedded training pairs only, no test set drawn)."""
    if preference_path:
        train, sets = own_file_sets(preference_path, test_fraction, build.seed)
        return train, sets, f"Pairs from {preference_path}: the gold labeller is skipped; the file's labels are the truth."
    if hub_dataset:
        train, sets = hub_sets(hub_dataset, build.n_train, build.n_test, build.seed)
        return train, sets, f"Pairs from {hub_dataset}: the gold labeller is skipped; the dataset's labels are the truth."
    train, sets = embedded_sets(build) if tests else (embedded_training(build), [])
    return train, sets, "Embedded sets: generated and human continuations of review openings, labelled by the gold classifier."


def fitted_sets(build: BuildSettings, model: str, max_length: int, preference_path: str = "", hub_dataset: str = "",
                test_fraction: float = 0.25, tests: bool = True) -> tuple[list[Pair], list[PreferenceSet], str]:
    """Training pairs and test sets (see experiment_sets), keeping only pairs whose sequences fit max_length for this
    tokenizer."""
    train, sets, source = experiment_sets(build, preference_path, hub_dataset, test_fraction, tests)
    tokenizer = AutoTokenizer.from_pretrained(backbone_folder(model))
    kept = keep_fitting(train, tokenizer, max_length)
    if not kept:
        raise UserError(f"no training pair fits max_length={max_length} tokens; raise max_length or shorten the pairs")
    return kept, [replace(t, pairs=tuple(keep_fitting(list(t.pairs), tokenizer, max_length))) for t in sets], source


def primary_for_model(base: TrainSettings, build: BuildSettings, grid: list[float], val_fraction: float,
                      seeds: list[int], ood: list[str], n_fit: int, n_boot: int) -> dict:
    """The whole primary analysis for one backbone (a second scale): sets that fit its tokenizer, a learning rate
    per model, every seed trained and scored, the primary record and the chosen rates."""
    from companion.rewards.tuning import tuned_settings

    train, sets, _ = fitted_sets(build, base.model, base.max_length)
    settings, fit_pairs, _ = tuned_settings(base, train, grid, val_fraction)
    fit_set = PreferenceSet("training pairs", "train", "Pairs both models were trained on.", tuple(fit_pairs[:n_fit]))
    scores = score_runs(settings, seeds, fit_pairs, [fit_set, *sets])[0]
    return {"model": base.model, **primary(scores, ood, n_boot=n_boot),
            "learning_rates": {"dporm": settings.learning_rate, "exrm": settings.rm_learning_rate}}


def _rounded(value: float | None) -> float | None:
    """A value as a table shows it: 3 decimals."""
    return None if value is None else round(value, 3)


def scale_table(by_scale: list[dict]) -> pd.DataFrame:
    """One row per backbone: the in-distribution gap, the mean and max OOD gaps, their mean minus the ID gap (with
    intervals), and the fit."""
    return pd.DataFrame([{"model": r["model"], "ID gap": _fmt(r["id_gap"], r["id_gap_ci"]),
                          "mean OOD gap": _fmt(r["gap_mean_ood"], r["gap_mean_ood_ci"]),
                          "max OOD gap": _fmt(r["gap_max_ood"], r["gap_max_ood_ci"]),
                          "mean OOD gap - ID gap": _fmt(r["gap_ood_minus_id"], r["gap_ood_minus_id_ci"]),
                          "DPORM train acc": _rounded(r["train_acc_dporm"]), "EXRM train acc": _rounded(r["train_acc_exrm"])}
                         for r in by_scale]).set_index("model")
