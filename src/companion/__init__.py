"""Companion to two papers: language-expert steering (paper A) and DPO implicit rewards (paper B)."""

import warnings

# Notebooks run without ipywidgets: tqdm.auto falls back to text bars, which is what the book should show.
warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = "0.1.0"
