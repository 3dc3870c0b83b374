"""Paper B figures, each a BookFigure: accuracy per set, gap against shift, training curves, the learning-rate search,
sequence lengths."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from companion.core.style import BookFigure, label, palette
from companion.rewards.preferences import SHIFT_NAMES
from companion.rewards.training import train_curve

NAMES = {"dporm": "DPORM (implicit, DPO)", "exrm": "EXRM (explicit, Bradley-Terry)"}
TRAIN_METRICS = {"dpo": ("dporm", "rewards/accuracies"), "rm": ("exrm", "accuracy")}
SHIFT_ORDER = ("train", "id", "prompt", "response", "prompt+response")


def _interval(value: float, ci: list[float]) -> list[list[float]]:
    """Matplotlib's asymmetric error-bar format for one value and its interval."""
    return [[value - ci[0]], [ci[1] - value]]


def accuracy_by_setting(settings: list[dict], name: str = "dpo-accuracy",
                        title: str = "Preference accuracy per test set") -> BookFigure:
    """Both models' accuracy per set with 95% intervals (pairs and seeds), the two shortcut rules, and chance; one row
    per set, so set names are read on the y axis, and the legend below the data."""
    fig, ax = plt.subplots(figsize=(8.5, 2.6 + 0.45 * len(settings)), layout="constrained")  # legend outside, below
    colours = palette([*NAMES, "length rule", "bag-of-words rule"])
    y = np.arange(len(settings))[::-1]  # the first set on top
    for offset, model in zip((0.12, -0.12), NAMES):
        for i, record in enumerate(settings):
            value = record[f"{model}_acc"]
            ax.errorbar(value, y[i] + offset, xerr=_interval(value, record[f"{model}_ci"]), fmt="o", capsize=3,
                        color=colours[model], label=NAMES[model] if i == 0 else None)
    for key, marker, rule in (("length_rule_acc", "|", "length rule"), ("bow_rule_acc", "x", "bag-of-words rule")):
        points = [(r[key], yy) for yy, r in zip(y, settings) if r.get(key) is not None]
        if points:
            ax.scatter(*zip(*points), marker=marker, s=120, color=colours[rule], label=f"{rule} (ignores the prompt)")
    ax.axvline(0.5, color="grey", linestyle=":", label="chance")
    ax.set_yticks(y, [f"{r['name']} ({r['shift']})" for r in settings])
    ax.set_xlim(0, 1.02)
    ax.set_ylim(-0.6, len(settings) - 0.4)
    ax.grid(axis="y", visible=False)
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: (labels[i] not in NAMES.values(), labels[i] == "chance"))  # models first
    fig.legend([handles[i] for i in order], [labels[i] for i in order], fontsize="small", loc="outside lower center",
               ncol=3)
    label(ax, title, "accuracy (share of pairs whose chosen response scores above the rejected one)", "test set (shift)")
    rules = any(r.get("length_rule_acc") is not None or r.get("bow_rule_acc") is not None for r in settings)
    caption = (f"{title}: share of pairs whose chosen response each reward model scores higher, averaged over seeds, "
               "with 95% intervals (pairs by bootstrap, seeds by a t quantile), and chance (dotted)"
               + ("; the two shortcut rules are fitted on all the training pairs and never read the prompt." if rules else "."))
    alt = ("Horizontal dot plot: one row per test set, DPORM and EXRM accuracy on the x axis with interval bars"
           + (", shortcut-rule markers" if rules else "") + " and a chance line at 0.5.")
    return BookFigure(fig, name, caption, alt)


def _points(value: float, _position: object = None) -> str:
    """An accuracy difference (a share of pairs) as signed percentage points."""
    return f"{100 * value:+.0f}" if round(100 * value) else "0"


def gap_by_shift(settings: list[dict], primary: dict, paper_mean: float) -> BookFigure:
    """EXRM minus DPORM accuracy per set, one row per set grouped by kind of shift, beside the pooled OOD gap and
    the paper's mean; horizontal, so set names are read on the y axis and the legend sits outside the data."""
    shifts = [s for s in SHIFT_ORDER if s != "train" and any(r["shift"] == s for r in settings)]
    rows = [r for shift in shifts for r in settings if r["shift"] == shift]
    fig, ax = plt.subplots(figsize=(8.5, 1.6 + 0.42 * len(rows)))
    colours = palette(shifts)
    y = np.arange(len(rows))[::-1]  # the first set (in distribution) on top
    for shift in shifts:
        mine = [(yy, r) for yy, r in zip(y, rows) if r["shift"] == shift]
        gaps = np.array([r["gap"] for _, r in mine])
        errors = np.array([[r["gap"] - r["gap_ci"][0], r["gap_ci"][1] - r["gap"]] for _, r in mine]).T
        ax.errorbar(gaps, [yy for yy, _ in mine], xerr=errors, fmt="o", capsize=3, color=colours[shift],
                    label=SHIFT_NAMES.get(shift, shift))
    for boundary in np.cumsum([sum(r["shift"] == s for r in rows) for s in shifts])[:-1]:
        ax.axhline(len(rows) - boundary - 0.5, color="lightgrey", linewidth=0.8)
    measured = primary.get("gap_mean_ood") is not None
    if measured:
        ax.axvspan(*primary["gap_mean_ood_ci"], color="black", alpha=0.08, label="mean OOD gap, 95% interval")
        ax.axvline(primary["gap_mean_ood"], color="black", linewidth=1, label="mean OOD gap (measured)")
    ax.axvline(0.0, color="grey", linestyle=":", label="no gap")
    ax.axvline(paper_mean, color="black", linestyle="--", label=f"paper: mean OOD gap {_points(paper_mean)} points")
    ax.set_yticks(y, [r["name"] for r in rows])
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.grid(axis="y", visible=False)
    ax.xaxis.set_major_formatter(_points)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize="small")
    label(ax, "Gap against shift (EXRM minus DPORM)",
          "accuracy gap, EXRM minus DPORM (percentage points; positive: EXRM better)", "test set")
    band = ("the grey band and solid line are the mean over the out-of-distribution sets fixed in the profile "
            "(each set weighs the same) with its 95% interval, " if measured else
            "no out-of-distribution set is in this run's primary analysis, so no mean is drawn; ")
    caption = ("EXRM minus DPORM accuracy per test set in percentage points, one row per set, coloured and grouped by "
               "the kind of shift, with 95% intervals (pairs by bootstrap, seeds by a t quantile); " + band +
               f"the dashed line is the paper's mean out-of-distribution gap ({_points(paper_mean)} points: reading the "
               "abstract's \"mean drop in accuracy of 3%\" as an absolute EXRM-minus-DPORM gap is our interpretation) "
               "and the dotted line no gap.")
    alt = ("Horizontal dot plot: one row per test set, grouped and coloured by kind of shift, with the EXRM minus DPORM "
           "accuracy gap and its interval on the x axis in percentage points; vertical lines mark no gap and the "
           "paper's mean" + (", a shaded band the measured mean OOD gap." if measured else "."))
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
    """Validation loss (what the rate is chosen by) and accuracy of each model against the learning rate, the chosen
    rate circled."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    colours = palette(list(NAMES))
    for ax, column, title, unit in ((axes[0], "val_loss", "Validation loss (the rate is chosen by it)",
                                     "-log sigmoid(chosen - rejected), mean"),
                                    (axes[1], "val_acc", "Validation accuracy", "accuracy on held-out training pairs")):
        for model, part in search.groupby("model"):
            ax.plot(part["learning_rate"], part[column], marker="o", color=colours[model], label=NAMES[model])
            best = part[part["learning_rate"] == chosen[model]]
            ax.scatter(best["learning_rate"], best[column], s=160, facecolors="none", edgecolors=colours[model])
        ax.set_xscale("log")
        rates = sorted(search["learning_rate"].unique())
        ax.set_xticks(rates, [f"{rate:g}" for rate in rates])
        ax.minorticks_off()
        reference = np.log(2) if column == "val_loss" else 0.5
        ax.axhline(reference, color="grey", linestyle=":", label="chance" if column == "val_acc" else "log 2 (no preference)")
        ax.legend(fontsize="small")
        label(ax, title, "learning rate (log scale)", unit)
    caption = ("Loss and accuracy on held-out training pairs of each model trained at each learning rate of the grid "
               "(first seed). Each model keeps the rate with the lowest loss (circled), the objective it is trained on; "
               "accuracy on so few pairs moves in steps and can tie across rates.")
    alt = ("Two line plots against learning rate for DPORM and EXRM: validation loss with the chosen rates circled, "
           "and validation accuracy.")
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
    models = palette(list(NAMES))  # the same colour for a model in both panels: its labels' next policy wears it
    colours = {**models, "next (DPORM labels)": models["dporm"], "next (EXRM labels)": models["exrm"]}
    for ax, key in ((axes[0], "agreement"), (axes[1], "gold_reward")):
        names = list(record[key])
        for i, name in enumerate(names):
            value, ci = record[key][name], record[f"{key}_ci"][name]
            if value is None:  # no pair of the round cleared the gold margin
                continue
            ax.errorbar(i, value, yerr=_interval(value, ci), fmt="o", capsize=4, color=colours.get(name, "black"))
        ax.set_xticks(range(len(names)), [NAMES.get(n, n) for n in names], rotation=15, ha="right")
    axes[0].axhline(0.5, color="grey", linestyle=":", label="chance")
    axes[0].legend(fontsize="small")
    label(axes[0], "Labelling fresh policy samples", "labeller", "agreement with the gold labeller")
    label(axes[1], "Gold reward of the next policy", "policy", "gold log-odds of the asked sentiment")
    caption = ("One round of iterative DPO: left, how often each reward model picks the same ending as the gold "
               "labeller on fresh samples of the policy; right, the gold reward of samples on held-out prompts from "
               "the policy (black) and from the next policies trained on each labeller's pairs, in that labeller's "
               "colour (95% bootstrap intervals over prompts, one seed: exploratory).")
    alt = "Two dot plots with intervals: labeller agreement with gold, and gold reward per policy."
    return BookFigure(fig, "dpo-iterative", caption, alt)
