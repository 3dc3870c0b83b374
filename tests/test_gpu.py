"""On a CUDA device (the paper profile's hardware): steering and DPO run there and agree with the CPU.

Skipped where no GPU is present (CI); run on a GPU machine with `pytest tests/test_gpu.py`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_reward import PAIRS, SETTINGS
from tiny import CORPUS, tiny_causal_lm, tiny_tokenizer

from companion.rewards import scoring, training
from companion.rewards.response_head import applies_to
from companion.steering.embeddings import sentence_embeddings
from companion.steering.expertise import expertise_table, select_experts
from companion.steering.recording import record_activations

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
LANGUAGES = ["en", "fr", "de", "es", "ru", "en", "en", "en"]


def _steering(device: str, dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Unit activations and steered block outputs of a tiny Gemma 3 on one device and dtype."""
    model, tokenizer = tiny_causal_lm("gemma3_text").to(device=device, dtype=dtype), tiny_tokenizer()
    activations, units = record_activations(model, tokenizer, CORPUS, batch_size=4)
    experts = select_experts(expertise_table(activations, units, LANGUAGES), "fr", 8, "top_bottom")
    steered = sentence_embeddings(model, tokenizer, CORPUS, [0, 2], experts=experts, batch_size=4)
    return activations, steered


def test_steering_on_the_gpu_matches_the_cpu() -> None:
    cpu_acts, cpu_steered = _steering("cpu", torch.float32)
    gpu_acts, gpu_steered = _steering("cuda", torch.float32)
    np.testing.assert_allclose(gpu_acts, cpu_acts, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(gpu_steered, cpu_steered, rtol=1e-3, atol=1e-4)
    bf16_acts, _ = _steering("cuda", torch.bfloat16)  # the paper profile's dtype: close, not equal
    assert np.corrcoef(bf16_acts.ravel(), cpu_acts.ravel())[0, 1] > 0.99


def test_dpo_on_the_gpu_keeps_trl_head_and_starts_at_log_two(tmp_path) -> None:
    model, tokenizer = tiny_causal_lm("llama").to("cuda"), tiny_tokenizer()
    trainer = training.dpo_trainer(model, tokenizer, PAIRS, SETTINGS, tmp_path)
    assert not applies_to(trainer.model.get_base_model()), "on a GPU TRL's own fused head scores the responses"
    trainer.train()
    first = next(entry for entry in trainer.state.log_history if "loss" in entry)
    assert first["loss"] == pytest.approx(np.log(2), abs=0.05), "policy equals its reference before the first step"
    policy = trainer.model.eval()
    logps = scoring.pair_logps(policy, tokenizer, PAIRS, SETTINGS.max_length)
    assert np.isfinite(logps).all() and logps.shape == (len(PAIRS), 2)
