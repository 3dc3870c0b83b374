"""Cross-lingual alignment of embeddings: retrieval, parallel cosine, language separability."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import silhouette_score

from companion.core.errors import UserError
from companion.core.stats import bootstrap_ci, mean_ci


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
