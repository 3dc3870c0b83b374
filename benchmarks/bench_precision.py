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
from companion.rewards.scoring import correct, reference_logps, score_models
from companion.rewards.training import trained_models
from companion.steering.embeddings import sentence_embeddings
from companion.steering.expertise import expertise_table, select_experts
from companion.steering.recording import record_activations, stacked


def precision_row(quick: bool) -> Row:
    """Score held-out pairs with both trained models (float32 training) at each precision: time ratio and how often
    a pair's ranking (chosen above rejected) is the same, per model. The book scores in float32 (see scoring.py), so
    the row also trains both models in bfloat16 mixed precision, as the book does, and scores them in float32."""
    steps, n_eval = (4, 64) if quick else (16, 256)
    s = replace(SETTINGS, steps=steps)
    pairs = bench_pairs(s, steps * s.batch_size + n_eval)
    train, held = pairs[:steps * s.batch_size], pairs[steps * s.batch_size:]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as tmp:
        models = trained_models(s, train, Path(tmp))
        rewards: dict[str, dict[str, np.ndarray]] = {}

        def scorer(precision: str) -> None:
            """Reference, policy and reward-model passes over the held-out pairs at one precision."""
            with autocast(precision):
                ref = reference_logps(models.policy, models.tokenizer, held, s.max_length, 32)
                rewards[precision] = score_models(models, held, ref, s.beta, s.max_length, 32)

        times = side_by_side({p: (lambda p=p: scorer(p)) for p in PRECISIONS}, repeats=1 if quick else 3)
        mixed = trained_models(replace(s, precision="bfloat16"), train, Path(tmp))  # as the book trains
        ref = reference_logps(mixed.policy, mixed.tokenizer, held, s.max_length, 32)
        trained_mixed = score_models(mixed, held, ref, s.beta, s.max_length, 32)  # scored in float32, as the book
    ratio = times["float32"] / times["bfloat16"]
    same = {m: float((correct(rewards["float32"][m]) == correct(rewards["bfloat16"][m])).mean()) for m in ("dporm", "exrm")}
    accuracy = {p: {m: float(correct(rewards[p][m]).mean()) for m in same} for p in PRECISIONS}
    shift = {m: float(np.abs(rewards["float32"][m] - rewards["bfloat16"][m]).max()) for m in same}
    mixed_acc = {m: float(correct(trained_mixed[m]).mean()) for m in same}
    mixed_same = {m: float((correct(rewards["float32"][m]) == correct(trained_mixed[m])).mean()) for m in same}
    return Row("Scoring in bfloat16 autocast vs float32 (paper B; the book scores in float32)", f"{ratio:.2f}x faster",
               ">= 1.50x", ratio >= 1.5,
               f"{s.model}, {len(held)} held-out pairs, models trained {steps} steps in float32: {times['float32']:.1f} s vs "
               f"{times['bfloat16']:.1f} s (medians); same ranking on {same['dporm']:.1%} (DPORM) and {same['exrm']:.1%} "
               f"(EXRM) of pairs; accuracy float32 {accuracy['float32']['dporm']:.3f}/{accuracy['float32']['exrm']:.3f}, "
               f"bfloat16 {accuracy['bfloat16']['dporm']:.3f}/{accuracy['bfloat16']['exrm']:.3f} (DPORM/EXRM); largest "
               f"reward change {shift['dporm']:.3f} (DPORM) and {shift['exrm']:.3f} (EXRM). Trained in bfloat16 mixed precision "
               f"(as the book trains) and scored in float32: accuracy {mixed_acc['dporm']:.3f}/{mixed_acc['exrm']:.3f}, same "
               f"ranking as the float32-trained models on {mixed_same['dporm']:.1%}/{mixed_same['exrm']:.1%} of pairs",
               time.perf_counter() - started)



def top1(source: np.ndarray, target: np.ndarray) -> float:
    """Share of source rows whose nearest target row by cosine is their own translation (the same index)."""
    a = source / np.linalg.norm(source, axis=1, keepdims=True)
    b = target / np.linalg.norm(target, axis=1, keepdims=True)
    return float(((a @ b.T).argmax(axis=1) == np.arange(len(a))).mean())


def steering_precision_row(quick: bool) -> Row:
    """Paper A's model in bfloat16 against float32 on the same verses: expert-finding pass time, overlap of the
    top-and-bottom experts each finds, and unforced English-to-X top-1 retrieval at the primary block."""
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
    hits = {p: [top1(*(sentence_embeddings(*models[p], list(evaluation[code]), [block])[0] for code in ("en", other)))
                for other in LANGUAGES[1:]] for p in PRECISIONS}
    ratio = times["float32"] / times["bfloat16"]
    return Row("Paper A's model in bfloat16 vs float32", f"{ratio:.2f}x faster", ">= 1.50x", ratio >= 1.5,
               f"{MODEL}, {len(sentences)} verses: {times['float32']:.1f} s vs {times['bfloat16']:.1f} s to record them; "
               f"the {k} top-and-bottom experts agree on {min(overlap.values()):.1%}-{max(overlap.values()):.1%} of units "
               f"per language; unforced en->X top-1 at block {block} on {n} verses: float32 "
               f"{np.mean(hits['float32']):.3f}, bfloat16 {np.mean(hits['bfloat16']):.3f} (mean of {len(hits['float32'])} "
               f"pairs, largest difference {np.max(np.abs(np.subtract(hits['float32'], hits['bfloat16']))):.3f})",
               time.perf_counter() - started)


ROWS = {"precision": precision_row, "steering_precision": steering_precision_row}
