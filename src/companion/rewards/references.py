"""Reference log-probs cached on disk by content: every DPO run and every scoring of the same pairs shares one reference.

The reference (the common start, the policy with its LoRA adapter disabled) does not change between learning rates,
seeds or notebooks, so its log-probs of a set of pairs are computed once. TRL's DPOTrainer computes them itself in
`_precompute_ref_logps` (it always runs its pass; columns already in the dataset are not reused), so the trainer below
wraps that method: a cache hit adds the stored columns, a miss runs TRL's own pass and stores what it returned.

Rows are reused across datasets too: each file keeps a hash of every row's token ids, so a dataset that shares rows
with one computed before (the iterative round trains on the training pairs plus new pairs, once as DPORM orients the
new pairs and once as EXRM does) runs TRL's pass on its new rows only; a row seen with chosen and rejected exchanged
takes the stored values exchanged (TRL truncates and pads each response on its own, and its `ld_alpha` weighting
treats the two alike, so exchanging them exchanges the values). A reused row's values come from the batch it was
first computed in: equal to a pass over the new dataset up to float rounding (padding widths differ), and the same
in every run that builds the cache in the same order, as the book's pages do.

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
ROW_COLUMN = "row_sha256"  # per row, the sha256 of its prompt, chosen and rejected ids
TOKEN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")


def library_versions() -> dict[str, str]:
    """Versions of the libraries that tokenize and compute log-probs."""
    import peft
    import tokenizers
    import torch
    import transformers
    import trl

    return {module.__name__: module.__version__ for module in (peft, tokenizers, torch, transformers, trl)}


def read_arrays(path: Path, names: tuple[str, ...], rows: int | None) -> dict[str, np.ndarray] | None:
    """The named arrays of a safetensors file, or None when it is missing, unreadable, or its arrays are not `rows`
    long (rows None: not all of one length)."""
    try:
        arrays = load_file(path)
    except (OSError, SafetensorError):
        return None
    lengths = {len(a) for a in arrays.values()}
    return arrays if set(arrays) == set(names) and len(lengths) == 1 and rows in (None, *lengths) else None


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


def row_hashes(dataset: Dataset, exchanged: bool = False) -> np.ndarray:
    """(n, 32) sha256 of each row's prompt, chosen and rejected ids (chosen and rejected exchanged when asked)."""
    first, second = ("rejected_ids", "chosen_ids") if exchanged else ("chosen_ids", "rejected_ids")
    rows = zip(dataset["prompt_ids"], dataset[first], dataset[second])
    return np.array([np.frombuffer(hashlib.sha256(json.dumps(row).encode()).digest(), dtype=np.uint8) for row in rows],
                    dtype=np.uint8).reshape(-1, 32)


def stored_rows(folder: Path, pattern: str) -> dict[bytes, np.ndarray]:
    """Every row's (chosen, rejected) reference log-probs stored in the folder's files matching pattern, by row hash."""
    found = {}
    for path in sorted(folder.glob(pattern)):
        arrays = read_arrays(path, (*REF_COLUMNS, ROW_COLUMN), None)
        if arrays is not None:
            values = np.stack([arrays[column] for column in REF_COLUMNS], 1)
            found.update((key.tobytes(), row) for key, row in zip(arrays[ROW_COLUMN], values))
    return found


class CachedReferenceDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer whose precomputed reference log-probs are read from a folder, computed by TRL when absent.

    reference_cache is a folder of one reference model (its identity is in the folder's name); a file's key covers
    the tokens, the batching and padding, the precision and device, and the library versions.
    """

    def __init__(self, *args: Any, reference_cache: Path, **kwargs: Any) -> None:
        """DPOTrainer's arguments plus the reference model's cache folder."""
        self.reference_cache = Path(reference_cache)
        super().__init__(*args, **kwargs)

    def pass_key(self, batch_size: int) -> str:
        """Cache key of how this trainer computes reference log-probs: batching and padding, precision and device,
        library versions (the files of one key share their rows)."""
        a = self.args
        return cache_key(kind="trl-reference", batch_size=batch_size, max_length=a.max_length,
                         truncation=a.truncation_mode, pad_to=a.pad_to_multiple_of, ld_alpha=a.ld_alpha,
                         pad=self.processing_class.pad_token_id, dtype=str(self.model.dtype),
                         device=str(self.accelerator.device), bf16=a.bf16, fp16=a.fp16, versions=library_versions())

    def reference_file(self, dataset: Dataset, batch_size: int) -> Path:
        """The cache file of the reference log-probs of one tokenized dataset as this trainer would compute them."""
        return self.reference_cache / f"trl-{self.pass_key(batch_size)}-{token_fingerprint(dataset)[:20]}.safetensors"

    def _precompute_ref_logps(self, dataset: Dataset, name: str, batch_size: int) -> Dataset:
        """The dataset with TRL's reference log-prob columns, from the cache or from TRL's own pass (then stored)."""
        path = self.reference_file(dataset, batch_size)
        arrays = read_arrays(path, (*REF_COLUMNS, ROW_COLUMN), len(dataset))
        if arrays is None or not np.array_equal(arrays[ROW_COLUMN], row_hashes(dataset)):  # rows, not just the name
            arrays = self.reused_or_computed(dataset, name, batch_size)
            write_arrays(path, arrays)
        else:
            iter(DataLoader(dataset))  # the draw of TRL's pass (the iterator's base seed), on torch's global generator
        return concatenate_datasets([dataset, Dataset.from_dict({c: arrays[c] for c in REF_COLUMNS})], axis=1)

    def reused_or_computed(self, dataset: Dataset, name: str, batch_size: int) -> dict[str, np.ndarray]:
        """The reference columns and row hashes of a dataset: rows stored before (in either orientation) read back,
        TRL's own pass over the others (one draw of torch's generator either way)."""
        stored = stored_rows(self.reference_cache, f"trl-{self.pass_key(batch_size)}-*.safetensors")
        keys, exchanged = row_hashes(dataset), row_hashes(dataset, exchanged=True)
        values, found = np.zeros((len(dataset), 2), dtype=np.float32), np.zeros(len(dataset), dtype=bool)
        for i, (key, other) in enumerate(zip(keys, exchanged)):
            if key.tobytes() in stored:
                values[i], found[i] = stored[key.tobytes()], True
            elif other.tobytes() in stored:
                values[i], found[i] = stored[other.tobytes()][::-1], True
        missing = np.flatnonzero(~found)
        if len(missing):
            done = super()._precompute_ref_logps(dataset.select(missing), name, batch_size)
            values[missing] = np.stack([np.asarray(done[column], dtype=np.float32) for column in REF_COLUMNS], 1)
        else:
            iter(DataLoader(dataset))  # the draw of TRL's pass, as above
        # columns copied out whole: safetensors writes an array's buffer, not a strided view of it
        return {REF_COLUMNS[0]: values[:, 0].copy(), REF_COLUMNS[1]: values[:, 1].copy(), ROW_COLUMN: keys}
