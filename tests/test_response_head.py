"""companion.response_head: the response-only LM head gives TRL's fused-head numbers and gradients."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from test_reward import PAIRS, SETTINGS
from tiny import tiny_causal_lm, tiny_tokenizer
from trl.trainer.utils import add_fused_lm_head

from companion.rewards import training
from companion.rewards.response_head import applies_to, score_responses_only

FIELDS = ("log_probs", "entropy", "mean_logits", "is_top1")


def patched_policy(ours: bool) -> torch.nn.Module:
    """A tiny llama with random LoRA weights and TRL's fused head, plus ours on top when asked."""
    policy = get_peft_model(tiny_causal_lm("llama"), LoraConfig(r=4, target_modules="all-linear",
                                                                init_lora_weights=False))
    add_fused_lm_head(policy.get_base_model(), outputs=FIELDS)
    if ours:
        score_responses_only(policy.get_base_model())
    return policy


def batch() -> dict[str, torch.Tensor]:
    """Two padded rows whose labels cover the responses only (-100 on prompt and padding)."""
    ids = torch.tensor([[5, 9, 14, 33, 71, 2, 0, 0], [8, 8, 40, 41, 42, 43, 44, 12]])
    attention = (torch.arange(8) < torch.tensor([[6], [8]])).long()
    labels = ids.masked_fill((torch.arange(8) < 3) | (attention == 0), -100)
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}


def test_response_head_equals_trl_fused_head_values_and_gradients():
    outputs = {}
    for ours in (False, True):
        policy = patched_policy(ours)
        out = policy(**batch(), fused_lm_head=True)
        out.log_probs.sum().backward()
        grads = [p.grad.clone() for p in policy.parameters() if p.requires_grad]
        outputs[ours] = (out, grads)
    (trl, trl_grads), (mine, my_grads) = outputs[False], outputs[True]
    for field in FIELDS:
        torch.testing.assert_close(getattr(mine, field).float(), getattr(trl, field).float(), atol=1e-5, rtol=1e-5)
    assert (mine.log_probs[:, :2] == 0).all() and (mine.log_probs[:, 2:5] != 0).all()
    assert len(my_grads) == len(trl_grads) > 0
    for a, b in zip(my_grads, trl_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_plain_forward_and_unsupported_calls_keep_trl_behaviour():
    policy = patched_policy(ours=True)
    logits = policy(input_ids=batch()["input_ids"]).logits
    assert logits.shape == (2, 8, 300)
    shifted = policy(**{**batch(), "labels": None}, shift_labels=batch()["labels"], fused_lm_head=True)
    assert shifted.log_probs.shape == (2, 8)  # pre-shifted labels: TRL's head scores every position


def test_models_whose_logits_are_transformed_are_left_to_trl():
    model = tiny_causal_lm("llama")
    assert applies_to(model)
    model.config.final_logit_softcapping = 30.0
    assert not applies_to(model)
    before = model.forward
    score_responses_only(model)
    assert model.forward == before


def test_dpo_trainer_uses_the_response_head_and_matches_trl_reference_logps(tmp_path):
    trainer = training.dpo_trainer(tiny_causal_lm("llama"), tiny_tokenizer(), PAIRS, SETTINGS, tmp_path)
    assert trainer.model.get_base_model().forward.__func__.__module__ == "companion.rewards.response_head"
    inputs = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(trainer.model, inputs)  # policy == reference before training: zero margins
    assert loss.item() == pytest.approx(torch.nn.functional.softplus(torch.tensor(0.0)).item(), abs=1e-5)
