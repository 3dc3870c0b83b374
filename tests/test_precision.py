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


def test_trainer_flags_ask_for_bf16_mixed_precision_on_cpu_only_for_bfloat16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert precision.trainer_flags("bfloat16") == {"bf16": True, "use_cpu": True}
    assert precision.trainer_flags("float32") == {"bf16": False, "use_cpu": True}


def test_unknown_precision_is_one_clear_line():
    with pytest.raises(UserError, match="unknown precision 'fp16'; use one of float32, bfloat16"):
        precision.autocast("fp16")


def test_samples_at_another_precision_are_another_cache_entry():
    s = SampleSettings(model="smollm2-135m")
    assert samples_key(s, ["a prompt"]) != samples_key(SampleSettings(model="smollm2-135m", precision="bfloat16"), ["a prompt"])
