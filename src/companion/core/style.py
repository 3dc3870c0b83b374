"""The one figure style: colour-blind-safe palette, readable fonts, labelled axes."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt
import seaborn as sns

FIGURES_ENV = "COMPANION_FIGURES"  # where publish() saves PNGs for other pages

PALETTE = "colorblind"



def setup_style() -> None:
    """Apply the companion's plotting style (call once at the top of a notebook)."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)
    mpl.rcParams.update({"figure.dpi": 110, "savefig.dpi": 110, "axes.titleweight": "bold", "figure.autolayout": True})



def palette(keys: list[str]) -> dict[str, tuple[float, float, float]]:
    """A stable colour-blind-safe colour for each key (language, reward model, ...)."""
    colours = sns.color_palette(PALETTE, n_colors=max(len(keys), 1))
    return dict(zip(keys, colours))



def label(ax: plt.Axes, title: str, xlabel: str, ylabel: str) -> plt.Axes:
    """Set a title and axis labels (with units where they apply) in one call."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return ax



def publish(fig: plt.Figure, name: str) -> plt.Figure:
    """Also save a figure as PNG for other pages (the landing page) when run by `companion run`."""
    folder = os.environ.get(FIGURES_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(folder) / f"{name}.png", bbox_inches="tight")
    return fig
