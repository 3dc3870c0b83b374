"""Row 10: a float32 scoring pass under glibc's default allocator against the kernels' keep-freed settings.

Each pass runs in a fresh process (glibc reads its settings when a process starts), one thread as a notebook beside
another: SmolLM2-135M's summed response log-probs of gold-labelled pairs, batches of 32 pairs as on the pages. The
two settings alternate; the row holds when keeping freed memory is no slower and the scores are identical bit for bit.
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
from pathlib import Path

from common import Row

from companion.publish.allocator import KEEP_FREED

SETTINGS = {"glibc default": {}, "keep freed (kernels)": KEEP_FREED}


def score_once(n_pairs: int) -> dict:
    """In this process: seconds, minor page faults and digest of one scoring pass over n_pairs pairs (after a warm-up
    batch)."""
    import torch
    from bench_training import SETTINGS as TRAINING
    from bench_training import bench_pairs

    from companion.core.models import load_causal_lm
    from companion.rewards.scoring import BATCH_PAIRS, pair_logps

    torch.set_num_threads(1)
    pairs = bench_pairs(TRAINING, n_pairs)
    model, tokenizer = load_causal_lm(TRAINING.model)
    pair_logps(model, tokenizer, pairs[:BATCH_PAIRS], TRAINING.max_length, BATCH_PAIRS)
    faults, started = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    scores = pair_logps(model, tokenizer, pairs, TRAINING.max_length, BATCH_PAIRS)
    return {"seconds": time.perf_counter() - started, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults,
            "digest": hashlib.sha256(scores.tobytes()).hexdigest(), "pairs": len(pairs)}


def score_in_child(settings: dict[str, str], n_pairs: int) -> dict:
    """score_once in a fresh interpreter whose environment carries these allocator settings (and no other)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_") and key != "GLIBC_TUNABLES"}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(n_pairs)], env={**env, **settings},
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def allocator_row(quick: bool) -> Row:
    """Row 10: median pass time under each setting, alternating (A B, B A, ...), and whether the scores agree."""
    n_pairs, repeats = (64, 2) if quick else (128, 3)
    started, runs = time.perf_counter(), {name: [] for name in SETTINGS}
    for repeat in range(repeats):
        for name in list(SETTINGS)[:: -1 if repeat % 2 else 1]:
            runs[name].append(score_in_child(SETTINGS[name], n_pairs))
    median = {name: statistics.median(r["seconds"] for r in rs) for name, rs in runs.items()}
    faults = {name: statistics.median(r["faults"] for r in rs) for name, rs in runs.items()}
    same = len({r["digest"] for rs in runs.values() for r in rs}) == 1
    ours, reference = "keep freed (kernels)", "glibc default"
    ratio = median[ours] / median[reference]
    pairs = runs[ours][0]["pairs"]
    return Row("Allocator (float32 scoring pass, keep freed vs glibc default)", f"{ratio:.3f}x",
               "<= 1.00x, same scores", ratio <= 1.0 and same,
               f"SmolLM2-135M, {pairs} pairs, 1 thread, a fresh process per pass, median of {repeats}: "
               f"{median[ours]:.2f} s vs {median[reference]:.2f} s; minor page faults {faults[ours]:.0f} vs "
               f"{faults[reference]:.0f}; scores {'identical' if same else '**differ**'}"
               f"{' (quick)' if quick else ''}", time.perf_counter() - started)


ROWS = {"allocator": allocator_row}

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    print(json.dumps(score_once(int(sys.argv[1]))))
