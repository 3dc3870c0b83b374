"""Sentence embeddings from the blocks' hidden states, optionally under an intervention."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext

import numpy as np
import pandas as pd
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from companion.core.errors import UserError
from companion.core.forward import StopForward, content_mask, decoder_blocks, forward_batches, pool, removing
from companion.steering.expertise import choose
from companion.steering.interventions import intervene


def check_layers(layers: Sequence[int], n_blocks: int) -> list[int]:
    """Sorted unique block numbers, or one clear error naming the valid range."""
    bad = [layer for layer in layers if not 0 <= layer < n_blocks]
    if bad or not layers:
        raise UserError(f"layers {list(layers)} are not all in 0..{n_blocks - 1}; pick block numbers of this model")
    return sorted(set(layers))



def sentence_embeddings(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[str],
    layers: Sequence[int],
    pooling: str = "mean",
    experts: pd.DataFrame | None = None,
    value: str = "on_p50",
    positions: str = "all",
    batch_size: int = 32,
    max_tokens: int = 128,
    skip_special: bool = True,
) -> np.ndarray:
    """Pooled outputs of the given blocks, (len(layers), sentences, hidden), optionally under an intervention.

    skip_special leaves special tokens (<bos>) out of the pool: the <bos> state is the same, and large, for every
    sentence, so pooling it adds a shared vector scaled by 1/length. The pass stops after the deepest block asked
    for: later blocks and the LM head never run.
    """
    blocks = decoder_blocks(model)
    layers = check_layers(layers, len(blocks))
    seen: dict[int, torch.Tensor] = {}

    def hook_for(layer: int) -> Callable:
        """A forward hook that keeps the block's output and stops the pass at the deepest block."""

        def hook(module: nn.Module, args: tuple, output: torch.Tensor | tuple) -> None:
            seen[layer] = output[0] if isinstance(output, tuple) else output
            if layer == layers[-1]:
                raise StopForward

        return hook

    def per_batch(batch: dict[str, torch.Tensor], output: object) -> torch.Tensor:
        mask = batch["attention_mask"]
        mask = content_mask(batch["input_ids"], mask, tokenizer.all_special_ids) if skip_special else mask
        return torch.stack([pool(seen[layer].float(), mask, pooling) for layer in layers], 1)

    forcing = intervene(model, experts, value, positions) if experts is not None else nullcontext()
    with forcing, removing([blocks[layer].register_forward_hook(hook_for(layer)) for layer in layers]):
        result = forward_batches(model, tokenizer, sentences, per_batch, batch_size, max_tokens, "embedding")
    return result.transpose(1, 0, 2)



def steered_embeddings(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, frame: pd.DataFrame,
                       table: pd.DataFrame, target: str, k: int, selection: str, layers: Sequence[int],
                       seed: int, sides: Sequence[str], expert_how: str = "top", **options: object) -> dict[str, np.ndarray]:
    """Embeddings of the languages in sides with target's units forced (choose() picks units and statistic)."""
    units, value = choose(table, target, k, selection, seed, expert_how)
    return {code: sentence_embeddings(model, tokenizer, list(frame[code]), layers, experts=units, value=value, **options)
            for code in sides}
