"""Batched forward passes that stop early: length buckets, padding-aware pooling, truncation by hooks."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from companion.core import threads

POOLINGS = ("mean", "max", "last")


class StopForward(Exception):
    """Raised by a hook once every activation a caller needs has been seen; ends the forward pass."""


def length_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Indices grouped into batches of similar length (sorted, then cut), to minimise padding."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """Pool (batch, tokens, dim) over the tokens where mask is 1: mean, max, or the last such token."""
    keep = mask.bool().unsqueeze(-1)
    if how == "mean":
        total = torch.where(keep, hidden, torch.zeros((), dtype=hidden.dtype, device=hidden.device)).sum(1)
        return total / keep.sum(1).clamp(min=1)
    if how == "max":
        return torch.where(keep, hidden, torch.full((), -torch.inf, dtype=hidden.dtype, device=hidden.device)).amax(1)
    if how == "last":
        positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        last = torch.where(mask.bool(), positions, -1).amax(1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"unknown pooling '{how}'; use one of {POOLINGS}")


def row_sums(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per row of a (rows, positions) mask, the sum of the values given for its True positions (in row-major order)."""
    rows = torch.arange(mask.shape[0], device=mask.device).unsqueeze(1).expand_as(mask)[mask]
    return torch.zeros(mask.shape[0], dtype=values.dtype, device=values.device).index_add(0, rows, values)


HEAD_ROWS = 256  # token positions projected onto the vocabulary at once (256 MiB of Gemma 3 logits in float32)


def next_token_logps(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per row of hidden (positions x width), log p(target) under the LM head in float32, HEAD_ROWS positions projected
    at a time, so the (positions x vocabulary) logits are never held at once."""
    device = head.weight.device
    chunks = []
    for start in range(0, len(targets), HEAD_ROWS):
        logits = head(hidden[start:start + HEAD_ROWS].to(device)).float()
        picked = targets[start:start + HEAD_ROWS].to(device).unsqueeze(-1)
        chunks.append(logits.gather(-1, picked).squeeze(-1) - torch.logsumexp(logits, dim=-1))
    return torch.cat([torch.zeros(0, device=device), *chunks])


def content_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: Sequence[int]) -> torch.Tensor:
    """The attention mask with special tokens (<bos>, <eos>, padding) switched off: what a pool should average."""
    special = torch.isin(input_ids, torch.tensor(list(special_ids), dtype=input_ids.dtype, device=input_ids.device))
    return attention_mask * ~special


# Text-config fields that change the logits after the LM head (softcapping, scales); a model with none of them set
# has logits that are its head's output as they are.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


def plain_logits(model: PreTrainedModel) -> bool:
    """True when the model's logits are its LM head's output on the last hidden states, untransformed."""
    config = model.config.get_text_config()
    return all(getattr(config, name, None) is None for name in LOGIT_TRANSFORMS)


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so left padding does not shift them."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def model_inputs(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Forward arguments for one padded batch, with padding-aware position ids where the model takes them."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
    if "position_ids" in inspect.signature(model.forward).parameters:
        inputs["position_ids"] = position_ids(batch["attention_mask"])
    return inputs


def forward_batches(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[str],
    per_batch: Callable[[dict[str, torch.Tensor], object], torch.Tensor],
    batch_size: int = 32,
    max_tokens: int = 128,
    desc: str = "forward",
) -> np.ndarray:
    """Run the model over sentences in length buckets; per_batch(padded batch, output) gives one row per sentence.

    Hooks placed by the caller collect what they need and may raise StopForward to skip the rest of the
    network (deeper layers, the LM head); that ends the batch (output None), not the loop. The rows come
    back in the order of sentences, as one float32 array.
    """
    ids = tokenizer(list(sentences), truncation=True, max_length=max_tokens)["input_ids"]
    device = next(model.parameters()).device
    batches = length_batches([len(row) for row in ids], batch_size)
    rows = []
    with torch.inference_mode():
        for index in tqdm(batches, desc=desc, leave=False, disable=len(batches) < 4, mininterval=10):
            threads.follow()
            padded = tokenizer.pad({"input_ids": [ids[i] for i in index]}, return_tensors="pt")
            padded = {key: value.to(device) for key, value in padded.items()}
            try:
                output = model(**model_inputs(model, padded))
            except StopForward:
                output = None
            rows.append(per_batch(padded, output).float().cpu().numpy())
    result = np.empty((len(ids), *rows[0].shape[1:]), dtype=np.float32)
    result[np.concatenate(batches)] = np.concatenate(rows)
    return result


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks (model.layers, transformer.h, ...): the longest ModuleList."""
    lists = [module for _, module in model.named_modules() if isinstance(module, nn.ModuleList)]
    if not lists:
        raise ValueError(f"{type(model).__name__} has no list of transformer blocks")
    return max(lists, key=len)


@contextmanager
def removing(handles: list[RemovableHandle]) -> Iterator[list[RemovableHandle]]:
    """Context that removes every hook handle on exit, also when the body raises."""
    try:
        yield handles
    finally:
        for handle in handles:
            handle.remove()
