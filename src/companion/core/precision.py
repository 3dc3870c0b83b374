"""The arithmetic of paper B's sampling and training: float32, or bfloat16 matrix products under torch.autocast.

bfloat16 autocast keeps weights, norms, softmax and the loss in float32 and runs the matrix products in bfloat16:
the mixed precision TRL and transformers use on GPUs (`bf16=True`). On a CPU with AVX512-BF16 or AMX it is faster
than float32 (benchmarks/bench_precision.py); on a CPU without them it is slower, so float32 stays available as a
parameter. Scoring the pairs stays in float32 (companion.rewards.scoring says why).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from companion.core.errors import UserError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("float32", "bfloat16")


def check(precision: str) -> str:
    """The precision itself, or one clear line naming the choices."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision '{precision}'; use one of {', '.join(PRECISIONS)}")
    return precision


def autocast(precision: str, device: torch.device | str = "cpu") -> torch.autocast:
    """A context in which matrix products run in bfloat16 when precision is "bfloat16" (a no-op for "float32")."""
    import torch  # in each function, not above: the runner checks precisions without loading torch

    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                          enabled=check(precision) == "bfloat16")


def trainer_flags(precision: str) -> dict[str, bool]:
    """TrainingArguments for this precision: bf16 mixed precision when asked, on a GPU or on the CPU."""
    import torch

    return {"bf16": check(precision) == "bfloat16", "use_cpu": not torch.cuda.is_available()}


def native_bfloat16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool | None:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX); None where the system does not say."""
    try:
        flags = cpuinfo.read_text().split()
    except OSError:
        return None
    return "avx512_bf16" in flags or "amx_bf16" in flags


def gpu_available() -> bool:
    """Whether torch sees a GPU here, asked in a child process: the runner, which asks, never loads torch itself."""
    try:
        found = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                               capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return found.stdout.strip() == "True"


def slow_bfloat16_note(asked: bool) -> str | None:
    """A one-line note when bfloat16 is asked for on a CPU-only machine whose CPU lacks it (it then runs slower)."""
    if asked and native_bfloat16() is False and not gpu_available():
        return ("companion: note: this CPU has neither AVX512-BF16 nor AMX, so bfloat16 (dtype, precision) runs slower "
                "than float32 here; add --set dtype=float32 --set precision=float32 for speed (the numbers then differ "
                "slightly: benchmarks/bench_precision.py)")
    return None
