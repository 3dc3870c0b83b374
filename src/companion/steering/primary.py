"""Paper A's primary retrieval analysis (one layer and k fixed in the profile) and the choices that decide it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from companion.core.stats import seed_item_draws
from companion.steering.alignment import retrieval_hits
from companion.steering.experiments import Setup
from companion.steering.retrieval import cached_steered_embeddings, embed_languages, forced_hits

# One choice switched at a time, away from the primary analysis: (row label, settings changed). The pooling rows change
# how the retrieval embeddings are pooled, not the expertise table (found once, mean-pooled, <bos> left out).
CHOICES: list[tuple[str, dict]] = [
    ("selection: top k (not top and bottom)", {"selection": "top"}),
    ("selection: top and bottom", {"selection": "top_bottom"}),
    ("centring: on", {"center": True}),
    ("centring: off", {"center": False}),
    ("<bos> in the mean pool (embeddings only: the experts are still found without it)", {"skip_special": False}),
    ("unit site: what the MLP writes to the residual stream (the same k is a larger share of its fewer units)",
     {"unit_site": "output"}),
    ("unit site: MLP neurons (down-projection input)", {"unit_site": "input"}),
    ("protocol: forced on both sides", {"protocol": "both"}),
    ("protocol: forced on the source side", {"protocol": "source"}),
    ("pooling: max (embeddings only: the experts are still found on mean-pooled activations)", {"pooling": "max"}),
]


def per_sentence(runs: dict, pairs: Sequence[tuple[str, str]], key: tuple[int, str, int], at: int,
                 side: int) -> np.ndarray:
    """Top-1 hits of one run at one layer, averaged over the pairs sentence by sentence (before: side 0, after: 1)."""
    return np.mean([runs[key][pair][side][at] for pair in pairs], axis=0)


def primary_row(runs: dict, pairs: Sequence[tuple[str, str]], layers: Sequence[int], layer: int, k: int,
                seeds: Sequence[int], control: str, selection: str, n_boot: int, seed: int, center: bool = False) -> dict:
    """Mean top-1 before and after, ratio and differences with paired intervals over experts-split seeds and sentences.

    Each sentence's hits are averaged over the pairs. An interval adds the sentences' part (a bootstrap drawing the
    same sentences for before, after and the control, so it is paired) and the seeds' part (the spread of the
    per-seed values, with a t quantile: `SeedItemDraws.interval`). `other_centring` is the same row with the
    embeddings centred if `center` is off (and not centred if it is on), from the same runs: centring is reported
    both ways.
    """
    at = list(layers).index(layer)
    return {"layer": layer, "k": k, "selection": selection, "control": control,
            "pairs": [f"{src}→{tgt}" for src, tgt in pairs], "seeds": list(seeds), "center": center,
            **_estimates(runs, pairs, k, at, seeds, control, (0, 1), n_boot, seed),
            "other_centring": {"center": not center, **_estimates(runs, pairs, k, at, seeds, control, (3, 4), n_boot, seed)}}


def _estimates(runs: dict, pairs: Sequence[tuple[str, str]], k: int, at: int, seeds: Sequence[int], control: str,
               sides: tuple[int, int], n_boot: int, seed: int) -> dict:
    """Top-1 before, after and under the control, ratio and differences with their intervals, from one centring's
    hits (sides: the indices of before and after in each run's hits)."""
    pre = np.stack([per_sentence(runs, pairs, (s, "experts", k), at, sides[0]) for s in seeds])
    post = np.stack([per_sentence(runs, pairs, (s, "experts", k), at, sides[1]) for s in seeds])
    ctrl = np.stack([per_sentence(runs, pairs, (s, control, k), at, sides[1]) for s in seeds])
    draws = seed_item_draws({"primary": (pre, post, ctrl)}, n_boot, seed)
    return {"n_eval": pre.shape[1],
            "top1_pre": float(pre.mean()), "top1_post": float(post.mean()), "top1_control": float(ctrl.mean()),
            "ratio": float(post.mean() / pre.mean()) if pre.mean() > 0 else None,
            "ratio_ci": draws.interval(lambda m: m["primary"][:, 1] / m["primary"][:, 0], log=True),
            "diff": float(post.mean() - pre.mean()),
            "diff_ci": draws.interval(lambda m: m["primary"][:, 1] - m["primary"][:, 0], bounds=(-1, 1)),
            "diff_vs_control": float(post.mean() - ctrl.mean()),
            "diff_vs_control_ci": draws.interval(lambda m: m["primary"][:, 1] - m["primary"][:, 2], bounds=(-1, 1)),
            "per_seed": [{"seed": int(s), "top1_pre": float(a.mean()), "top1_post": float(b.mean()),
                          "top1_control": float(c.mean())} for s, a, b, c in zip(seeds, pre, post, ctrl)]}


def direction_row(hits: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]], layer: int, k: int, seed: int,
                  n_boot: int) -> dict:
    """Mean top-1 over the pairs before and after, ratio and difference with intervals paired over the sentences (one
    experts-split seed, no control), and each pair's top-1 before and after; hits: pair -> (before, after) booleans."""
    pairs = list(hits)
    before = np.mean([hits[pair][0] for pair in pairs], axis=0, dtype=np.float64)[None]
    after = np.mean([hits[pair][1] for pair in pairs], axis=0, dtype=np.float64)[None]
    draws = seed_item_draws({"direction": (before, after)}, n_boot, seed)
    with np.errstate(divide="ignore", invalid="ignore"):  # a replicate with no hit before has no ratio
        ratio_ci = draws.interval(lambda m: m["direction"][:, 1] / m["direction"][:, 0], log=True)
    return {"layer": layer, "k": k, "seeds": [seed], "control": None, "pairs": [f"{src}→{tgt}" for src, tgt in pairs],
            "n_eval": before.shape[1], "top1_pre": float(before.mean()), "top1_post": float(after.mean()),
            "ratio": float(after.mean() / before.mean()) if before.mean() > 0 else None,
            "ratio_ci": ratio_ci if ratio_ci and np.isfinite(ratio_ci).all() else None,
            "diff": float(after.mean() - before.mean()),
            "diff_ci": draws.interval(lambda m: m["direction"][:, 1] - m["direction"][:, 0], bounds=(-1, 1)),
            "per_pair": [{"pair": f"{src}→{tgt}", "top1_pre": float(hits[(src, tgt)][0].mean()),
                          "top1_post": float(hits[(src, tgt)][1].mean())} for src, tgt in pairs]}


def into_pivot(lab: Setup, evaluation: pd.DataFrame, layer: int, k: int, pivot: str = "en") -> dict:
    """Every other language into the pivot at one block and k (source protocol: the pivot's experts forced on the
    source sentences), on the settings' experts-split seed, from the cached forced pass the embedding-space page makes
    (exploratory: the reverse of the primary direction; experts only, no control run)."""
    s = lab.settings
    sources = [code for code in lab.languages if code != pivot]
    pre = embed_languages(lab, evaluation, [layer])
    post = cached_steered_embeddings(lab, evaluation, pivot, k, "experts", s.seed, lab.table, sources, [layer])
    hits = {(src, pivot): (retrieval_hits(pre[src][0], pre[pivot][0], 1, s.center),
                           retrieval_hits(post[src][0], pre[pivot][0], 1, s.center)) for src in sources}
    return {**direction_row(hits, layer, k, s.seed, s.n_boot), "center": s.center,
            "protocol": "source", "arm": "experts"}


def direction_sentence(row: dict, primary: dict) -> str:
    """The into-pivot row beside the primary one, in one sentence for the page (numbers from the rows, rounded)."""
    low, high = row["diff_ci"]
    moved = "drops" if high < 0 else "rises" if low > 0 else "does not move clearly (the interval holds 0)"
    return (f"Into {row['pairs'][0].split('→')[1]} ({', '.join(row['pairs'])}), at block {row['layer']} with k={row['k']} and "
            f"experts-split seed {row['seeds'][0]}, mean top-1 goes from {row['top1_pre']:.3f} to {row['top1_post']:.3f} "
            f"(difference {_with_ci(row['diff'], row['diff_ci'])}, sentences only): retrieval in this direction {moved}, "
            f"where the primary direction goes from {primary['top1_pre']:.3f} to {primary['top1_post']:.3f} "
            f"(difference {_with_ci(primary['diff'], primary['diff_ci'])}).")


def directions_table(row: dict, into: dict) -> pd.DataFrame:
    """The primary row and the into-pivot row side by side (one row each; the control only where it was run)."""
    keys = ["top1_pre", "top1_post", "top1_control", "diff", "diff_ci", "ratio", "ratio_ci", "diff_vs_control",
            "diff_vs_control_ci"]
    seeds = f"{len(into['seeds'])} seed, no control"
    return pd.DataFrame({f"{', '.join(row['pairs'])} (primary, {len(row['seeds'])} seeds)": {key: row.get(key) for key in keys},
                         f"{', '.join(into['pairs'])} (exploratory, {seeds})": {key: into.get(key) for key in keys}}).T


def what_decides(lab: Setup, evaluation: pd.DataFrame, pairs: Sequence[tuple[str, str]], layer: int,
                 k: int) -> pd.DataFrame:
    """Top-1 before and after at the primary layer and k as each choice is switched, one at a time (seed of the settings).

    Rows: the primary settings on this table's seed and sentences (not the primary analysis, which pools seeds and uses
    every evaluation sentence), then each choice of CHOICES that differs from them. Intervals are paired over the
    sentences; 'change' is the forcing's mean relative change of the source embeddings at the layer.
    """
    s = lab.settings
    variants = [(f"primary settings (experts-split seed {s.seed} only, first {len(evaluation)} sentences per language)", s)]
    variants += [(name, replace(s, **change)) for name, change in CHOICES
                 if any(getattr(s, field) != value for field, value in change.items())]
    rows = []
    for name, v in tqdm(variants, desc="choices"):
        pre = embed_languages(lab, evaluation, [layer], v)
        hits = forced_hits(lab, evaluation, pre, pairs, [layer], k, "experts", s.seed, lab.expertise(site=v.unit_site), v)
        before = np.mean([hits[pair][0][0] for pair in pairs], axis=0)[None]
        after = np.mean([hits[pair][1][0] for pair in pairs], axis=0)[None]
        draws = seed_item_draws({"choice": (before, after)}, s.n_boot, s.seed)
        rows.append({"choice": name, "top1_pre": float(before.mean()), "top1_post": float(after.mean()),
                     "diff": float(after.mean() - before.mean()),
                     "diff_ci": draws.interval(lambda m: m["choice"][:, 1] - m["choice"][:, 0], bounds=(-1, 1)),
                     "change": float(np.mean([hits[pair][2][0] for pair in pairs]))})
    return pd.DataFrame(rows)


def _with_ci(value: float, ci: Sequence[float]) -> str:
    """A signed difference with its interval, '+0.069, 95% CI +0.050 to +0.089'."""
    return f"{value:+.3f}, 95% CI {ci[0]:+.3f} to {ci[1]:+.3f}"


def sentence(row: dict) -> str:
    """The primary row in one sentence for the page (numbers from the row, rounded)."""
    ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "undefined (top-1 before is 0)"
    return (f"At block {row['layer']} with k={row['k']} ({row['selection']}), mean top-1 over {len(row['pairs'])} pairs "
            f"and {len(row['seeds'])} experts-split seeds goes from {row['top1_pre']:.3f} to {row['top1_post']:.3f} "
            f"(ratio {ratio}; difference {_with_ci(row['diff'], row['diff_ci'])}); "
            f"against the {row['control']} control the difference is {row['diff_vs_control']:+.3f} "
            f"(95% CI {row['diff_vs_control_ci'][0]:+.3f} to {row['diff_vs_control_ci'][1]:+.3f}). "
            + _centring_sentence(row["other_centring"]))


def _centring_sentence(other: dict) -> str:
    """The primary row's numbers with the other centring, in one sentence."""
    how = "centred (the mean embedding of each side subtracted)" if other["center"] else "not centred"
    return (f"With the embeddings {how}, from the same runs, top-1 goes from {other['top1_pre']:.3f} to "
            f"{other['top1_post']:.3f} (difference {_with_ci(other['diff'], other['diff_ci'])}; against the control "
            f"{_with_ci(other['diff_vs_control'], other['diff_vs_control_ci'])}).")


def centring_table(row: dict) -> pd.DataFrame:
    """The primary row's estimates both ways, embeddings not centred and centred (a row each)."""
    keys = ["top1_pre", "top1_post", "top1_control", "ratio", "ratio_ci", "diff", "diff_ci", "diff_vs_control",
            "diff_vs_control_ci"]
    ways = {row["center"]: row, row["other_centring"]["center"]: row["other_centring"]}
    return pd.DataFrame([{"centring": "on" if center else "off", **{key: ways[center][key] for key in keys}}
                         for center in (False, True)]).set_index("centring")
