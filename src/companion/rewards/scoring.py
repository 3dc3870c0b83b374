"""Score preference pairs with both reward models.

DPORM: r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)), summed over the response tokens only. EXRM: the scalar
head's output on prompt + response + EOS, at the token the sequence classifier reads. A pair is ranked correctly when
the chosen response scores higher.

Scoring runs in float32 whatever the training precision: in bfloat16 a DPORM reward, a small difference of two large
log-probs, changed the ranking of 5.5% of pairs against 0.4% for EXRM (benchmarks/bench_precision.py), noise that would
pull DPORM's accuracy toward chance and tilt the comparison.

On a CPU both models score with their LoRA adapters folded into a copy of the weights (`folded`): the same function up
to float32 rounding, about a fifth faster than running the adapters beside the frozen weights. Each prompt runs once
and both responses continue from its cached keys and values (`shared_states`). Each model's scores of a
set of pairs are cached in its own cache folder, so a set scored by one notebook (the fit check, the validation pairs
of the learning-rate search) is read back by the next."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from peft import PeftModel
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from companion.core import threads
from companion.core.cache import cache_key
from companion.core.forward import next_token_logps, position_ids, row_sums
from companion.core.models import load_causal_lm
from companion.rewards.baselines import choice_accuracy
from companion.rewards.preferences import Pair, PreferenceSet
from companion.rewards.references import cached_arrays, library_versions
from companion.rewards.training import RewardModels, pairs_fingerprint, reference_folder

BATCH_PAIRS = 32  # pairs per scoring batch on the pages (part of every score cache key)


def common_prefix_length(a: list[int], b: list[int]) -> int:
    """Number of leading tokens two id lists share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def tokenize_pair(tokenizer: PreTrainedTokenizerBase, pair: Pair) -> dict[str, list[int]]:
    """Prompt, chosen and rejected ids split as TRL's DPOTrainer does (EOS appended, shared prompt prefix)."""
    eos = tokenizer.eos_token
    prompt = tokenizer(pair["prompt"])["input_ids"]
    full = {key: tokenizer(pair["prompt"] + pair[key] + eos)["input_ids"] for key in ("chosen", "rejected")}
    cut = min(common_prefix_length(prompt, ids) for ids in full.values())
    return {"prompt_ids": prompt[:cut], **{f"{key}_ids": ids[cut:] for key, ids in full.items()}}


@dataclass(frozen=True)
class SharedBatch:
    """Pairs scored together: each prompt once, left-padded (B, P) with 1 on its real tokens in prompt_mask, then both
    responses right-padded (2B, R) in the order chosen, rejected of each pair, with 1 on their real tokens in mask."""

    prompts: torch.Tensor
    prompt_mask: torch.Tensor
    responses: torch.Tensor
    mask: torch.Tensor

    def full_ids(self) -> torch.Tensor:
        """(2B, P + R) ids of each prompt followed by each of its responses."""
        return torch.cat([self.prompts.repeat_interleave(2, dim=0), self.responses], 1)


def padded(rows: list[list[int]], pad_id: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of id lists padded to the longest (at least one column), on the right or the left."""
    width = max(1, max(map(len, rows)))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, values in enumerate(rows):
        cols = slice(width - len(values), width) if left else slice(0, len(values))
        ids[row, cols], mask[row, cols] = torch.tensor(values, dtype=torch.long), 1
    return ids, mask


def shared_batches(tokens: list[dict[str, list[int]]], pad_id: int, max_length: int, batch_size: int,
                   desc: str) -> Iterator[tuple[np.ndarray, SharedBatch]]:
    """Pair indices and their SharedBatch, at most batch_size pairs whose longer responses have similar lengths (so
    little padding is run), pairs without a prompt batched apart; each sequence cut to max_length tokens; a tqdm bar,
    and the core share followed between batches."""
    prompts = [t["prompt_ids"][:max_length] for t in tokens]
    responses = [[t[f"{key}_ids"][:max_length - len(p)] for key in ("chosen", "rejected")] for t, p in zip(tokens, prompts)]
    order = sorted(range(len(tokens)), key=lambda i: (len(prompts[i]) > 0, max(map(len, responses[i])), len(prompts[i])))
    groups = [list(group) for _, group in groupby(order, key=lambda i: len(prompts[i]) > 0)]
    chunks = [np.array(group[start:start + batch_size]) for group in groups for start in range(0, len(group), batch_size)]
    for idx in tqdm(chunks, desc=desc, leave=False):
        threads.follow()
        no_prompt = torch.zeros((len(idx), 0), dtype=torch.long)  # nothing runs before the responses
        prompt_ids, prompt_mask = (padded([prompts[i] for i in idx], pad_id, left=True) if prompts[idx[0]]
                                   else (no_prompt, no_prompt))
        ids, mask = padded([response for i in idx for response in responses[i]], pad_id)
        yield idx, SharedBatch(prompt_ids, prompt_mask, ids, mask)


def unwrapped(model: PreTrainedModel) -> PreTrainedModel:
    """The transformers model under a PEFT wrapper (its LoRA layers stay in place), or the model itself."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


def backbone(model: PreTrainedModel) -> PreTrainedModel:
    """The transformer under a causal LM or a sequence classifier (LoRA layers included), without its head."""
    base = unwrapped(model)
    return getattr(base, base.base_model_prefix)


def shared_states(model: PreTrainedModel, batch: SharedBatch) -> torch.Tensor:
    """Last hidden states (2B, P + R, H) of prompt + response for both responses of each pair: the prompts run once
    (left-padded, positions counted over their real tokens) and each response continues from its prompt's cached keys
    and values (the same numbers as two full passes, float rounding aside)."""
    device = next(model.parameters()).device
    body, (n_prompt, n_response) = backbone(model), (batch.prompts.shape[1], batch.responses.shape[1])
    prompt_mask = batch.prompt_mask.to(device)
    attention = torch.cat([prompt_mask.repeat_interleave(2, dim=0), batch.mask.to(device)], 1)
    if n_prompt == 0:
        return body(input_ids=batch.responses.to(device), attention_mask=attention, use_cache=False).last_hidden_state
    first = body(input_ids=batch.prompts.to(device), attention_mask=prompt_mask, position_ids=position_ids(prompt_mask),
                 use_cache=True)
    cache = first.past_key_values
    cache.batch_repeat_interleave(2)  # rows: chosen, rejected of each pair
    lengths = prompt_mask.sum(1).repeat_interleave(2).unsqueeze(1)
    positions = lengths + torch.arange(n_response, device=device)
    rest = body(input_ids=batch.responses.to(device), attention_mask=attention, position_ids=positions,
                past_key_values=cache).last_hidden_state
    return torch.cat([first.last_hidden_state.repeat_interleave(2, dim=0), rest], 1)


def sequence_lengths(tokenizer: PreTrainedTokenizerBase, pairs: list[Pair]) -> np.ndarray:
    """(n, 2) token counts of prompt + chosen and prompt + rejected, as both trainers see them."""
    tokens = [tokenize_pair(tokenizer, pair) for pair in pairs]
    return np.array([[len(t["prompt_ids"]) + len(t[f"{key}_ids"]) for key in ("chosen", "rejected")] for t in tokens])


def keep_fitting(pairs: list[Pair], tokenizer: PreTrainedTokenizerBase, max_length: int) -> list[Pair]:
    """The pairs whose both sequences fit max_length (DPOTrainer would truncate them, RewardTrainer drop them)."""
    if not pairs:
        return []
    fits = (sequence_lengths(tokenizer, pairs) <= max_length).all(axis=1)
    return [pair for pair, ok in zip(pairs, fits) if ok]


@torch.no_grad()
def response_logps(model: PreTrainedModel, batch: SharedBatch) -> torch.Tensor:
    """(2B,) sums of log p(token | prefix) over each response's tokens (prompt and padding left out).

    The LM head runs on the positions that predict a response token only: the same numbers as taking them from the
    full logits, with less work and memory. A response's first token is predicted from the prompt's last position
    (with no prompt, it has no prefix and is not counted).
    """
    hidden, n_prompt = shared_states(model, batch), batch.prompts.shape[1]
    device = hidden.device
    start = max(n_prompt, 1)  # position t predicts token t + 1
    full_mask = torch.cat([torch.zeros(batch.mask.shape[0], n_prompt, dtype=torch.long), batch.mask], 1).to(device)
    full_ids = batch.full_ids().to(device)
    scored = full_mask[:, start:].bool()
    head = unwrapped(model).get_output_embeddings()
    token_logps = next_token_logps(head, hidden[:, start - 1:-1][scored], full_ids[:, start:][scored])
    return row_sums(token_logps, scored).cpu()


def pair_logps(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[Pair], max_length: int,
               batch_size: int = 16, desc: str = "log-probs") -> np.ndarray:
    """(n, 2) array of summed response log-probs for (chosen, rejected) of each pair."""
    tokens = [tokenize_pair(tokenizer, pair) for pair in pairs]
    out = np.zeros((len(pairs), 2))
    for idx, batch in shared_batches(tokens, tokenizer.pad_token_id, max_length, batch_size, desc):
        out[idx] = response_logps(model, batch).numpy().reshape(-1, 2)
    return out


def reference_logps(policy: PeftModel, tokenizer: PreTrainedTokenizerBase, pairs: list[Pair], max_length: int,
                    batch_size: int = 16) -> np.ndarray:
    """Reference log-probs: the LoRA policy with its adapters disabled."""
    with policy.disable_adapter():
        return pair_logps(policy, tokenizer, pairs, max_length, batch_size, desc="reference log-probs")


METHOD = "prompts once, left-padded; responses from their cached keys and values"  # how scores are computed, in every cache key


def scores_key(kind: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[Pair],
               max_length: int, batch_size: int) -> str:
    """Cache key of one model's scores of the pairs: the pairs, length, batching and padding, the model's precision and
    device, the scoring method and the library versions (the model itself is named by the folder holding the entry)."""
    weights = next(model.parameters())
    return cache_key(kind=kind, pairs=pairs_fingerprint(pairs), max_length=max_length, batch_size=batch_size,
                     pad=tokenizer.pad_token_id, dtype=str(weights.dtype), device=str(weights.device),
                     autocast=torch.is_autocast_enabled(weights.device.type),
                     autocast_dtype=str(torch.get_autocast_dtype(weights.device.type)), method=METHOD,
                     adapters="folded on a CPU", versions=library_versions())


def stored_reference(folder: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[Pair],
                     max_length: int, batch_size: int, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """A reference's log-probs of the pairs, stored in its cache folder under the key of the model that computes them:
    computed once for these pairs, length and batching, whichever seed, run or notebook asks."""
    key = scores_key("scores", model, tokenizer, pairs, max_length, batch_size)
    return cached_arrays(folder / f"scores-{key}.safetensors", ("logps",), len(pairs), lambda: {"logps": compute()})["logps"]


def cached_reference_logps(models: RewardModels, pairs: list[Pair], max_length: int, batch_size: int = 16) -> np.ndarray:
    """reference_logps of the models' policy, stored in its reference's cache folder (`stored_reference`)."""
    return stored_reference(models.reference, models.policy, models.tokenizer, pairs, max_length, batch_size,
                            lambda: reference_logps(models.policy, models.tokenizer, pairs, max_length, batch_size))


def start_logps(start: str, sets: list[list[Pair]], max_length: int, batch_size: int = BATCH_PAIRS,
                device_map: str | None = None) -> list[np.ndarray]:
    """The common start's (n, 2) log-probs of each set of pairs, stored where every policy trained from it reads its
    reference's (`cached_reference_logps`: the start is the policy with its adapter disabled, the same numbers), so a
    page that scores them first spares the pages after it the pass."""
    model, tokenizer = load_causal_lm(start, device_map=device_map)
    folder = reference_folder(start)
    return [stored_reference(folder, model, tokenizer, pairs, max_length, batch_size,
                             lambda pairs=pairs: pair_logps(model, tokenizer, pairs, max_length, batch_size,
                                                            desc="reference log-probs")) for pairs in sets]


def start_rule_accuracy(start: str, sets: list[PreferenceSet], max_length: int,
                        device_map: str | None = None) -> dict[str, float]:
    """Per set (with pairs), the accuracy of the start-likelihood rule: prefer the ending to which the common start
    gives the higher summed log-prob (a tie counts half); the log-probs are stored as the next pages' reference's."""
    scored = [t for t in sets if t.pairs]
    logps = start_logps(start, [list(t.pairs) for t in scored], max_length, device_map=device_map)
    return {t.name: float(choice_accuracy(values[:, 0] - values[:, 1]).mean()) for t, values in zip(scored, logps)}


def folded(model: PeftModel) -> PreTrainedModel:
    """A copy of a LoRA model with its adapters merged into the weights (the original keeps its adapters)."""
    return copy.deepcopy(model).merge_and_unload().eval()


def trained_model(models: RewardModels, kind: str) -> PeftModel:
    """The policy ("dpo") or the reward model ("rm"), adapters and all."""
    return models.policy if kind == "dpo" else models.rm


def folded_model(models: RewardModels, kind: str) -> PreTrainedModel:
    """The policy ("dpo") or the reward model ("rm") to score with: on a CPU a copy with its adapter folded in, made
    once per RewardModels; elsewhere the model itself (a GPU runs the adapters at little cost, and a copy of a large
    model spread over devices would double its memory)."""
    model = trained_model(models, kind)
    if next(model.parameters()).device.type != "cpu":
        return model
    if kind not in models.folded:
        models.folded[kind] = folded(model)
    return models.folded[kind]


def model_scores(models: RewardModels, kind: str, pairs: list[Pair], max_length: int, batch_size: int) -> np.ndarray:
    """One model's (n, 2) scores of the pairs, computed: the policy's summed response log-probs ("dpo") or EXRM's
    rewards ("rm")."""
    model = folded_model(models, kind)
    if kind == "dpo":
        return pair_logps(model, models.tokenizer, pairs, max_length, batch_size, desc="policy log-probs")
    return explicit_rewards(model, models.tokenizer, pairs, max_length, batch_size)


def cached_model_scores(models: RewardModels, kind: str, pairs: list[Pair], max_length: int, batch_size: int) -> np.ndarray:
    """model_scores, stored in that model's cache folder: computed once, whichever notebook asks."""
    key = scores_key(f"{kind}-scores", trained_model(models, kind), models.tokenizer, pairs, max_length, batch_size)
    return cached_arrays(models.folders[kind] / f"scores-{key}.safetensors", ("scores",), len(pairs),
                         lambda: {"scores": model_scores(models, kind, pairs, max_length, batch_size)})["scores"]


def implicit_rewards(policy_logps: np.ndarray, ref_logps: np.ndarray, beta: float) -> np.ndarray:
    """DPORM: beta * (log pi(y|x) - log pi_ref(y|x)), elementwise on (n, 2) arrays."""
    return beta * (policy_logps - ref_logps)


@torch.no_grad()
def explicit_rewards(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[Pair], max_length: int,
                     batch_size: int = 16) -> np.ndarray:
    """EXRM: (n, 2) scalar head outputs on prompt + response + EOS, tokenised as RewardTrainer does, read where the
    sequence classifier reads them: its rightmost token that is not its pad token (where pad and EOS are one token,
    as for the embedded models, that is the response's last token, as in training)."""
    base = unwrapped(model)
    out = np.zeros((len(pairs), 2))
    tokens = [tokenize_pair(tokenizer, pair) for pair in pairs]  # prompt + response + EOS, split at the shared prefix
    for idx, batch in shared_batches(tokens, tokenizer.pad_token_id, max_length, batch_size, "explicit rewards"):
        hidden = shared_states(model, batch)
        ids = batch.full_ids()
        last = (torch.arange(ids.shape[1]) * (ids != base.config.get_text_config().pad_token_id)).argmax(-1)
        pooled = hidden[torch.arange(ids.shape[0]), last.to(hidden.device)]
        out[idx] = base.score(pooled)[:, 0].float().cpu().numpy().reshape(-1, 2)
    return out


def correct(rewards: np.ndarray) -> np.ndarray:
    """1.0 where the chosen response scores strictly above the rejected one, else 0.0."""
    return (rewards[:, 0] > rewards[:, 1]).astype(np.float64)


def score_models(models: RewardModels, pairs: list[Pair], ref: np.ndarray, beta: float, max_length: int,
                 batch_size: int = 16) -> dict[str, np.ndarray]:
    """Per-pair rewards of DPORM (given the reference log-probs) and EXRM on one set of pairs (each model's scores
    cached in its folder)."""
    return {"dporm": implicit_rewards(cached_model_scores(models, "dpo", pairs, max_length, batch_size), ref, beta),
            "exrm": cached_model_scores(models, "rm", pairs, max_length, batch_size)}

def lengths_frame(tokenizer: PreTrainedTokenizerBase, sets: list[PreferenceSet]) -> pd.DataFrame:
    """Long table (set, response, tokens) of prompt + response token counts for every pair of every set."""
    return pd.concat([pd.DataFrame({"set": t.name, "response": ["chosen", "rejected"] * len(t.pairs),
                                    "tokens": sequence_lengths(tokenizer, list(t.pairs)).ravel()})
                      for t in sets if t.pairs], ignore_index=True)
