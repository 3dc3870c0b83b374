"""Figures of the steering notebooks (paper A), drawn with the companion's style and palette."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from companion.core.style import label, palette


def ap_distributions(ax: plt.Axes, table: pd.DataFrame) -> plt.Axes:
    """Histogram (log counts) of every unit's AP, one outline per language."""
    codes = list(table["language"].unique())
    colours = palette(codes)
    bins = np.linspace(0, 1, 51)
    for code in codes:
        ax.hist(table.loc[table["language"] == code, "ap"], bins=bins, histtype="step", lw=1.5,
                color=colours[code], label=code)
    ax.set_yscale("log")
    ax.legend(title="language")
    return label(ax, "How well each unit separates one language from the rest", "average precision (AP)",
                 "units (log scale)")


def lines(ax: plt.Axes, frame: pd.DataFrame, title: str, xlabel: str, ylabel: str, dashed: bool = False,
          legend_title: str = "language") -> plt.Axes:
    """One line per column of frame against its index, coloured by column name."""
    colours = palette(list(frame.columns))
    for column in frame.columns:
        ax.plot(frame.index, frame[column], marker="o", ms=3, ls="--" if dashed else "-",
                color=colours[column], label=str(column))
    ax.legend(title=legend_title, fontsize="small")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return label(ax, title, xlabel, ylabel)


def heatmap(ax: plt.Axes, matrix: pd.DataFrame, title: str, xlabel: str, ylabel: str, colorbar: str,
            fmt: str = ".2f", center: float | None = None) -> plt.Axes:
    """An annotated heatmap with a labelled colour bar."""
    sns.heatmap(matrix, ax=ax, annot=True, fmt=fmt, cmap="vlag" if center is not None else "viridis",
                center=center, cbar_kws={"label": colorbar}, square=True)
    return label(ax, title, xlabel, ylabel)


def projection(ax: plt.Axes, points: np.ndarray, languages: np.ndarray, title: str) -> plt.Axes:
    """A 2-D scatter of sentence embeddings coloured by language."""
    codes = list(dict.fromkeys(languages))
    colours = palette(codes)
    for code in codes:
        mine = languages == code
        ax.scatter(points[mine, 0], points[mine, 1], s=6, alpha=0.6, color=colours[code], label=code)
    ax.legend(title="language", markerscale=2, fontsize="small")
    return label(ax, title, "component 1", "component 2")


def with_interval(ax: plt.Axes, x: np.ndarray, mean: np.ndarray, low: np.ndarray, high: np.ndarray,
                  colour: tuple, name: str, dashed: bool = False) -> plt.Axes:
    """A line with a shaded 95% interval."""
    ax.plot(x, mean, marker="o", ms=3, color=colour, ls="--" if dashed else "-", label=name)
    ax.fill_between(x, low, high, color=colour, alpha=0.15)
    return ax
