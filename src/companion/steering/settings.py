"""Paper A's settings: one frozen dataclass that every steering experiment reads, checked when it is made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from companion.core import precision
from companion.core.errors import UserError

Selection = Literal["top", "top_bottom"]
Pooling = Literal["mean", "max", "last"]
Protocol = Literal["source", "both"]
Positions = Literal["all", "last"]
DType = Literal["float32", "bfloat16", "float16"]
UnitSite = Literal["input", "output"]

# The fields with a fixed set of choices, and those choices (checked when settings are made).
CHOICES: dict[str, tuple[str, ...]] = {
    "selection": get_args(Selection), "pooling": get_args(Pooling), "protocol": get_args(Protocol),
    "positions": get_args(Positions), "dtype": get_args(DType), "unit_site": get_args(UnitSite),
}

CONTROLS = {"random-target": "on_p50", "random-median": "all_p50"}  # control -> statistic its random units are forced to


@dataclass(frozen=True)
class SteeringSettings:
    """Which model, corpus and languages; how experts are found, chosen and forced; how sentences are embedded."""

    model_name: str = "gemma-3-270m"  # embedded model, a hub id (e.g. CohereForAI/aya-23-8B) or a local folder
    languages: tuple[str, ...] = ("en", "de", "fr", "es", "ru")
    corpus: str = "bible"  # "bible" (public-domain versions), or a FLORES+ dataset id
    parallel_path: str | None = None  # your own parallel file (.tsv/.jsonl) instead of the corpus
    n_find: int = 500  # sentences per language of the "experts" split
    n_eval: int = 500  # sentences per language of the disjoint "eval" split
    pooling: Pooling = "mean"  # how activations and hidden states are pooled over a sentence's tokens
    units: str | None = None  # regex of the modules holding the units (None: the site's default, see recording)
    unit_site: UnitSite = "input"  # units are the modules' input features (MLP neurons) or output features
    skip_special: bool = True  # leave <bos> and other special tokens out of every pool
    selection: Selection = "top_bottom"  # "top_bottom": k/2 highest + k/2 lowest AP (Kojima et al.); "top": k highest
    protocol: Protocol = "source"  # retrieval: target's experts forced on source sentences, or on both sides
    positions: Positions = "all"  # force at every token, or at the last one
    center: bool = False  # subtract each language's mean embedding before comparing
    seed: int = 0
    n_boot: int = 1000
    batch_size: int = 32
    threads: int = 2  # torch CPU threads
    dtype: DType | Literal["auto"] = "float32"  # torch dtype of the weights; "auto": bfloat16 where native (core.precision)
    device_map: str | None = None  # None: CPU; "auto" places a hub model on the available GPUs

    def __post_init__(self) -> None:
        """Lists become tuples (the settings are hashable), empty strings None; every choice and count is checked."""
        object.__setattr__(self, "languages", tuple(self.languages))
        for name in ("parallel_path", "units", "device_map"):  # "" (a notebook parameter's empty value) means None
            object.__setattr__(self, name, getattr(self, name) or None)
        object.__setattr__(self, "dtype", precision.resolve(self.dtype, gpu=self.device_map is not None))  # as run, for cache keys
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                raise UserError(f"{name}={getattr(self, name)!r} is not a valid choice; use one of {', '.join(map(repr, choices))}")
        for name in ("n_find", "n_eval", "n_boot", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise UserError(f"{name}={getattr(self, name)} must be at least 1; pass a positive count")
        if len(self.languages) < 2 or len(set(self.languages)) != len(self.languages):
            raise UserError(f"languages={list(self.languages)} must name at least two distinct languages, e.g. [en, de]")
