"""Record unit activations: the units are the input features of modules matching a pattern (MLP neurons)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from companion.core.errors import UserError
from companion.core.forward import StopForward, content_mask, forward_batches, pool, removing

# Each block's MLP down projection: Gemma 3 / Llama / Qwen2 / Cohere, BLOOM, GPT-2, PolyLM (GPT-2 layout).
DEFAULT_UNITS = r"mlp\.(down_proj|dense_4h_to_h|c_proj)$"

# Gemma 2/3 normalise the MLP's output before adding it to the residual stream: that norm's output is what is added.
RESIDUAL_WRITE = r"post_feedforward_layernorm$"

# Where the units sit: "input" features of the matched modules (the MLP neurons, the default) or their "output"
# features (by default what each MLP writes into the residual stream; Kojima et al. force linear-layer outputs).
SITES = ("input", "output")



def default_pattern(model: nn.Module, site: str) -> str:
    """The unit pattern of a site: down-projection inputs, or the module whose output the residual stream receives."""
    if site == "output" and any(re.search(RESIDUAL_WRITE, name) for name, _ in model.named_modules()):
        return RESIDUAL_WRITE
    return DEFAULT_UNITS



def unit_modules(model: nn.Module, pattern: str | None = None, site: str = "input") -> dict[str, nn.Module]:
    """Modules (by name, in forward order) whose input (or output) features are the units; default: MLP down projections."""
    if site not in SITES:
        raise UserError(f"unknown unit site '{site}'; use one of {', '.join(SITES)}")
    regex = re.compile(pattern or default_pattern(model, site))
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



def hook_name(module_name: str, site: str = "input") -> str:
    """The name of the hook point at a module's input or output, TransformerLens style."""
    return f"{module_name}.hook_{'in' if site == 'input' else 'out'}"



def record_activations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[str],
    pattern: str | None = None,
    pooling: str = "mean",
    batch_size: int = 32,
    max_tokens: int = 128,
    site: str = "input",
    skip_special: bool = True,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Pooled unit activations (sentences x units, float32) and the unit index (module, site, layer, index, unit).

    skip_special leaves special tokens (<bos>) out of the pool: their state is the same for every sentence.
    """
    return record_sites(model, tokenizer, sentences, {site: pattern}, pooling, batch_size, max_tokens, skip_special)[site]



def record_sites(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[str],
    patterns: Mapping[str, str | None],
    pooling: str = "mean",
    batch_size: int = 32,
    max_tokens: int = 128,
    skip_special: bool = True,
) -> dict[str, tuple[np.ndarray, pd.DataFrame]]:
    """record_activations for several sites (site -> unit pattern, None: its default) in one pass over the sentences.

    Each batch's pass stops once every hooked module of every site has been seen.
    """
    points = [(site, name, module) for site, pattern in patterns.items()
              for name, module in unit_modules(model, pattern, site).items()]
    masks: list[torch.Tensor] = []
    pooled: dict[tuple[str, str], torch.Tensor] = {}

    def keep_mask(module: nn.Module, args: tuple, kwargs: dict) -> None:
        """A model pre-hook that hands the batch's pooling mask to the unit hooks and forgets the last batch's pools."""
        mask = kwargs["attention_mask"]
        masks[:] = [content_mask(kwargs["input_ids"], mask, tokenizer.all_special_ids) if skip_special else mask]
        pooled.clear()

    def hook_for(point: tuple[str, str]) -> Callable:
        """A hook that pools the module's input or output at once (its tokens are not kept), stopping after the last."""

        def hook(module: nn.Module, args: tuple, output: torch.Tensor | None = None) -> None:
            pooled[point] = pool((args[0] if output is None else output).float(), masks[0], pooling)
            if len(pooled) == len(points):
                raise StopForward

        return hook

    def per_batch(batch: dict[str, torch.Tensor], output: object) -> torch.Tensor:
        return torch.cat([pooled[site, name] for site, name, _ in points], 1)

    handles = [model.register_forward_pre_hook(keep_mask, with_kwargs=True)]
    handles += [(module.register_forward_pre_hook if site == "input" else module.register_forward_hook)(hook_for((site, name)))
                for site, name, module in points]
    with removing(handles):
        activations = forward_batches(model, tokenizer, sentences, per_batch, batch_size, max_tokens, "recording units")
    found, start = {}, 0
    for site in patterns:  # the columns hold the sites one after another, in the order of patterns
        units = unit_index([(name, pooled[at, name].shape[-1]) for at, name, _ in points if at == site], site)
        found[site] = (activations[:, start:start + len(units)], units)
        start += len(units)
    return found



def unit_index(widths: Sequence[tuple[str, int]], site: str) -> pd.DataFrame:
    """The unit index of one site from its modules' (name, width) in forward order: module, site, layer, index, unit."""
    names = [name for name, _ in widths]
    counts = [width for _, width in widths]
    units = pd.DataFrame({
        "module": np.repeat(names, counts),
        "site": site,
        "layer": np.repeat([layer_of(name) for name in names], counts),
        "index": np.concatenate([np.arange(width) for width in counts]),
    })
    units["unit"] = np.arange(len(units))
    return units



def stacked(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """A parallel frame (one column per language) as sentences and their languages, language by language."""
    sentences = [text for code in frame.columns for text in frame[code]]
    languages = [code for code in frame.columns for _ in range(len(frame))]
    return sentences, languages
