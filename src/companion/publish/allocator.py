"""glibc's allocator settings for the notebooks' kernels: keep freed memory for reuse instead of handing it back.

By default glibc serves each allocation above a threshold (at most 32 MiB) with a fresh mmap, unmaps it when freed,
and trims the heap's free top. PyTorch on a CPU makes such allocations all the time (one scoring batch's logits over
SmolLM2's 49,152 tokens take about 240 MB), so the operating system maps and zero-fills the same memory again and
again. With mmap and trimming off (`KEEP_FREED`) freed blocks are reused. The numbers are the same bit for bit. On the
2-core virtual machine the book is built on, a float32 scoring pass over 128 gold-labelled pairs ran 1.12x faster
(benchmarks/bench_allocator.py; 13 thousand page faults against 590 thousand); sampling, training and model loading
ran 1-17% faster in single runs, with a peak resident memory within about 10% of the default's.

The runner puts the settings in each kernel's environment (glibc reads them when a process starts). A user's own
MALLOC_* or GLIBC_TUNABLES settings win. Other C libraries ignore these variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

KEEP_FREED = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40)}


def kernel_settings(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """KEEP_FREED for a notebook's kernel, or nothing where the user already tunes glibc's allocator."""
    if "GLIBC_TUNABLES" in environ or any(key.startswith("MALLOC_") for key in environ):
        return {}
    return dict(KEEP_FREED)
