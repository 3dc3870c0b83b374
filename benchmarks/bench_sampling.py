"""Row 11: paper A's sampled test, one seed's arms drawn side by side in one batch against one call per arm."""

from __future__ import annotations

from contextlib import ExitStack, nullcontext

from bench_steering import model_and_tokenizer, random_units
from common import Row, side_by_side

from companion.steering.generation import sample_texts
from companion.steering.interventions import intervene


def arms_row(quick: bool) -> Row:
    """Row 11: k=0 and 10 forced arms (2,000 random units each) of 11 samples from <bos>, as the generation page draws
    a seed's: one block of rows per arm in one batch, against one call per arm; the same samples both ways."""
    model, tokenizer = model_and_tokenizer()
    per_seed, tokens, forced = 11, 8 if quick else 16, 4 if quick else 10  # the page: 5 languages x (experts, control)
    arms = [None, *(random_units(model, tokenizer, 2000, seed) for seed in range(forced))]

    def apart() -> list[str]:
        texts = []
        for units in arms:
            with intervene(model, units) if units is not None else nullcontext():
                texts += sample_texts(model, tokenizer, "", per_seed, 0, tokens, 0.8)
        return texts

    def together() -> list[str]:
        with ExitStack() as stack:
            for block, units in enumerate(arms):
                if units is not None:
                    stack.enter_context(intervene(model, units, rows=slice(block * per_seed, (block + 1) * per_seed)))
            return sample_texts(model, tokenizer, "", per_seed, 0, tokens, 0.8, blocks=len(arms))

    same = sum(a == b for a, b in zip(apart(), together()))
    times = side_by_side({"together": together, "apart": apart}, repeats=1 if quick else 3)
    speedup = times["apart"] / times["together"]
    return Row("Sampled test: a seed's arms side by side (one batch) vs one call per arm", f"{speedup:.1f}x faster",
               ">= 2x", speedup >= 2,
               f"{len(arms)} arms (k=0 and {forced} of 2,000 random units) x {per_seed} samples of {tokens} tokens from "
               f"<bos>, Gemma 3 270M float32: {times['together']:.1f} s vs {times['apart']:.1f} s (medians); "
               f"{same} of {len(arms) * per_seed} samples identical both ways (a difference is float rounding)",
               times["together"] + times["apart"])


ROWS = {"sampled_arms": arms_row}
