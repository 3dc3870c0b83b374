"""Figures of the data-and-models page: what the shared corpora look like before any experiment."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from companion.core.style import BookFigure, label, palette


def verse_lengths(lengths: pd.DataFrame, model_name: str) -> BookFigure:
    """Violin plot of tokens per verse for each language (a length_table with a 'tokens' column)."""
    codes = list(dict.fromkeys(lengths["language"]))
    per_language = int(lengths.groupby("language").size().max())
    fig, ax = plt.subplots(figsize=(7, 3.8))
    sns.violinplot(data=lengths, x="language", y="tokens", hue="language", palette=palette(codes), cut=0, ax=ax,
                   legend=False)
    label(ax, f"Verse length per language ({per_language} verses each)", "language (ISO 639-1)",
          f"tokens ({model_name} tokenizer)")
    medians = lengths.groupby("language")["tokens"].median()
    shortest, longest = medians.idxmin(), medians.idxmax()
    return BookFigure(
        fig, "data-lengths",
        f"Tokens per verse for each language under the {model_name} tokenizer, over the same {per_language} "
        "parallel verses per language: the same content costs a different number of tokens in each language.",
        f"Violin plot of tokens per verse for languages {', '.join(codes)}; median {medians[shortest]:.0f} tokens for "
        f"{shortest} (shortest) up to {medians[longest]:.0f} for {longest} (longest).",
    )
