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
from companion.stats import bootstrap_ci, mean_ci
from companion.steering import choose, intervene


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

    def hook_for(layer: int) -> Callable:
        """A forward hook that keeps the block's output and stops the pass at the deepest block."""

        def hook(module: nn.Module, args: tuple, output: torch.Tensor | tuple) -> None:
            seen[layer] = output[0] if isinstance(output, tuple) else output
            if layer == layers[-1]:
                raise StopForward

        return hook

    def per_batch(batch: dict[str, torch.Tensor], output: object) -> torch.Tensor:
        return torch.stack([pool(seen[layer].float(), batch["attention_mask"], pooling) for layer in layers], 1)

    forcing = intervene(model, experts, value, positions) if experts is not None else nullcontext()
    with forcing, removing([blocks[layer].register_forward_hook(hook_for(layer)) for layer in layers]):
        result = forward_batches(model, tokenizer, sentences, per_batch, batch_size, max_tokens, "embedding")
    return result.transpose(1, 0, 2)
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


def steered_embeddings(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, frame: pd.DataFrame,
                       table: pd.DataFrame, target: str, k: int, selection: str, layers: Sequence[int],
                       seed: int, sides: Sequence[str], expert_how: str = "top", **options: object) -> dict[str, np.ndarray]:
    """Embeddings of the languages in sides with target's units forced (choose() picks units and statistic)."""
    units, value = choose(table, target, k, selection, seed, expert_how)
    return {code: sentence_embeddings(model, tokenizer, list(frame[code]), layers, experts=units, value=value, **options)
            for code in sides}


def pair_records(pre: dict[str, np.ndarray], post: dict[str, np.ndarray], src: str, tgt: str,
                 layers: Sequence[int], center: bool, n_boot: int, seed: int) -> list[dict]:
    """Top-1 retrieval src->tgt per layer, before (pre on both sides) and after (post where given, else pre)."""
    records = []
    for i, layer in enumerate(layers):
        before = retrieval_hits(pre[src][i], pre[tgt][i], 1, center).astype(float)
        after = retrieval_hits(post.get(src, pre[src])[i], post.get(tgt, pre[tgt])[i], 1, center).astype(float)
        records.append({"src": src, "tgt": tgt, "layer": int(layer),
                        "top1_pre": float(before.mean()), "top1_post": float(after.mean()),
                        "ci_pre": list(bootstrap_ci(before, n_boot, seed)),
                        "ci_post": list(bootstrap_ci(after, n_boot, seed))})
    return records


def best_ratio(records: list[dict], selection: str = "experts") -> dict:
    """The largest top1_post / top1_pre over records of one selection (pre > 0), with its record."""
    usable = [r for r in records if r["selection"] == selection and r["top1_pre"] > 0 and r["k"] > 0]
    if not usable:
        return {"ratio": None, "record": None}
    best = max(usable, key=lambda r: r["top1_post"] / r["top1_pre"])
    return {"ratio": best["top1_post"] / best["top1_pre"], "record": best}


def forced_sides(protocol: str, languages: Sequence[str], target: str) -> list[str]:
    """The languages whose sentences are embedded under the target's intervention, by retrieval protocol."""
    if protocol not in ("source", "both"):
        raise UserError(f"unknown protocol '{protocol}'; use 'source' (force on source sentences) or 'both'")
    return [code for code in languages if code != target] + ([target] if protocol == "both" else [])
