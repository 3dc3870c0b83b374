"""The expertise table and expert selection.

The table (one row per language and unit: module, layer, index, ap, on_p50, off_p50, off_mean, all_p50) is the
seam between finding experts and forcing them; it is cached as parquet under the companion cache."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow
from scipy.stats import hypergeom
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from companion.core.cache import cache_key, cache_root
from companion.core.corpora import parallel_corpus
from companion.core.errors import UserError
from companion.core.files import sha256_file, staged_file
from companion.core.models import model_identity
from companion.steering.average_precision import average_precision
from companion.steering.recording import default_pattern, record_sites, stacked
from companion.steering.settings import CONTROLS

SELECTIONS = ("top", "top_bottom", "random")


# What each named selection forces: (how units are chosen, which statistic they are forced to).


TABLE_VERSION = 2  # 2: versification markers stripped, special tokens out of the pool, unit sites



def expertise_table(activations: np.ndarray, units: pd.DataFrame, row_languages: Sequence[str]) -> pd.DataFrame:
    """One row per (language, unit): one-vs-rest AP and the unit's median/mean activation on and off language."""
    row_languages = np.asarray(row_languages)
    languages = list(dict.fromkeys(row_languages))
    labels = np.stack([row_languages == code for code in languages], axis=1)
    ap = average_precision(activations, labels)
    everywhere = np.median(activations, axis=0)
    parts = []
    for c, code in enumerate(languages):
        on, off = activations[labels[:, c]], activations[~labels[:, c]]
        part = units.copy()
        part.insert(0, "language", code)
        part["ap"] = ap[c]
        part["on_p50"] = np.median(on, axis=0)
        part["off_p50"] = np.median(off, axis=0)
        part["off_mean"] = off.mean(axis=0)
        part["all_p50"] = everywhere
        parts.append(part)
    return pd.concat(parts, ignore_index=True)



def save_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Write an expertise table to parquet atomically (temporary file, then rename)."""
    with staged_file(path) as tmp:
        table.to_parquet(tmp, index=False)
    return Path(path)



def load_table(path: str | Path) -> pd.DataFrame:
    """Read an expertise table written by save_table."""
    return pd.read_parquet(path)



def cached_tables(keys: Mapping[str, str], build: Callable[[list[str]], dict[str, pd.DataFrame]],
                  root: Path | None = None) -> dict[str, pd.DataFrame]:
    """The tables cached under keys (name -> key); build(names) makes the missing or corrupt ones at once, saved for next time."""
    paths = {name: (root or cache_root()) / "experts" / f"{key}.parquet" for name, key in keys.items()}
    tables = {name: _read_table(path) for name, path in paths.items()}
    missing = [name for name, table in tables.items() if table is None]
    if missing:
        built = build(missing)
        for name in missing:
            tables[name] = built[name]
            save_table(built[name], paths[name])
    return tables



def _read_table(path: Path) -> pd.DataFrame | None:
    """The table saved at path, or None when it is missing or unreadable."""
    try:
        return load_table(path)
    except (OSError, ValueError, pyarrow.ArrowException):
        return None



def site_experts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    model_name: str,
    languages: list[str],
    n: int,
    seed: int,
    patterns: Mapping[str, str | None],
    corpus: str = "bible",
    parallel_path: str | None = None,
    pooling: str = "mean",
    batch_size: int = 32,
    skip_special: bool = True,
) -> dict[str, pd.DataFrame]:
    """The expertise tables for these languages from the 'experts' split at several unit sites (patterns: site ->
    unit pattern, None: the site's default), by site, each cached on disk across notebooks under its own key.

    The sites not cached yet are recorded together, in one pass over the experts split.
    """
    shared = dict(version=TABLE_VERSION, model=model_identity(model_name), languages=list(languages), n=n, seed=seed,
                  corpus=corpus, parallel=sha256_file(Path(parallel_path)) if parallel_path else None, pooling=pooling,
                  skip_special=skip_special, dtype=str(next(model.parameters()).dtype))
    keys = {site: cache_key(**shared, units=pattern or default_pattern(model, site), site=site)
            for site, pattern in patterns.items()}

    def build(sites: list[str]) -> dict[str, pd.DataFrame]:
        """Record these sites' activations on the experts split in one pass and rank every unit."""
        sentences, labels = stacked(parallel_corpus(languages, n, "experts", seed, corpus, parallel_path))
        recorded = record_sites(model, tokenizer, sentences, {site: patterns[site] for site in sites}, pooling, batch_size,
                                skip_special=skip_special)
        return {site: expertise_table(activations, index, labels) for site, (activations, index) in recorded.items()}

    return cached_tables(keys, build)



def select_experts(table: pd.DataFrame, language: str, k: int, how: str = "top", seed: int = 0) -> pd.DataFrame:
    """k units of one language: highest AP ('top'), k/2 highest + k/2 lowest ('top_bottom'), or 'random'."""
    rows = table[table["language"] == language]
    if rows.empty:
        raise UserError(f"no experts for language '{language}'; the table covers {sorted(table['language'].unique())}")
    if not 0 <= k <= len(rows):
        raise UserError(f"k={k} is outside 0..{len(rows)} (the number of units); pick a smaller k")
    ranked = rows.sort_values("ap", ascending=False, kind="stable")
    if how == "top":
        return ranked.head(k)
    if how == "top_bottom":
        return pd.concat([ranked.head(k - k // 2), ranked.tail(k // 2)]) if k else ranked.head(0)
    if how == "random":
        return rows.iloc[np.sort(np.random.default_rng(seed).choice(len(rows), size=k, replace=False))]
    raise UserError(f"unknown expert selection '{how}'; use one of {', '.join(SELECTIONS)}")



def choose(table: pd.DataFrame, language: str, k: int, selection: str, seed: int,
           expert_how: str = "top") -> tuple[pd.DataFrame, str]:
    """Units and the statistic to force them to: the experts, or a layer-matched random control (random-target, random-median)."""
    if selection == "experts":
        return select_experts(table, language, k, expert_how, seed), "on_p50"
    if selection not in CONTROLS:
        raise UserError(f"unknown selection '{selection}'; use 'experts' or one of {', '.join(CONTROLS)}")
    return layer_matched_random(table, language, select_experts(table, language, k, expert_how, seed), seed), CONTROLS[selection]


def layer_matched_random(table: pd.DataFrame, language: str, experts: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Random units of one language with as many in each layer as its experts have there.

    A control spread over all layers would put fewer units where a pass that stops early can feel them; matching the
    count per layer leaves only *which* units differ.
    """
    rows = table[table["language"] == language]
    rng = np.random.default_rng(seed)
    picked = [part.iloc[rng.choice(len(part), size=int(count), replace=False)]
              for layer, count in experts["layer"].value_counts().sort_index().items()
              for part in [rows[rows["layer"] == layer]]]
    return pd.concat(picked).sort_index() if picked else rows.head(0)



def experts_per_layer(table: pd.DataFrame, k: int, how: str = "top") -> pd.DataFrame:
    """How many of each language's k experts sit in each layer (layers x languages)."""
    chosen = pd.concat([select_experts(table, code, k, how) for code in table["language"].unique()])
    counts = chosen.groupby(["layer", "language"], sort=False).size().unstack(fill_value=0)
    return counts.reindex(sorted(table["layer"].unique()), fill_value=0)[list(table["language"].unique())]



def expert_overlap(table: pd.DataFrame, k: int, how: str = "top") -> pd.DataFrame:
    """Jaccard overlap between the languages' k-expert sets (languages x languages)."""
    codes = list(table["language"].unique())
    sets = {code: set(select_experts(table, code, k, how)["unit"]) for code in codes}
    return pd.DataFrame([[len(sets[a] & sets[b]) / max(len(sets[a] | sets[b]), 1) for b in codes] for a in codes],
                        index=codes, columns=codes)



def ap_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per language: mean, median and max AP, the units with AP > 0.9, and chance AP (1 / number of languages)."""
    summary = table.groupby("language", sort=False)["ap"].agg(["mean", "median", "max"])
    strong = table[table["ap"] > 0.9].groupby("language", sort=False).size()
    summary["units with AP > 0.9"] = strong.reindex(summary.index, fill_value=0)
    summary["chance AP"] = 1 / table["language"].nunique()
    return summary



def chance_jaccard(k: int, n: int) -> float:
    """Expected Jaccard overlap of two independent random k-subsets of n units (exact: the intersection is
    hypergeometric; about k / (2n - k) for large n)."""
    if not 0 < k <= n:
        return 0.0 if k == 0 else float("nan")
    shared = np.arange(max(0, 2 * k - n), k + 1)
    return float(np.sum(hypergeom.pmf(shared, n, k, k) * shared / (2 * k - shared)))


def mean_overlap(overlaps: dict[int, pd.DataFrame], n: int | None = None) -> pd.DataFrame:
    """The mean off-diagonal Jaccard overlap between languages, one column per k; with n (units per language), also
    the chance overlap of two random k-sets and the observed/chance ratio."""
    rows = {"mean overlap between languages": [m.where(~np.eye(len(m), dtype=bool)).stack().mean()
                                               for m in overlaps.values()]}
    if n:
        rows["chance overlap (two random k-sets)"] = [chance_jaccard(k, n) for k in overlaps]
        rows["observed / chance"] = [a / b if b > 0 else float("nan") for a, b in
                                     zip(rows["mean overlap between languages"], rows["chance overlap (two random k-sets)"])]
    return pd.DataFrame(rows, index=list(overlaps)).T.rename_axis(columns="k")


def overlap_finding(overlaps: dict[int, pd.DataFrame], n: int) -> str:
    """The observed overlap against chance at every k, in one sentence for the page."""
    parts = []
    for k, m in overlaps.items():
        off = m.where(~np.eye(len(m), dtype=bool)).stack()
        chance = chance_jaccard(k, n)
        parts.append(f"at k={k:,} the languages' expert sets overlap by {off.min():.3f}-{off.max():.3f} "
                     f"(mean {off.mean():.3f}) against {chance:.3f} for two random sets of {k:,} of the {n:,} units, "
                     f"{off.mean() / chance:.1f}x chance" if chance > 0 else f"at k={k:,} the overlap is {off.mean():.3f}")
    return "Jaccard overlap between languages: " + "; ".join(parts) + "."
