"""Row 10: a float32 scoring pass under glibc's default allocator against the kernels' keep-freed settings.

Each pass runs in a fresh process (glibc reads its settings when a process starts), one thread as a notebook beside
another: SmolLM2-135M's summed response log-probs of gold-labelled pairs, batches of 32 pairs as on the pages. The
two settings alternate; the row holds when keeping freed memory is no slower, the scores are identical bit for bit
and the peak resident memory grows by at most a tenth.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from bench_training import SETTINGS, bench_pairs
from common import Row, alternating, ratio_row

from companion.core.models import load_causal_lm
from companion.publish.allocator import KEEP_FREED, tunes_allocator
from companion.rewards.scoring import BATCH_PAIRS, pair_logps

DEFAULT, KEPT = "glibc default", "keep freed (kernels)"
ALLOCATORS = {DEFAULT: {}, KEPT: KEEP_FREED}


def score_once(n_pairs: int) -> dict[str, float | int | str]:
    """In this process: seconds, page faults, peak memory and scores' digest of one pass (after a warm-up batch)."""
    torch.set_num_threads(1)
    pairs = bench_pairs(SETTINGS, n_pairs)
    model, tokenizer = load_causal_lm(SETTINGS.model)
    pair_logps(model, tokenizer, pairs[:BATCH_PAIRS], SETTINGS.max_length, BATCH_PAIRS)
    faults, started = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    scores = pair_logps(model, tokenizer, pairs, SETTINGS.max_length, BATCH_PAIRS)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"seconds": time.perf_counter() - started, "faults": usage.ru_minflt - faults, "peak_kib": usage.ru_maxrss,
            "digest": hashlib.sha256(scores.tobytes()).hexdigest(), "pairs": len(pairs)}


def score_in_child(settings: dict[str, str], n_pairs: int) -> dict[str, float | int | str]:
    """score_once in a fresh interpreter whose environment carries these allocator settings (and no other); the
    child's errors reach the terminal."""
    env = {key: value for key, value in os.environ.items() if not tunes_allocator(key, value)}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(n_pairs)], env={**env, **settings},
                          stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def allocator_row(quick: bool) -> Row:
    """Row 10: median pass time, page faults and peak memory under each setting, alternating, and whether the scores
    agree."""
    n_pairs, repeats = (64, 2) if quick else (128, 3)
    runs = alternating({name: lambda settings=settings: score_in_child(settings, n_pairs)
                        for name, settings in ALLOCATORS.items()}, repeats)
    median = {name: {key: statistics.median(r[key] for r in rs) for key in ("seconds", "faults", "peak_kib")}
              for name, rs in runs.items()}
    same = len({r["digest"] for rs in runs.values() for r in rs}) == 1
    memory = median[KEPT]["peak_kib"] / median[DEFAULT]["peak_kib"]
    row = ratio_row("Allocator (float32 scoring pass, keep freed vs glibc default)",
                    {name: m["seconds"] for name, m in median.items()}, KEPT, DEFAULT, 1.0,
                    f"SmolLM2-135M, {runs[KEPT][0]['pairs']} pairs, 1 thread, a fresh process per pass, {repeats} each")
    return replace(row, bar="<= 1.00x, same scores, peak memory <= 1.10x", holds=row.holds and same and memory <= 1.1,
                   detail=f"{row.detail}; minor page faults {median[KEPT]['faults']:.0f} vs {median[DEFAULT]['faults']:.0f}; "
                          f"peak memory {memory:.2f}x ({median[KEPT]['peak_kib'] / 2**20:.2f} vs "
                          f"{median[DEFAULT]['peak_kib'] / 2**20:.2f} GiB); scores {'identical' if same else '**differ**'}"
                          f"{' (quick)' if quick else ''}")


ROWS = {"allocator": allocator_row}

if __name__ == "__main__":
    print(json.dumps(score_once(int(sys.argv[1]))))
