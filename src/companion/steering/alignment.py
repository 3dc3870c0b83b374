"""Cross-lingual alignment of embeddings: retrieval, parallel cosine, language separability."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import silhouette_score

from companion.core.stats import mean_ci


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
