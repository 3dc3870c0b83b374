"""The embedding space before and after steering every language toward one: embeddings, 2-D projections, alignment by layer."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from tqdm.auto import tqdm

from companion.steering.alignment import alignment, normalise, separability
from companion.steering.embeddings import steered_embeddings
from companion.steering.experiments import Setup
from companion.steering.retrieval import embed_languages


def before_after(lab: Setup, evaluation: pd.DataFrame, steer_to: str, k: int,
                 layers: Sequence[int]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Embeddings of every language as the model is, and with steer_to's k experts forced on the other languages."""
    s = lab.settings
    pre = embed_languages(lab, evaluation, layers)
    others = [code for code in lab.languages if code != steer_to]
    post = {steer_to: pre[steer_to], **steered_embeddings(
        lab.model, lab.tokenizer, evaluation, lab.table, steer_to, k, "experts", layers, s.seed, others, s.selection,
        pooling=s.pooling, positions=s.positions, batch_size=s.batch_size,
        skip_special=s.skip_special)}
    return pre, post


def projections(lab: Setup, pre: dict[str, np.ndarray], post: dict[str, np.ndarray], at: int,
                use_umap: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """2-D points (before, after) per method (PCA; UMAP when asked and installed), fitted on both stages together."""
    s = lab.settings
    stacked = np.concatenate([np.concatenate([emb[code][at] for code in lab.languages]) for emb in (pre, post)])
    methods = {"PCA": PCA(n_components=2, random_state=s.seed)}
    if use_umap and importlib.util.find_spec("umap"):
        import umap

        methods["UMAP"] = umap.UMAP(n_components=2, random_state=s.seed, metric="cosine")
    found = {}
    for method, reducer in methods.items():
        points = reducer.fit_transform(normalise(stacked, s.center))
        found[method] = (points[:len(points) // 2], points[len(points) // 2:])
    return found


def alignment_by_layer(lab: Setup, pre: dict[str, np.ndarray], post: dict[str, np.ndarray], steer_to: str,
                       layers: Sequence[int]) -> pd.DataFrame:
    """Per stage, layer and language: top-1/top-5 retrieval of the steer_to translation, cosine gap, silhouettes."""
    s = lab.settings
    others = [code for code in lab.languages if code != steer_to]
    rows = []
    for stage, emb in {"before": pre, "after": post}.items():
        for i, layer in enumerate(tqdm(layers, desc=stage)):
            spread = separability({code: emb[code][i] for code in lab.languages}, s.center)
            for code in others:
                m = alignment(emb[code][i], emb[steer_to][i], s.center, s.n_boot, s.seed)
                rows.append({"stage": stage, "layer": layer, "language": code,
                             "top1": m["top1_ab"]["mean"], "top1_low": m["top1_ab"]["low"],
                             "top1_high": m["top1_ab"]["high"], "top1_back": m["top1_ba"]["mean"],
                             "top5": m["top5_ab"]["mean"], "cosine_gap": m["cosine"]["gap"],
                             "silhouette_pair": m["silhouette"], "silhouette_all": spread})
    return pd.DataFrame(rows)
