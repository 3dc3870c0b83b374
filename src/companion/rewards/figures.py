"""Paper B figures, each a BookFigure: accuracy per set, gap against shift, training curves, the learning-rate search,
sequence lengths."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from companion.core.style import BookFigure, label, palette
from companion.rewards.training import train_curve

NAMES = {"dporm": "DPORM (implicit, DPO)", "exrm": "EXRM (explicit, Bradley-Terry)"}
TRAIN_METRICS = {"dpo": ("dporm", "rewards/accuracies"), "rm": ("exrm", "accuracy")}
SHIFT_ORDER = ("train", "id", "prompt", "response", "prompt+response")


def _interval(value: float, ci: list[float]) -> list[list[float]]:
    """Matplotlib's asymmetric error-bar format for one value and its interval."""
    return [[value - ci[0]], [ci[1] - value]]


def accuracy_by_setting(settings: list[dict], name: str = "dpo-accuracy",
                        title: str = "Preference accuracy per test set") -> BookFigure:
    """Both models' accuracy per set with hierarchical 95% intervals, the two shortcut rules, and chance."""
    fig, ax = plt.subplots(figsize=(max(5.0, 1.5 * len(settings) + 2), 4.5))
    colours = palette([*NAMES, "length rule", "bag-of-words rule"])
    x = np.arange(len(settings))
    for offset, model in zip((-0.12, 0.12), NAMES):
        for i, record in enumerate(settings):
            value = record[f"{model}_acc"]
            ax.errorbar(x[i] + offset, value, yerr=_interval(value, record[f"{model}_ci"]), fmt="o", capsize=3,
                        color=colours[model], label=NAMES[model] if i == 0 else None)
    for key, marker, rule in (("length_rule_acc", "_", "length rule"), ("bow_rule_acc", "x", "bag-of-words rule")):
        points = [(i, r[key]) for i, r in enumerate(settings) if key in r]
        if points:
            ax.scatter(*zip(*points), marker=marker, s=120, color=colours[rule], label=f"{rule} (ignores the prompt)")
    ax.axhline(0.5, color="grey", linestyle=":", label="chance")
    ax.set_xticks(x, [f"{r['name']}\n({r['shift']})" for r in settings], rotation=20, ha="right")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left", fontsize="small")
    label(ax, title, "test set (shift)", "accuracy (chosen scored above rejected)")
    caption = (f"{title}: share of pairs whose chosen response each reward model scores higher, averaged over seeds, "
               "with 95% hierarchical bootstrap intervals (seeds, then pairs); the two shortcut rules are fitted on "
               "the training pairs and never read the prompt.")
    alt = "Dot plot of DPORM and EXRM accuracy per test set with interval bars, shortcut-rule markers and a chance line."
    return BookFigure(fig, name, caption, alt)


def gap_by_shift(settings: list[dict], primary: dict, paper_mean: float) -> BookFigure:
    """EXRM minus DPORM accuracy per set, grouped by kind of shift, beside the pooled OOD gap and the paper's mean."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    shifts = [s for s in SHIFT_ORDER if s != "train" and any(r["shift"] == s for r in settings)]
    colours = palette(shifts)
    for i, shift in enumerate(shifts):
        group = [r for r in settings if r["shift"] == shift]
        for j, record in enumerate(group):
            xpos = i + (j - (len(group) - 1) / 2) * 0.2
            ax.errorbar(xpos, record["gap"], yerr=_interval(record["gap"], record["gap_ci"]), fmt="o", capsize=3,
                        color=colours[shift])
            ax.annotate(record["name"], (xpos, record["gap"]), textcoords="offset points",
                        xytext=(6, 4 if j % 2 == 0 else -12), fontsize="x-small")
    if primary.get("gap_mean_ood") is not None:
        ax.axhspan(*primary["gap_mean_ood_ci"], color="black", alpha=0.08, label="mean OOD gap, 95% interval")
        ax.axhline(primary["gap_mean_ood"], color="black", linewidth=1, label="mean OOD gap (measured)")
    ax.axhline(0.0, color="grey", linestyle=":", label="no gap")
    ax.axhline(paper_mean, color="black", linestyle="--", label=f"paper: mean OOD gap {paper_mean:+.0%}")
    ax.set_xticks(range(len(shifts)), shifts)
    ax.legend(loc="best", fontsize="small")
    label(ax, "Gap against shift (EXRM minus DPORM)", "kind of shift", "accuracy gap (positive: EXRM better)")
    caption = ("EXRM minus DPORM accuracy per test set with 95% hierarchical intervals, grouped by the kind of shift; "
               "the band is the stratified mean over the out-of-distribution sets fixed in the profile, the dashed "
               "line the paper's mean out-of-distribution gap.")
    alt = "Accuracy gap per test set grouped by shift kind, with the measured mean OOD gap band and the paper's value."
    return BookFigure(fig, "dpo-gap", caption, alt)


def training_curves(logs: dict[int, dict[str, list[dict]]]) -> BookFigure:
    """Training loss and batch preference accuracy per step, both models, one line per seed."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colours = palette(list(NAMES))
    for seed, seed_logs in logs.items():
        for key, (model, accuracy_metric) in TRAIN_METRICS.items():
            for ax, metric in zip(axes, ("loss", accuracy_metric)):
                points = train_curve(seed_logs[key], metric)
                if points:
                    steps, values = zip(*points)
                    ax.plot(steps, values, color=colours[model], alpha=0.7,
                            label=NAMES[model] if seed == min(logs) else None)
    label(axes[0], "Training loss", "optimizer step", "loss (nats)")
    label(axes[1], "Accuracy on each training batch", "optimizer step", "accuracy")
    axes[0].axhline(np.log(2), color="grey", linestyle=":", label="log 2 (no preference)")
    axes[1].axhline(0.5, color="grey", linestyle=":", label="chance")
    for ax in axes:
        ax.legend(fontsize="small")
    caption = ("Training loss and accuracy on each training batch as TRL logged them (rewards/accuracies for DPO, "
               "accuracy for the reward model), one line per seed.")
    alt = "Two line plots over optimizer steps: loss and batch accuracy of both reward models for every seed."
    return BookFigure(fig, "dpo-training-curves", caption, alt)


def learning_rate_search(search: pd.DataFrame, chosen: dict[str, float]) -> BookFigure:
    """Validation accuracy of each model against the learning rate, the chosen rate marked."""
    fig, ax = plt.subplots(figsize=(6, 4))
    colours = palette(list(NAMES))
    for model, part in search.groupby("model"):
        ax.plot(part["learning_rate"], part["val_acc"], marker="o", color=colours[model], label=NAMES[model])
        best = part[part["learning_rate"] == chosen[model]]
        ax.scatter(best["learning_rate"], best["val_acc"], s=160, facecolors="none", edgecolors=colours[model])
    ax.set_xscale("log")
    ax.axhline(0.5, color="grey", linestyle=":", label="chance")
    ax.legend(fontsize="small")
    label(ax, "Learning rate chosen per model", "learning rate (log scale)", "accuracy on held-out training pairs")
    caption = ("Accuracy on held-out training pairs of each model trained at each learning rate of the grid (first "
               "seed); the circled rate is the one each model keeps.")
    alt = "Line plot of validation accuracy against learning rate for DPORM and EXRM with the chosen rates circled."
    return BookFigure(fig, "dpo-learning-rate", caption, alt)


def sequence_lengths(lengths: pd.DataFrame, max_length: int) -> BookFigure:
    """Token counts of prompt + response per set (chosen and rejected), with the max_length budget."""
    fig, ax = plt.subplots(figsize=(10, 4))
    sns.boxplot(data=lengths, x="set", y="tokens", hue="response", ax=ax)
    ax.axhline(max_length, color="black", linestyle="--", label="max_length")
    ax.legend(fontsize="small")
    ax.tick_params(axis="x", rotation=20)
    label(ax, "Tokens per prompt + response", "set", "tokens")
    caption = ("Tokens of prompt plus response for every pair, chosen and rejected side by side, as both trainers "
               "see them; pairs over max_length are left out.")
    alt = "Box plots of token counts per set for chosen and rejected responses with a dashed max_length line."
    return BookFigure(fig, "dpo-lengths", caption, alt)


def iterative_round(record: dict) -> BookFigure:
    """Agreement of each labeller with gold, and the gold reward of the policy and of each next policy."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, colour_keys in ((axes[0], "agreement", ["dporm", "exrm"]), (axes[1], "gold_reward", None)):
        names = list(record[key])
        colours = palette(colour_keys or names)
        for i, name in enumerate(names):
            value, ci = record[key][name], record[f"{key}_ci"][name]
            ax.errorbar(i, value, yerr=_interval(value, ci), fmt="o", capsize=4, color=colours[name])
        ax.set_xticks(range(len(names)), [NAMES.get(n, n) for n in names], rotation=15, ha="right")
    axes[0].axhline(0.5, color="grey", linestyle=":", label="chance")
    axes[0].legend(fontsize="small")
    label(axes[0], "Labelling fresh policy samples", "labeller", "agreement with the gold labeller")
    label(axes[1], "Gold reward of the next policy", "policy", "gold log-odds of the asked sentiment")
    caption = ("One round of iterative DPO: left, how often each reward model picks the same ending as the gold "
               "labeller on fresh samples of the policy; right, the gold reward of samples on held-out prompts from "
               "the policy and from the next policies trained on each labeller's pairs (95% bootstrap intervals).")
    alt = "Two dot plots with intervals: labeller agreement with gold, and gold reward per policy."
    return BookFigure(fig, "dpo-iterative", caption, alt)
