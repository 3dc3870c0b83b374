"""Paper B experiment: train both reward models per seed, score every test set, summarise accuracy and gaps."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
from tqdm import tqdm
from transformers import AutoTokenizer

from companion.core.errors import UserError
from companion.core.stats import bootstrap_ci
from companion.rewards.preferences import BuildSettings, Pair, PreferenceSet, experiment_sets
from companion.rewards.scoring import correct, keep_fitting, reference_logps, score_models
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


def score_runs(s: TrainSettings, seeds: list[int], pairs: list[Pair], sets: list[PreferenceSet],
               batch_size: int = 32) -> tuple[pd.DataFrame, dict[int, dict[str, list[dict]]]]:
    """Train (or load) both models per seed and score every set; reference log-probs are computed once."""
    frames, logs, refs = [], {}, {}
    for seed in tqdm(seeds, desc="seeds"):
        models = trained_models(replace(s, seed=seed), pairs)
        for t in sets:
            if t.name not in refs:  # the reference (adapters off) is the same backbone for every seed
                refs[t.name] = reference_logps(models.policy, models.tokenizer, list(t.pairs), s.max_length, batch_size)
            scores = score_models(models, list(t.pairs), refs[t.name], s.beta, s.max_length, batch_size)
            frames.append(rewards_frame(t, seed, scores))
        logs[seed] = {"dpo": models.dpo_log, "rm": models.rm_log}
    return pd.concat(frames, ignore_index=True), logs


def item_matrix(frame: pd.DataFrame, model: str) -> np.ndarray:
    """(items, seeds) correctness of one model on one set."""
    return frame[frame["model"] == model].pivot(index="item", columns="seed", values="correct").to_numpy()


def item_gaps(frame: pd.DataFrame) -> np.ndarray:
    """Per-item EXRM minus DPORM correctness, each averaged over seeds."""
    return item_matrix(frame, "exrm").mean(axis=1) - item_matrix(frame, "dporm").mean(axis=1)


def summarize(frame: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """One record per set: accuracies of both models with bootstrap 95% CIs over items, and the gap."""
    records = []
    for (name, shift), part in frame.groupby(["set", "shift"], sort=False):
        record = {"name": name, "shift": shift, "n": int(part["item"].nunique()),
                  "seeds": sorted(int(x) for x in part["seed"].unique())}
        for model in MODELS:
            per_item = item_matrix(part, model).mean(axis=1)
            record[f"{model}_acc"] = float(per_item.mean())
            record[f"{model}_ci"] = list(bootstrap_ci(per_item, n_boot=n_boot, seed=seed))
        gaps = item_gaps(part)
        record["gap"] = float(gaps.mean())
        record["gap_ci"] = list(bootstrap_ci(gaps, n_boot=n_boot, seed=seed))
        records.append(record)
    return records


def ood_gaps(frame: pd.DataFrame, settings: list[dict], n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean and max EXRM-minus-DPORM gap over the out-of-distribution settings, with intervals."""
    ood = [r for r in settings if r["shift"] != "id"]
    if not ood:
        return {"gap_mean_ood": None, "gap_mean_ood_ci": None, "gap_max_ood": None, "gap_max_ood_setting": None,
                "gap_max_ood_ci": None}
    per_set = [item_gaps(frame[frame["set"] == r["name"]]) for r in ood]
    worst = max(ood, key=lambda r: r["gap"])
    # pooled item bootstrap; sets of equal size make the pooled mean the mean of the per-set gaps
    return {"gap_mean_ood": float(np.mean([r["gap"] for r in ood])),
            "gap_mean_ood_ci": list(bootstrap_ci(np.concatenate(per_set), n_boot=n_boot, seed=seed)),
            "gap_max_ood": worst["gap"], "gap_max_ood_setting": worst["name"], "gap_max_ood_ci": worst["gap_ci"]}



def fitted_sets(build: BuildSettings, model: str, max_length: int, preference_path: str = "", hub_dataset: str = "",
                test_fraction: float = 0.25) -> tuple[list[Pair], list[PreferenceSet]]:
    """Training pairs and test sets, keeping only pairs whose sequences fit max_length for this tokenizer."""
    train, sets = experiment_sets(build, preference_path, hub_dataset, test_fraction)
    tokenizer = AutoTokenizer.from_pretrained(backbone_folder(model))
    kept = keep_fitting(train, tokenizer, max_length)
    if not kept:
        raise UserError(f"no training pair fits max_length={max_length} tokens; raise max_length or shorten the pairs")
    return kept, [replace(t, pairs=tuple(keep_fitting(list(t.pairs), tokenizer, max_length))) for t in sets]
