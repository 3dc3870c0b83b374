"""companion.core.precision: the two precisions, autocast on and off, the trainer flags, one line for a typo."""

from __future__ import annotations

import pytest
import torch

from companion.core import precision
from companion.core.errors import UserError
from companion.rewards.sampling import SampleSettings, samples_key


def test_autocast_runs_matrix_products_in_bfloat16_only_when_asked():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with precision.autocast("bfloat16"):
        assert (a @ b).dtype == torch.bfloat16
    with precision.autocast("float32"):
        assert (a @ b).dtype == torch.float32


@pytest.mark.parametrize("gpu", [False, True])
def test_trainer_flags_ask_for_bf16_mixed_precision_only_for_bfloat16_and_train_where_the_model_is(monkeypatch, gpu):
    """A model on the CPU trains there even where torch sees a GPU ("auto" chose its precision for the CPU); a model
    placed elsewhere (here the meta device stands in for a GPU) is not moved to the CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    on_cpu, elsewhere = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2, device="meta")
    assert precision.trainer_flags("bfloat16", on_cpu) == {"bf16": True, "use_cpu": True}
    assert precision.trainer_flags("float32", on_cpu) == {"bf16": False, "use_cpu": True}
    assert precision.trainer_flags("float32", elsewhere) == {"bf16": False, "use_cpu": False}


def test_unknown_precision_is_one_clear_line():
    with pytest.raises(UserError, match="unknown precision 'fp16'; use one of float32, bfloat16"):
        precision.autocast("fp16")


def test_samples_at_another_precision_are_another_cache_entry():
    s = SampleSettings(model="smollm2-135m")
    assert samples_key(s, ["a prompt"]) != samples_key(SampleSettings(model="smollm2-135m", precision="bfloat16"), ["a prompt"])


def test_a_cpu_without_native_bfloat16_gets_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with_it, without = tmp_path / "with", tmp_path / "without"
    with_it.write_text("flags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n")
    without.write_text("flags\t\t: fpu avx2 avx512f\n")
    assert precision.native_bfloat16(with_it) is True
    assert precision.native_bfloat16(without) is False
    assert precision.native_bfloat16(tmp_path / "missing") is None
    monkeypatch.setattr(precision, "native_bfloat16", lambda: False)
    assert "leave them at auto (float32 here) for speed" in precision.slow_bfloat16_note(True)
    assert precision.slow_bfloat16_note(False) is None
    monkeypatch.setattr(precision, "native_bfloat16", lambda: True)
    assert precision.slow_bfloat16_note(True) is None


def test_auto_is_bfloat16_only_where_it_is_native(monkeypatch):
    """On GPUs (a device_map) or a CPU with AVX512-BF16 or AMX; a GPU in the machine does not count for a CPU run."""
    monkeypatch.setattr(precision, "gpu_available", lambda: True)  # never asked: the model's place decides
    for native, gpu, choice in ((True, False, "bfloat16"), (False, True, "bfloat16"), (None, True, "bfloat16"),
                                (False, False, "float32"), (None, False, "float32")):
        monkeypatch.setattr(precision, "native_bfloat16", lambda native=native: native)
        assert precision.auto_choice(gpu) == choice
        assert precision.resolve("auto", gpu) == choice
    assert precision.resolve("float16") == "float16" and precision.resolve("bfloat16") == "bfloat16"
    assert "run in float32 here (this CPU has neither AVX512-BF16 nor AMX" in precision.auto_note("float32")
