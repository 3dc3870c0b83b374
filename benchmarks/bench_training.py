"""Row 7: one DPO step against one reward-model step on the same pairs, batch and lengths."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from common import Row
from transformers import Trainer, TrainerCallback

from companion.core.models import load_causal_lm
from companion.rewards.gold import gold_labeller
from companion.rewards.preferences import Pair
from companion.rewards.scoring import keep_fitting
from companion.rewards.sentiment_sets import SPECS, BuildSettings, build_set, shuffled_sources
from companion.rewards.training import TrainSettings, dpo_trainer, load_reward_backbone, reward_trainer

# notebooks/profiles/paper_b.default.yaml: SmolLM2-135M, pairs of at most 64 tokens, batch 8, LoRA rank 16.
SETTINGS = TrainSettings(model="smollm2-135m", max_length=64, batch_size=8, lora_r=16)


class StepTimer(TrainerCallback):
    """Records the wall-clock seconds of every optimizer step."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._started = 0.0

    def on_step_begin(self, args: object, state: object, control: object, **kwargs: object) -> None:
        """Start the clock."""
        self._started = time.perf_counter()

    def on_step_end(self, args: object, state: object, control: object, **kwargs: object) -> None:
        """Stop the clock."""
        self.seconds.append(time.perf_counter() - self._started)


def step_seconds(trainer: Trainer) -> list[float]:
    """Train and return each step's seconds (DPO's reference log-probs are computed before the first step)."""
    timer = StepTimer()
    trainer.add_callback(timer)
    trainer.train()
    return timer.seconds


def bench_pairs(s: TrainSettings, n: int) -> list[Pair]:
    """n gold-labelled pairs with human-written endings (no sampling) that fit max_length (both trainers see them)."""
    _, tokenizer = load_causal_lm(s.model)
    build = BuildSettings(n_train=n, n_test=n)
    source = shuffled_sources(test=False, seed=0)["imdb"]
    pairs = build_set(SPECS["human-endings"], source, 4 * n, build, gold_labeller(), set(), seed=0)[0]
    return keep_fitting(pairs, tokenizer, s.max_length)[:n]


def training_row(quick: bool) -> Row:
    """Row 7: median DPO step over median reward-model step, after one warm-up step each."""
    steps = 2 if quick else 4
    s = TrainSettings(**{**SETTINGS.__dict__, "steps": steps})
    pairs = bench_pairs(s, steps * s.batch_size)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        model, tokenizer = load_causal_lm(s.model)
        dpo = step_seconds(dpo_trainer(model, tokenizer, pairs, s, Path(tmp) / "dpo"))[1:]
        rm = step_seconds(reward_trainer(load_reward_backbone(s.model), tokenizer, pairs, s, Path(tmp) / "rm"))[1:]
    ratio = statistics.median(dpo) / statistics.median(rm)
    return Row("Preference training (DPO step vs reward-model step)", f"{ratio:.2f}x", "<= 1.50x", ratio <= 1.5,
               f"{s.model}, batch {s.batch_size} pairs, <= {s.max_length} tokens, LoRA r={s.lora_r}, reference "
               f"log-probs precomputed: {statistics.median(dpo):.2f} s vs {statistics.median(rm):.2f} s "
               f"(median of {len(dpo)} steps after a warm-up)", time.perf_counter() - started)


ROWS = {"training": training_row}
