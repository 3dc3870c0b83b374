"""The arithmetic of paper B's sampling and training: float32, or bfloat16 matrix products under torch.autocast.

bfloat16 autocast keeps weights, norms, softmax and the loss in float32 and runs the matrix products in bfloat16:
the mixed precision TRL and transformers use on GPUs (`bf16=True`). On a CPU with AVX512-BF16 or AMX it is faster
than float32 (benchmarks/bench_precision.py); on a CPU without them it is slower, so float32 stays available as a
parameter. Scoring the pairs stays in float32 (companion.rewards.scoring says why).

The default of both papers' parameters (`dtype` for paper A, `precision` for paper B) is "auto": bfloat16 where it is
native (a model placed on GPUs by a device_map, or a CPU with AVX512-BF16 or AMX), float32 elsewhere. The runner
resolves it before anything runs, so a results file records the precision its numbers were computed in.
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
AUTO = "auto"  # a dtype or precision chosen for the machine: auto_choice()
PARAMETERS = ("dtype", "precision")  # the notebook parameters that take AUTO


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


def trainer_flags(precision: str, model: torch.nn.Module) -> dict[str, bool]:
    """TrainingArguments for this precision and model: bf16 mixed precision when asked, and training where the model
    was placed (a model loaded without a device_map stays on the CPU even where a GPU is present, as "auto" assumed)."""
    return {"bf16": check(precision) == "bfloat16",
            "use_cpu": all(p.device.type == "cpu" for p in model.parameters())}


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


def auto_choice(gpu: bool = False) -> str:
    """What "auto" is: bfloat16 for a model placed on GPUs (gpu: its device_map is set) or on a CPU with AVX512-BF16
    or AMX, float32 on any other CPU. A GPU in the machine does not count when the model runs on the CPU."""
    return "bfloat16" if gpu or native_bfloat16() else "float32"


def resolve(value: str, gpu: bool = False) -> str:
    """A dtype or precision with "auto" replaced by auto_choice(gpu); any other value as given."""
    return auto_choice(gpu) if value == AUTO else value


def auto_note(choice: str) -> str:
    """The line the runner prints when "auto" became choice on this machine's CPU."""
    why = "this CPU has AVX512-BF16 or AMX" if choice == "bfloat16" else "this CPU has neither AVX512-BF16 nor AMX"
    return (f"companion: dtype and precision 'auto' run in {choice} here ({why}; bfloat16 where a device_map places the "
            "model on GPUs); set them to float32 or bfloat16 to choose")


def slow_bfloat16_note(asked: bool) -> str | None:
    """A one-line note when bfloat16 is asked for on a CPU-only machine whose CPU lacks it (it then runs slower)."""
    if asked and native_bfloat16() is False and not gpu_available():
        return ("companion: note: this CPU has neither AVX512-BF16 nor AMX, so bfloat16 (dtype, precision) runs slower "
                "than float32 here; leave them at auto (float32 here) for speed (the numbers then differ slightly: "
                "benchmarks/bench_precision.py)")
    return None
