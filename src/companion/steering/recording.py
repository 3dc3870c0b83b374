"""Record unit activations: the units are the input features of modules matching a pattern (MLP neurons)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from companion.core.errors import UserError
from companion.core.forward import StopForward, forward_batches, pool, removing

# The input of each block's MLP down projection: Gemma 3 / Llama / Qwen2 / Cohere, BLOOM, GPT-2.
DEFAULT_UNITS = r"mlp\.(down_proj|dense_4h_to_h|c_proj)$"



def unit_modules(model: nn.Module, pattern: str | None = None) -> dict[str, nn.Module]:
    """Modules (by name, in forward order) whose input features are the units; default: MLP down projections."""
    regex = re.compile(pattern or DEFAULT_UNITS)
    found = {name: module for name, module in model.named_modules() if regex.search(name)}
    if not found:
        raise UserError(
            f"no module of {type(model).__name__} matches the unit pattern '{regex.pattern}'; "
            "pass units=<regex> matching names from model.named_modules(), e.g. 'mlp\\.down_proj$'"
        )
    return found



def layer_of(module_name: str) -> int:
    """The block number in a module name (model.layers.3.mlp.down_proj -> 3)."""
    match = re.search(r"\.(\d+)(\.|$)", module_name)
    return int(match.group(1)) if match else 0



def hook_name(module_name: str) -> str:
    """The name of the hook point at a module's input, TransformerLens style."""
    return f"{module_name}.hook_in"



def record_activations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[str],
    pattern: str | None = None,
    pooling: str = "mean",
    batch_size: int = 32,
    max_tokens: int = 128,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Pooled unit activations (sentences x units, float32) and the unit index (module, layer, index, unit)."""
    modules = unit_modules(model, pattern)
    names = list(modules)
    masks: list[torch.Tensor] = []
    pooled: dict[str, torch.Tensor] = {}

    def keep_mask(module: nn.Module, args: tuple, kwargs: dict) -> None:
        """A model pre-hook that hands the batch's attention mask to the unit hooks."""
        masks[:] = [kwargs["attention_mask"]]

    def hook_for(name: str) -> Callable:
        """A pre-hook that pools the module's input at once (its tokens are not kept) and stops after the deepest."""

        def hook(module: nn.Module, args: tuple) -> None:
            pooled[name] = pool(args[0].float(), masks[0], pooling)
            if name == names[-1]:
                raise StopForward

        return hook

    def per_batch(batch: dict[str, torch.Tensor], output: object) -> torch.Tensor:
        return torch.cat([pooled[name] for name in names], 1)

    handles = [model.register_forward_pre_hook(keep_mask, with_kwargs=True)]
    handles += [modules[name].register_forward_pre_hook(hook_for(name)) for name in names]
    with removing(handles):
        activations = forward_batches(model, tokenizer, sentences, per_batch, batch_size, max_tokens, "recording units")
    widths = [pooled[name].shape[-1] for name in names]
    units = pd.DataFrame({
        "module": np.repeat(names, widths),
        "layer": np.repeat([layer_of(name) for name in names], widths),
        "index": np.concatenate([np.arange(width) for width in widths]),
    })
    units["unit"] = np.arange(len(units))
    return activations, units



def stacked(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """A parallel frame (one column per language) as sentences and their languages, language by language."""
    sentences = [text for code in frame.columns for text in frame[code]]
    languages = [code for code in frame.columns for _ in range(len(frame))]
    return sentences, languages
