"""The embedding space before and after steering every language toward one: embeddings, 2-D projections, alignment by layer."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from tqdm.auto import tqdm

from companion.steering.alignment import alignment, normalise, separability
from companion.steering.experiments import Setup
from companion.steering.retrieval import cached_steered_embeddings, embed_languages


def before_after(lab: Setup, evaluation: pd.DataFrame, steer_to: str, k: int,
                 layers: Sequence[int]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Embeddings of every language as the model is, and with steer_to's k experts forced on the other languages."""
    pre = embed_languages(lab, evaluation, layers)
    others = [code for code in lab.languages if code != steer_to]
    post = {steer_to: pre[steer_to], **cached_steered_embeddings(lab, evaluation, steer_to, k, "experts",
                                                                 lab.settings.seed, lab.table, others, layers)}
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


def at_block(aligned: pd.DataFrame, layer: int) -> pd.DataFrame:
    """The alignment table at one block, one row per language: top-1 before and after with their intervals, the pair
    silhouette and the cosine gap (x1000) before and after."""
    rows = aligned[aligned["layer"] == layer].set_index(["stage", "language"])
    table = pd.DataFrame(index=rows.loc["before"].index)
    for stage in ("before", "after"):
        part = rows.loc[stage]
        table[f"top1_{stage}"] = part["top1"]
        table[f"{stage}_top1_ci"] = list(zip(part["top1_low"], part["top1_high"]))
    for stage in ("before", "after"):
        table[f"silhouette_pair_{stage}"] = rows.loc[stage]["silhouette_pair"]
    for stage in ("before", "after"):
        table[f"cosine_gap_x1000_{stage}"] = 1000 * rows.loc[stage]["cosine_gap"]  # gaps are ~0.001: shown x1000
    return table


def finding(aligned: pd.DataFrame, steer_to: str, k: int, layer: int) -> str:
    """What the alignment table shows, at one block fixed in advance and over every block, in a few sentences."""
    at = aligned[aligned["layer"] == layer].set_index(["stage", "language"])
    before, after = at.loc["before"], at.loc["after"]
    means = aligned.groupby(["layer", "stage"])["top1"].mean().unstack("stage")
    up, fell = int((means["after"] > means["before"]).sum()), int((means["after"] < means["before"]).sum())
    best = int((means["after"] - means["before"]).idxmax())
    drop = after["top1"].mean() < before["top1"].mean()
    apart = after["silhouette_pair"].mean() > before["silhouette_pair"].mean()

    def span(values: pd.Series) -> str:
        """The range of per-language values, '0.374-0.572'."""
        return f"{values.min():.3f}-{values.max():.3f}"

    text = (f"At block {layer} (the block drawn above), forcing {steer_to}'s "
            f"k={k} experts on the other languages' sentences moves top-1 retrieval of their {steer_to} translations "
            f"from {span(before['top1'])} to {span(after['top1'])} across the languages (mean {before['top1'].mean():.3f} "
            f"to {after['top1'].mean():.3f}); the pair silhouette (each language against {steer_to}) goes from "
            f"{before['silhouette_pair'].mean():.3f} to {after['silhouette_pair'].mean():.3f} on average, and the cosine gap "
            f"between parallel and other pairs from {before['cosine_gap'].mean():.4f} to {after['cosine_gap'].mean():.4f}. "
            f"Over all {len(means)} blocks, mean top-1 after forcing is above its value before at {up} of them "
            f"(blocks {', '.join(str(b) for b in means.index[means['after'] > means['before']]) or 'none'}) and below it "
            f"at {fell}; the largest rise (exploratory: picked after seeing every block) is at block {best}, from "
            f"{means.loc[best, 'before']:.3f} to {means.loc[best, 'after']:.3f}. ")
    if drop and apart:
        return text + (f"So at block {layer} and this k the forced experts do not pull the languages into {steer_to}'s "
                       f"region: they make their sentences easier to tell apart from {steer_to}'s and harder to match "
                       f"with their translations.")
    if drop:
        return text + (f"So at block {layer} and this k the forced experts make the sentences harder, not easier, to match "
                       f"with their {steer_to} translations.")
    return text + (f"Retrieval into {steer_to} rises at block {layer}; read it with the intervals in the table above "
                   f"(this page runs no random control).")
