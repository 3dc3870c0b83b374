"""The one figure style: colour-blind-safe palette, readable fonts, labelled axes."""

from __future__ import annotations

import io
from dataclasses import dataclass

import matplotlib as mpl
import matplotlib.pyplot as plt
import seaborn as sns

# Okabe-Ito (Okabe and Ito 2008), ordered so that any six keys get six distinct hues: orange and vermilion, the one
# near-identical pair, only meet from the seventh key on (seaborn's "colorblind" puts them second and fourth).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#000000", "#D55E00", "#F0E442"]


def setup_style() -> None:
    """Apply the companion's plotting style (call once at the top of a notebook)."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)
    mpl.rcParams.update({"figure.dpi": 110, "savefig.dpi": 110, "axes.titleweight": "bold", "figure.autolayout": True})


def palette(keys: list[str]) -> dict[str, tuple[float, float, float]]:
    """A stable colour-blind-safe colour for each key (language, reward model, ...): Okabe-Ito in PALETTE's order,
    repeating after eight keys."""
    colours = sns.color_palette(PALETTE)
    return {key: colours[i % len(colours)] for i, key in enumerate(keys)}


def label(ax: plt.Axes, title: str, xlabel: str, ylabel: str) -> plt.Axes:
    """Set a title and axis labels (with units where they apply) in one call."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return ax


FIGURE_KEY = "companion/figure"  # output metadata the runner turns into a numbered, captioned figure with alt text


@dataclass(frozen=True)
class BookFigure:
    """A figure of the book: the matplotlib Figure, the name pages cross-reference, its caption and its alt text."""

    figure: plt.Figure
    name: str
    caption: str
    alt: str

    def __post_init__(self) -> None:
        """A figure needs a name, a caption and alt text; an empty one is a bug in the figure function."""
        missing = [field for field in ("name", "caption", "alt") if not str(getattr(self, field)).strip()]
        if missing:
            raise ValueError(f"figure {self.name!r} has no {', '.join(missing)}")


def show(book_figure: BookFigure) -> None:
    """Display a book figure as a PNG carrying its name, caption and alt text (returns None: no repr under it)."""
    from IPython.display import Image, display

    buffer = io.BytesIO()
    book_figure.figure.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(book_figure.figure)
    meta = {"name": book_figure.name, "caption": book_figure.caption, "alt": book_figure.alt}
    display(Image(data=buffer.getvalue()), metadata={FIGURE_KEY: meta})
