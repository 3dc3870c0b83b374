"""Reference log-probs cached on disk by content: every DPO run and every scoring of the same pairs shares one reference.

The reference (the common start, the policy with its LoRA adapter disabled) does not change between learning rates,
seeds or notebooks, so its log-probs of a set of pairs are computed once. TRL's DPOTrainer computes them itself in
`_precompute_ref_logps` (it always runs its pass; columns already in the dataset are not reused), so the trainer below
wraps that method: a cache hit adds the stored columns, a miss runs TRL's own pass and stores what it returned.

TRL's pass also draws one number from torch's global generator (its DataLoader's base seed); a hit draws it too, so
whatever runs next in the process (the explicit reward model's randomly initialised head) starts from the same state.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, concatenate_datasets
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from torch.utils.data import DataLoader
from trl import DPOTrainer

from companion.core.cache import cache_key
from companion.core.files import cached_entry, staged_file

REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
TOKEN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")


def library_versions() -> dict[str, str]:
    """Versions of the libraries that tokenize and compute log-probs."""
    import peft
    import tokenizers
    import torch
    import transformers
    import trl

    return {module.__name__: module.__version__ for module in (peft, tokenizers, torch, transformers, trl)}


def read_arrays(path: Path, names: tuple[str, ...], rows: int) -> dict[str, np.ndarray] | None:
    """The named arrays of a safetensors file, or None when it is missing, unreadable or not `rows` long."""
    try:
        arrays = load_file(path)
    except (OSError, SafetensorError):
        return None
    return arrays if set(arrays) == set(names) and all(len(a) == rows for a in arrays.values()) else None


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Store named arrays as a safetensors file, whole or not at all."""
    with staged_file(path) as tmp:
        save_file(arrays, str(tmp))


def cached_arrays(path: Path, names: tuple[str, ...], rows: int,
                  compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The named arrays stored at path, or computed and written there atomically when missing or corrupt."""
    return cached_entry(path, lambda: read_arrays(path, names, rows), compute, lambda arrays, tmp: save_file(arrays, str(tmp)))


def token_fingerprint(dataset: Dataset) -> str:
    """sha256 of a tokenized preference dataset's prompt, chosen and rejected ids, row by row."""
    return hashlib.sha256(json.dumps(dataset.select_columns(list(TOKEN_COLUMNS)).to_dict()).encode()).hexdigest()


class CachedReferenceDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer whose precomputed reference log-probs are read from a folder, computed by TRL when absent.

    reference_cache is a folder of one reference model (its identity is in the folder's name); a file's key covers
    the tokens, the batching and padding, the precision and device, and the library versions.
    """

    def __init__(self, *args: Any, reference_cache: Path, **kwargs: Any) -> None:
        """DPOTrainer's arguments plus the reference model's cache folder."""
        self.reference_cache = Path(reference_cache)
        super().__init__(*args, **kwargs)

    def reference_file(self, dataset: Dataset, batch_size: int) -> Path:
        """The cache file of the reference log-probs of one tokenized dataset as this trainer would compute them."""
        a = self.args
        key = cache_key(kind="trl-reference", tokens=token_fingerprint(dataset), batch_size=batch_size,
                        max_length=a.max_length, truncation=a.truncation_mode, pad_to=a.pad_to_multiple_of,
                        ld_alpha=a.ld_alpha, pad=self.processing_class.pad_token_id, dtype=str(self.model.dtype),
                        device=str(self.accelerator.device), bf16=a.bf16, fp16=a.fp16, versions=library_versions())
        return self.reference_cache / f"trl-{key}.safetensors"

    def _precompute_ref_logps(self, dataset: Dataset, name: str, batch_size: int) -> Dataset:
        """The dataset with TRL's reference log-prob columns, from the cache or from TRL's own pass (then stored)."""
        path = self.reference_file(dataset, batch_size)
        arrays = read_arrays(path, REF_COLUMNS, len(dataset))
        if arrays is None:
            done = super()._precompute_ref_logps(dataset, name, batch_size)
            arrays = {column: np.asarray(done[column], dtype=np.float32) for column in REF_COLUMNS}
            write_arrays(path, arrays)
        else:
            iter(DataLoader(dataset))  # the draw of TRL's pass (the iterator's base seed), on torch's global generator
        return concatenate_datasets([dataset, Dataset.from_dict(arrays)], axis=1)
