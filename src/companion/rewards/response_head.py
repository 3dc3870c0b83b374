"""A response-only LM head for TRL's DPOTrainer on CPU: log-probabilities of the response tokens in one matmul.

TRL scores log-probabilities through a fused, chunked LM head. On GPUs it projects only the positions that have a
label; without Triton (on CPU) it projects every position, prompt and padding included, tile by tile, and
recomputes the projection in the backward pass. For small models on a CPU that costs more than the policy's own
forward and backward. `score_responses_only` swaps in a plain head that projects the labelled positions once and
returns the same fields (per-token log-probabilities, and the entropy, mean logit and top-1 hit that TRL logs).
"""

from __future__ import annotations

import types
from collections.abc import Callable

import torch
from transformers import PreTrainedModel
from trl.trainer.utils import FusedCausalLMOutput

from companion.core.forward import plain_logits


def applies_to(model: PreTrainedModel) -> bool:
    """True when the plain head gives TRL's numbers: a CPU model whose logits are the head's output as they are (a
    model with a logit transform is left to TRL's own head)."""
    return model.device.type == "cpu" and plain_logits(model)


def response_scores(hidden: torch.Tensor, labels: torch.Tensor, head: torch.nn.Module) -> FusedCausalLMOutput:
    """TRL's fused-head fields from the last hidden states (batch x seq x width) and next-token labels (-100: none)."""
    mask = labels != -100
    logits = head(hidden[mask]).float()
    log_softmax = logits.log_softmax(dim=-1)
    targets = labels[mask]
    picked = log_softmax.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():  # TRL reads these as metrics only
        entropy = -(log_softmax.exp() * log_softmax).sum(dim=-1)
        mean_logits = logits.mean(dim=-1)
        is_top1 = logits.argmax(dim=-1) == targets

    def spread(values: torch.Tensor) -> torch.Tensor:
        """Values of the labelled positions scattered into a zero (batch x seq) tensor."""
        return values.new_zeros(mask.shape).masked_scatter(mask, values)

    log_probs = spread(picked)
    return FusedCausalLMOutput(loss=-log_probs.sum() / mask.sum().clamp(min=1), log_probs=log_probs,
                               entropy=spread(entropy), mean_logits=spread(mean_logits), is_top1=spread(is_top1),
                               label_mask=mask)


def score_responses_only(model: PreTrainedModel) -> None:
    """Replace the fused head TRL patched into model.forward by the response-only head, where that is exact.

    model is the causal LM TRL patched (for a PEFT policy, `get_base_model()`). Calls that need more than
    log-probabilities of next-token labels (pre-shifted labels, MoE router logits, item counts) go to TRL's head.
    """
    if not applies_to(model):
        return
    trl_forward: Callable = model.forward

    def forward(self: PreTrainedModel, *args: object, fused_lm_head: bool = False, labels: torch.Tensor | None = None,
                **kwargs: object) -> object:
        """TRL's forward, except that fused scoring of plain next-token labels projects the labelled tokens only."""
        special = {"shift_labels", "num_items_in_batch", "output_router_logits"} & kwargs.keys()
        if not fused_lm_head or labels is None or special:
            return trl_forward(*args, fused_lm_head=fused_lm_head, labels=labels, **kwargs)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]
        return response_scores(hidden, labels[:, 1:], self.get_output_embeddings())

    model.forward = types.MethodType(forward, model)
