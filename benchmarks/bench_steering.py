"""Rows 1-5: expert finding and the embedding pass (AP scoring, hook overheads, batching, the machine's limit)."""

from __future__ import annotations

import time
from functools import lru_cache

import numpy as np
import pandas as pd
import torch
from common import LANGUAGES, MODEL, Row, ratio_row, side_by_side
from sklearn.metrics import average_precision_score
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from companion.core.corpora import parallel_corpus
from companion.core.forward import StopForward, decoder_blocks, forward_batches, length_batches, removing
from companion.core.models import load_causal_lm
from companion.steering.average_precision import average_precision
from companion.steering.embeddings import sentence_embeddings
from companion.steering.recording import record_activations, stacked, unit_modules


@lru_cache(maxsize=1)
def model_and_tokenizer() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The embedded Gemma 3 270M in float32, loaded once for every row."""
    return load_causal_lm(MODEL)


@lru_cache(maxsize=1)
def eval_sentences() -> tuple[str, ...]:
    """The default corpus: 500 eval verses in each default language, language by language."""
    return tuple(stacked(parallel_corpus(LANGUAGES, 500, "eval", 0))[0])


def typical(n: int) -> list[str]:
    """n eval sentences of median token length, as neighbours in the length-bucketed corpus run see them."""
    sentences = list(eval_sentences())
    order = np.argsort(token_lengths(model_and_tokenizer()[1], sentences), kind="stable")
    start = (len(order) - n) // 2
    return [sentences[i] for i in order[start:start + n]]


def synthetic_activations(n_per_language: int, units: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded float32 activations (sentences x units), a few units shifted per language, and one-hot labels."""
    rng = np.random.default_rng(seed)
    languages = np.repeat(np.arange(len(LANGUAGES)), n_per_language)
    activations = rng.standard_normal((len(languages), units), dtype=np.float32)
    shift = rng.normal(0, 0.5, (len(LANGUAGES), units)).astype(np.float32)
    activations += shift[languages] * (rng.random(units) < 0.1)
    return activations, np.eye(len(LANGUAGES), dtype=bool)[languages]


def sklearn_ap(activations: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The reference way: one average_precision_score call per unit and language."""
    return np.array([[average_precision_score(labels[:, c], activations[:, u]) for u in range(activations.shape[1])]
                     for c in range(labels.shape[1])])


def ap_row(quick: bool) -> Row:
    """Row 1: all-units AP against a per-unit sklearn loop on a subset of units, extrapolated linearly."""
    model, _ = model_and_tokenizer()
    units = sum(m.in_features for m in unit_modules(model).values())
    activations, labels = synthetic_activations(600, units)
    subset = 100 if quick else 500
    head = activations[:, :subset]  # a view: the reference reads the same memory as ours
    times = side_by_side({"ours": lambda: average_precision(activations, labels),
                          "sklearn": lambda: sklearn_ap(head, labels)}, repeats=1 if quick else 3, warmup=False)
    reference = times["sklearn"] * units / subset
    diff = float(np.abs(average_precision(head, labels) - sklearn_ap(head, labels)).max())
    speedup = reference / times["ours"]
    return Row("AP scoring (all units vs per-unit sklearn)", f"{speedup:.0f}x faster, diff {diff:.1e}",
               ">= 100x, diff <= 1e-6", speedup >= 100 and diff <= 1e-6,
               f"{activations.shape[0]} sentences x {units:,} units (synthetic, seeded), {len(LANGUAGES)} languages: "
               f"ours {times['ours']:.2f} s on {torch.get_num_threads()} threads; sklearn {times['sklearn']:.2f} s "
               f"on {subset} units, x{units / subset:.1f} "
               f"= {reference:.0f} s (linear extrapolation)", times["ours"] + times["sklearn"])


def truncated_pass(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sentences: list[str]) -> np.ndarray:
    """The forward pass record_activations runs (same batches, stopped at the last unit module), recording nothing."""

    def stop(module: torch.nn.Module, args: tuple) -> None:
        raise StopForward

    last = list(unit_modules(model).values())[-1]
    with removing([last.register_forward_pre_hook(stop)]):
        return forward_batches(model, tokenizer, sentences, lambda batch, output: batch["attention_mask"][:, :1])


def capture_row(quick: bool) -> Row:
    """Row 2: recording and pooling every MLP unit against the same truncated pass without recording."""
    model, tokenizer = model_and_tokenizer()
    sentences, repeats = typical(8 if quick else 16), 2 if quick else 7
    times = side_by_side({"record": lambda: record_activations(model, tokenizer, sentences),
                          "plain": lambda: truncated_pass(model, tokenizer, sentences)}, repeats)
    return ratio_row("Capture overhead (record + pool all MLP units)", times, "record", "plain", 1.10,
                     f"{len(sentences)} median-length sentences (one batch), {repeats} interleaved repeats; plain = "
                     "the same batch, stopped at the same layer by one hook, nothing kept")


def random_units(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, k: int, seed: int = 0) -> pd.DataFrame:
    """k units drawn at random over all MLP modules, each with a made-up on_p50 value to force."""
    _, units = record_activations(model, tokenizer, ["a"])
    chosen = units.sample(k, random_state=seed).sort_values("unit")
    return chosen.assign(on_p50=np.random.default_rng(seed).normal(size=k).astype(np.float32))


def intervention_row(quick: bool) -> Row:
    """Row 3: the embedding pass of every block while forcing 2,000 units, against the same pass unforced."""
    model, tokenizer = model_and_tokenizer()
    sentences, experts, repeats = typical(8 if quick else 16), random_units(model, tokenizer, 2000), 2 if quick else 7
    last = [len(decoder_blocks(model)) - 1]
    times = side_by_side({"forced": lambda: sentence_embeddings(model, tokenizer, sentences, last, experts=experts),
                          "plain": lambda: sentence_embeddings(model, tokenizer, sentences, last)}, repeats)
    return ratio_row("Intervention overhead (2,000 units forced)", times, "forced", "plain", 1.05,
                     f"{len(sentences)} median-length sentences (one batch) through all blocks, "
                     f"{repeats} interleaved repeats")


def padded_share(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    """Share of the tokens in padded batches that are padding."""
    padded = sum(len(batch) * lengths[batch].max() for batch in batches)
    return 1 - lengths.sum() / padded


def token_lengths(tokenizer: PreTrainedTokenizerBase, sentences: list[str], max_tokens: int = 128) -> np.ndarray:
    """Token counts as forward_batches sees them (special tokens included, truncated to max_tokens)."""
    ids = tokenizer(sentences, truncation=True, max_length=max_tokens)["input_ids"]
    return np.array([len(row) for row in ids])


def batching_row(quick: bool) -> Row:
    """Row 4: padding share of length-bucketed batches on the default corpus, and speed against batch size 1."""
    model, tokenizer = model_and_tokenizer()
    lengths = token_lengths(tokenizer, list(eval_sentences()))
    ours = padded_share(lengths, length_batches(lengths, 32))
    in_order = padded_share(lengths, [np.arange(i, min(i + 32, len(lengths))) for i in range(0, len(lengths), 32)])
    sentences, last = typical(8 if quick else 16), [len(decoder_blocks(model)) - 1]
    times = side_by_side({f"batch {b}": lambda b=b: sentence_embeddings(model, tokenizer, sentences, last, batch_size=b)
                          for b in (32, 1)}, repeats=1 if quick else 2)
    rates = {name: len(sentences) / t for name, t in times.items()}
    return Row("Batching (padded tokens, length buckets)", f"{ours:.1%} padding", "<= 10%", ours <= 0.10,
               f"{len(lengths):,} sentences, batch 32 (in corpus order: {in_order:.1%}); embedding pass "
               f"{rates['batch 32']:.1f} sentences/s vs {rates['batch 1']:.1f} at batch 1 "
               f"({rates['batch 32'] / rates['batch 1']:.2f}x, {len(sentences)} median-length sentences)",
               sum(times.values()))


def matmul_gflops(size: int = 2048) -> float:
    """This machine's float32 matmul rate in GFLOP/s (median of five size x size products)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    times = side_by_side({"matmul": lambda: a @ b}, repeats=5)
    return 2 * size**3 / times["matmul"] / 1e9


def non_embedding_parameters(model: PreTrainedModel) -> int:
    """Parameters outside the input embedding (which a forward pass looks up rather than multiplies)."""
    return sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()


def peak_row(quick: bool) -> Row:
    """Row 5: achieved GFLOP/s of the embedding pass against the measured matmul peak, same thread count."""
    model, tokenizer = model_and_tokenizer()
    sentences, last = typical(16 if quick else 32), [len(decoder_blocks(model)) - 1]
    tokens = int(token_lengths(tokenizer, sentences).sum())
    started = time.perf_counter()
    pass_seconds = side_by_side({"pass": lambda: sentence_embeddings(model, tokenizer, sentences, last)},
                                repeats=1 if quick else 3)["pass"]
    peak = matmul_gflops()
    achieved = 2 * non_embedding_parameters(model) * tokens / pass_seconds / 1e9
    share = achieved / peak
    return Row("Physical limit (embedding pass vs fp32 matmul peak)", f"{share:.0%} of peak", ">= 40%", share >= 0.40,
               f"{achieved:.1f} GFLOP/s (2 x {non_embedding_parameters(model) / 1e6:.1f}M params x {tokens:,} real "
               f"tokens in {pass_seconds:.2f} s) vs peak {peak:.1f} GFLOP/s (2048^2 matmul), "
               f"{torch.get_num_threads()} threads",
               time.perf_counter() - started)


ROWS = {"ap": ap_row, "capture": capture_row, "intervention": intervention_row, "batching": batching_row,
        "peak": peak_row}
