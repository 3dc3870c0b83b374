"""glibc's allocator settings for the notebooks' kernels: keep freed memory for reuse instead of handing it back.

By default glibc serves each allocation above a threshold (at most 32 MiB) with a fresh mmap, unmaps it when freed,
and trims the heap's free top. PyTorch on a CPU makes such allocations all the time (one scoring batch's logits over
SmolLM2's 49,152 tokens take about 240 MB), so the operating system maps and zero-fills the same memory again and
again. With mmap and trimming off (`KEEP_FREED`) freed blocks are reused, and a kernel's resident memory stays at its
high-water mark. Benchmarks row 10 (benchmarks/bench_allocator.py) measures a float32 scoring pass both ways: its
time, page faults and peak memory, and whether the scores are the same bit for bit.

The runner puts the settings in the environment of each kernel it starts (glibc reads them when a process starts),
on this machine or on a Ray worker; kernels started by JupyterLab do not get them. A user's own MALLOC_* variables or
glibc.malloc tunables win. Other C libraries ignore these variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

KEEP_FREED = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40)}


def tunes_allocator(key: str, value: str) -> bool:
    """Whether an environment variable sets glibc's allocator: a MALLOC_* variable, or glibc.malloc tunables."""
    return key.startswith("MALLOC_") or (key == "GLIBC_TUNABLES" and "glibc.malloc." in value)


def kernel_settings(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """KEEP_FREED for a notebook's kernel, or nothing where the user already tunes glibc's allocator."""
    return {} if any(tunes_allocator(key, value) for key, value in environ.items()) else dict(KEEP_FREED)
