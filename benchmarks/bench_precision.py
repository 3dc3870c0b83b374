"""Rows 8-9: bfloat16 against float32, side by side: paper B's scoring under autocast and paper A's model in bfloat16,
how much faster, and what it changes."""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from bench_training import SETTINGS, bench_pairs
from common import LANGUAGES, MODEL, Row, side_by_side

from companion.core.corpora import parallel_corpus
from companion.core.models import load_causal_lm
from companion.core.precision import PRECISIONS, autocast
from companion.rewards.preferences import Pair
from companion.rewards.scoring import correct, implicit_rewards, model_scores, reference_logps
from companion.rewards.sft import SFTSettings, sft_backbone
from companion.rewards.training import RewardModels, TrainSettings, trained_models
from companion.steering.embeddings import sentence_embeddings
from companion.steering.expertise import expertise_table, select_experts
from companion.steering.recording import record_activations, stacked


def rewards(models: RewardModels, pairs: list[Pair], s: TrainSettings) -> dict[str, np.ndarray]:
    """Both models' rewards on the pairs as the book computes them (in float32 unless an autocast is active), every
    pass computed: not read from the book's score caches, so a timed pass is a pass."""
    ref = reference_logps(models.policy, models.tokenizer, pairs, s.max_length, 32)
    return {"dporm": implicit_rewards(model_scores(models, "dpo", pairs, s.max_length, 32), ref, s.beta),
            "exrm": model_scores(models, "rm", pairs, s.max_length, 32)}


def same_ranking(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    """Per model, the share of pairs two sets of rewards rank the same way (chosen above rejected or not)."""
    return {m: float((correct(a[m]) == correct(b[m])).mean()) for m in ("dporm", "exrm")}


def accuracy(rewards: dict[str, np.ndarray]) -> str:
    """DPORM/EXRM accuracy as 'd/e'."""
    return "/".join(f"{correct(rewards[m]).mean():.3f}" for m in ("dporm", "exrm"))


def precision_row(quick: bool) -> Row:
    """Paper B at the book's training settings (SFT start, 32 steps, batch 8, held-out pairs): (1) scoring in bfloat16
    against float32, time and how often each model's ranking of a pair changes; (2) training in bfloat16 mixed
    precision, as the book trains, against float32 (scored in float32, as the book scores), beside the change another
    float32 seed makes."""
    steps, n_eval = (4, 64) if quick else (32, 256)
    base = replace(SETTINGS, steps=steps)
    pairs = bench_pairs(base, steps * base.batch_size + n_eval)
    train, held = pairs[:steps * base.batch_size], pairs[steps * base.batch_size:]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as tmp:
        s = replace(base, model=sft_backbone(SFTSettings(model=base.model, steps=steps, precision="bfloat16")))
        runs = {name: trained_models(replace(s, seed=seed, precision=p), train, Path(tmp))
                for name, seed, p in (("float32", 0, "float32"), ("seed 1", 1, "float32"), ("bfloat16", 0, "bfloat16"))}
        scored = {name: rewards(models, held, s) for name, models in runs.items()}
        at: dict[str, dict[str, np.ndarray]] = {}

        def scorer(precision: str) -> None:
            """The float32-trained models' passes over the held-out pairs at one precision."""
            with autocast(precision):
                at[precision] = rewards(runs["float32"], held, s)

        times = side_by_side({p: (lambda p=p: scorer(p)) for p in PRECISIONS}, repeats=1 if quick else 2, warmup=False)
    half = at["bfloat16"]
    ratio = times["float32"] / times["bfloat16"]
    scoring, training, seed = (same_ranking(scored["float32"], other) for other in (half, scored["bfloat16"], scored["seed 1"]))
    return Row("Paper B in bfloat16: scoring (the book scores in float32) and training (the book trains in bfloat16)",
               f"scoring {ratio:.2f}x faster", ">= 1.50x", ratio >= 1.5,
               f"{s.model} after a {steps}-step SFT, {len(train)} training and {len(held)} held-out pairs, {steps} steps, "
               f"lr {s.learning_rate:g}. Scoring float32-trained models: {times['float32']:.1f} s vs {times['bfloat16']:.1f} s "
               f"(medians); bfloat16 changes the ranking of {1 - scoring['dporm']:.1%} of pairs for DPORM and "
               f"{1 - scoring['exrm']:.1%} for EXRM (accuracy {accuracy(scored['float32'])} vs {accuracy(half)}, DPORM/EXRM). "
               f"Training in bfloat16 (scored in float32): accuracy {accuracy(scored['bfloat16'])} vs float32 "
               f"{accuracy(scored['float32'])}, ranking changed on {1 - training['dporm']:.1%}/{1 - training['exrm']:.1%} of "
               f"pairs; another float32 seed: accuracy {accuracy(scored['seed 1'])}, ranking changed on "
               f"{1 - seed['dporm']:.1%}/{1 - seed['exrm']:.1%}", time.perf_counter() - started)


def top1(source: np.ndarray, target: np.ndarray) -> float:
    """Share of source rows whose nearest target row by cosine is their own translation (the same index)."""
    a = source / np.linalg.norm(source, axis=1, keepdims=True)
    b = target / np.linalg.norm(target, axis=1, keepdims=True)
    return float(((a @ b.T).argmax(axis=1) == np.arange(len(a))).mean())


def steering_precision_row(quick: bool) -> Row:
    """Paper A's model in bfloat16 against float32 on the same verses: expert-finding pass time, overlap of the
    top-and-bottom experts each finds, and English-to-X top-1 retrieval at the primary block and k, unforced and
    with the target's experts forced on the English side (each precision with its own experts)."""
    n, k, block = (40, 400, 9) if quick else (200, 2000, 9)
    experts_split = parallel_corpus(LANGUAGES, n, "experts", 0)
    evaluation = parallel_corpus(LANGUAGES, n, "eval", 0)
    sentences, languages = stacked(experts_split)
    models = {p: load_causal_lm(MODEL, getattr(torch, p)) for p in PRECISIONS}
    started, recorded = time.perf_counter(), {}

    def recorder(p: str) -> None:
        """The experts split's pooled unit activations at the default site, at one precision."""
        recorded[p] = record_activations(*models[p], sentences)

    times = side_by_side({p: (lambda p=p: recorder(p)) for p in PRECISIONS}, repeats=1, warmup=False)
    tables = {p: expertise_table(recorded[p][0], recorded[p][1], languages) for p in PRECISIONS}
    overlap = {code: len(set(select_experts(tables["float32"], code, k, "top_bottom")["unit"])
                         & set(select_experts(tables["bfloat16"], code, k, "top_bottom")["unit"])) / k for code in LANGUAGES}
    def embed(p: str, code: str, target: str | None = None) -> np.ndarray:
        """Pooled block outputs of one language's eval verses, with target's experts forced when given."""
        experts = select_experts(tables[p], target, k, "top_bottom") if target else None
        return sentence_embeddings(*models[p], list(evaluation[code]), [block], experts=experts)[0]

    unforced = {p: {code: embed(p, code) for code in LANGUAGES} for p in PRECISIONS}
    before = {p: np.array([top1(unforced[p]["en"], unforced[p][x]) for x in LANGUAGES[1:]]) for p in PRECISIONS}
    after = {p: np.array([top1(embed(p, "en", x), unforced[p][x]) for x in LANGUAGES[1:]]) for p in PRECISIONS}
    ratio = times["float32"] / times["bfloat16"]
    shown = {p: f"{before[p].mean():.3f} -> {after[p].mean():.3f} (diff {np.mean(after[p] - before[p]):+.3f})"
             for p in PRECISIONS}
    return Row("Paper A's model in bfloat16 vs float32", f"{ratio:.2f}x faster", ">= 1.50x", ratio >= 1.5,
               f"{MODEL}, {len(sentences)} verses: {times['float32']:.1f} s vs {times['bfloat16']:.1f} s to record them; "
               f"the {k} top-and-bottom experts agree on {min(overlap.values()):.1%}-{max(overlap.values()):.1%} of units "
               f"per language. en->X top-1 at block {block} on {n} verses, unforced -> the target's {k} experts forced on "
               f"the English side (mean of {len(before['float32'])} pairs, raw cosine): float32 {shown['float32']}, "
               f"bfloat16 {shown['bfloat16']}; largest pair difference between precisions "
               f"{np.abs(after['float32'] - after['bfloat16']).max():.3f} forced, "
               f"{np.abs(before['float32'] - before['bfloat16']).max():.3f} unforced", time.perf_counter() - started)


ROWS = {"precision": precision_row, "steering_precision": steering_precision_row}
