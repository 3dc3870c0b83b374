"""Sentence embeddings from every block's hidden states, and cross-lingual alignment metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import silhouette_score
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from companion.errors import UserError
from companion.forward import StopForward, decoder_blocks, forward_batches, pool, removing
from companion.stats import mean_ci
from companion.steering import intervene


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
) -> np.ndarray:
    """Pooled outputs of the given blocks, (len(layers), sentences, hidden), optionally under an intervention.

    The pass stops after the deepest block asked for: later blocks and the LM head never run.
    """
    blocks = decoder_blocks(model)
    layers = check_layers(layers, len(blocks))
    seen: dict[int, torch.Tensor] = {}
    rows: list[np.ndarray] = []
    order: list[np.ndarray] = []

    def hook_for(layer: int) -> Callable:
        """A forward hook that keeps the block's output and stops the pass at the deepest block."""

        def hook(module: nn.Module, args: tuple, output: torch.Tensor | tuple) -> None:
            seen[layer] = output[0] if isinstance(output, tuple) else output
            if layer == layers[-1]:
                raise StopForward

        return hook

    def on_batch(index: np.ndarray, mask: torch.Tensor) -> None:
        rows.append(torch.stack([pool(seen[layer].float(), mask, pooling) for layer in layers]).cpu().numpy())
        order.append(index)

    forcing = intervene(model, experts, value, positions) if experts is not None else nullcontext()
    with forcing, removing([blocks[layer].register_forward_hook(hook_for(layer)) for layer in layers]):
        forward_batches(model, tokenizer, sentences, on_batch, batch_size, max_tokens, desc="embedding")
    result = np.empty((len(layers), len(sentences), rows[0].shape[-1]), dtype=np.float32)
    result[:, np.concatenate(order)] = np.concatenate(rows, axis=1)
    return result


def normalise(x: np.ndarray, center: bool = False) -> np.ndarray:
    """Rows scaled to unit length, after subtracting their mean when center is set."""
    if center:
        x = x - x.mean(axis=0, keepdims=True)
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


def retrieval_hits(queries: np.ndarray, candidates: np.ndarray, k: int = 1, center: bool = False) -> np.ndarray:
    """For each query row i, whether candidate i (its translation) is among the k most cosine-similar candidates.

    Ties count against the query (a candidate as similar as the translation outranks it), so degenerate,
    identical embeddings score 0, not 1.
    """
    sims = normalise(queries, center) @ normalise(candidates, center).T
    rivals = (sims >= np.diag(sims)[:, None]).sum(axis=1) - 1
    return rivals < k


def retrieval(a: np.ndarray, b: np.ndarray, center: bool = False, n_boot: int = 1000, seed: int = 0) -> dict:
    """Top-1 and top-5 retrieval accuracy both ways (a->b, b->a) with bootstrap 95% intervals."""
    return {
        f"top{k}_{direction}": mean_ci(retrieval_hits(q, c, k, center).astype(float), n_boot=n_boot, seed=seed)
        for k in (1, 5)
        for direction, (q, c) in {"ab": (a, b), "ba": (b, a)}.items()
    }


def parallel_cosine(a: np.ndarray, b: np.ndarray, center: bool = False) -> dict[str, float]:
    """Mean cosine of parallel pairs (row i with row i) and of non-parallel pairs, and their gap."""
    sims = normalise(a, center) @ normalise(b, center).T
    parallel = float(np.mean(np.diag(sims)))
    off = float((sims.sum() - np.trace(sims)) / (sims.size - len(sims)))
    return {"parallel": parallel, "non_parallel": off, "gap": parallel - off}


def separability(embeddings: dict[str, np.ndarray], center: bool = False) -> float:
    """Silhouette of the language labels under cosine distance: 1 = languages apart, 0 or below = mixed."""
    points = np.concatenate([normalise(x, center) for x in embeddings.values()])
    labels = np.concatenate([[code] * len(x) for code, x in embeddings.items()])
    return float(silhouette_score(points, labels, metric="cosine"))


def alignment(a: np.ndarray, b: np.ndarray, center: bool = False, n_boot: int = 1000, seed: int = 0) -> dict:
    """Every alignment metric between two languages' embeddings of the same sentences (one layer)."""
    return {**retrieval(a, b, center, n_boot, seed), "cosine": parallel_cosine(a, b, center),
            "silhouette": separability({"a": a, "b": b}, center)}
