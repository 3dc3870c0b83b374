"""Paper B figures: accuracy per setting for both reward models, gap against shift, training curves."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from companion.core.style import label, palette
from companion.rewards.training import train_curve

NAMES = {"dporm": "DPORM (implicit, DPO)", "exrm": "EXRM (explicit, Bradley-Terry)"}
TRAIN_METRICS = {"dpo": ("dporm", "rewards/accuracies"), "rm": ("exrm", "accuracy")}


def _interval(value: float, ci: list[float]) -> list[list[float]]:
    """Matplotlib's asymmetric error-bar format for one value and its interval."""
    return [[value - ci[0]], [ci[1] - value]]


def accuracy_by_setting(ax: plt.Axes, settings: list[dict], title: str = "Preference accuracy per test set") -> plt.Axes:
    """Both models' accuracy per setting with 95% bootstrap intervals; chance at 0.5."""
    colours = palette(list(NAMES))
    x = np.arange(len(settings))
    for offset, model in zip((-0.12, 0.12), NAMES):
        for i, record in enumerate(settings):
            value = record[f"{model}_acc"]
            ax.errorbar(x[i] + offset, value, yerr=_interval(value, record[f"{model}_ci"]), fmt="o", capsize=3,
                        color=colours[model], label=NAMES[model] if i == 0 else None)
    ax.axhline(0.5, color="grey", linestyle=":", label="chance")
    ax.set_xticks(x, [f"{r['name']}\n({r['shift']})" for r in settings], rotation=20, ha="right")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left", fontsize="small")
    return label(ax, title, "test set (shift)", "accuracy (chosen scored above rejected)")


def gap_by_shift(ax: plt.Axes, settings: list[dict], paper_mean: float) -> plt.Axes:
    """EXRM minus DPORM accuracy per setting, grouped by kind of shift, beside the paper's mean OOD gap."""
    shifts = [s for s in ("id", "prompt", "response") if any(r["shift"] == s for r in settings)]
    colours = palette(shifts)
    for i, shift in enumerate(shifts):
        group = [r for r in settings if r["shift"] == shift]
        for j, record in enumerate(group):
            xpos = i + (j - (len(group) - 1) / 2) * 0.15
            ax.errorbar(xpos, record["gap"], yerr=_interval(record["gap"], record["gap_ci"]), fmt="o", capsize=3,
                        color=colours[shift])
            ax.annotate(record["name"], (xpos, record["gap"]), textcoords="offset points", xytext=(6, 4 if j % 2 == 0 else -12),
                        fontsize="x-small")
    ax.axhline(0.0, color="grey", linestyle=":", label="no gap")
    ax.axhline(paper_mean, color="black", linestyle="--", label=f"paper: mean OOD gap {paper_mean:+.0%}")
    ax.set_xticks(range(len(shifts)), shifts)
    ax.legend(loc="best", fontsize="small")
    return label(ax, "Gap against shift (EXRM minus DPORM)", "kind of shift", "accuracy gap (positive: EXRM better)")


def training_curves(axes: tuple[plt.Axes, plt.Axes], logs: dict[int, dict[str, list[dict]]]) -> None:
    """Training loss and batch preference accuracy per step, both models, one line per seed."""
    colours = palette(list(NAMES))
    for seed, seed_logs in logs.items():
        for key, (model, accuracy_metric) in TRAIN_METRICS.items():
            for ax, metric in zip(axes, ("loss", accuracy_metric)):
                steps, values = zip(*train_curve(seed_logs[key], metric))
                ax.plot(steps, values, color=colours[model], alpha=0.7,
                        label=NAMES[model] if seed == min(logs) else None)
    label(axes[0], "Training loss", "optimizer step", "loss (nats)")
    label(axes[1], "Accuracy on each training batch", "optimizer step", "accuracy")
    axes[0].axhline(np.log(2), color="grey", linestyle=":", label="log 2 (no preference)")
    axes[1].axhline(0.5, color="grey", linestyle=":", label="chance")
    for ax in axes:
        ax.legend(fontsize="small")
