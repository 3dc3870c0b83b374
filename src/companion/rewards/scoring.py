"""Score preference pairs with both reward models.

DPORM: r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)), summed over the response tokens only. EXRM: the scalar
head's output on prompt + response + EOS. A pair is ranked correctly when the chosen response scores higher.

Scoring runs in float32 whatever the training precision: in bfloat16 a DPORM reward, a small difference of two large
log-probs, changed the ranking of 5.5% of pairs against 0.4% for EXRM (benchmarks/bench_precision.py), noise that would
pull DPORM's accuracy toward chance and tilt the comparison.

Both models score with their LoRA adapters folded into a copy of the weights (`folded`): the same function up to float32
rounding, about a fifth faster on a CPU than running the adapters beside the frozen weights. Each model's scores of a
set of pairs are cached in its own cache folder, so a set scored by one notebook (the fit check, the validation pairs
of the learning-rate search) is read back by the next."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import torch
from peft import PeftModel
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from companion.core import threads
from companion.core.cache import cache_key
from companion.core.forward import length_batches
from companion.rewards.preferences import Pair, PreferenceSet
from companion.rewards.references import cached_arrays, library_versions
from companion.rewards.training import RewardModels, pairs_fingerprint


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



def completion_batch(items: list[tuple[list[int], list[int]]], pad_id: int, max_length: int) -> dict[str, torch.Tensor]:
    """Right-padded ids, attention mask and completion mask (1 on response tokens) of (prompt, response) items."""
    seqs = [(p + c)[:max_length] for p, c in items]
    masks = [([0] * len(p) + [1] * len(c))[:max_length] for p, c in items]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    completion = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, (seq, mask) in enumerate(zip(seqs, masks)):
        ids[row, : len(seq)] = torch.tensor(seq)
        attention[row, : len(seq)] = 1
        completion[row, : len(seq)] = torch.tensor(mask)
    return {"input_ids": ids, "attention_mask": attention, "completion_mask": completion}



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
def response_logps(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of log p(token | prefix) over response tokens only (prompt and padding masked out).

    The LM head runs on the positions that predict a response token only (about half of a batch's positions here):
    the same numbers as taking them from the full logits, with less work and memory.
    """
    device = next(model.parameters()).device
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    hidden = base.get_decoder()(input_ids=batch["input_ids"].to(device),
                                attention_mask=batch["attention_mask"].to(device)).last_hidden_state
    scored = batch["completion_mask"][:, 1:].bool().to(device)  # position t predicts token t + 1
    logits = base.get_output_embeddings()(hidden[:, :-1][scored]).float()
    targets = batch["input_ids"][:, 1:].to(device)[scored]
    token_logps = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    rows = torch.arange(scored.shape[0], device=device).unsqueeze(1).expand_as(scored)[scored]
    return torch.zeros(scored.shape[0], device=device).index_add(0, rows, token_logps).cpu()



def _batches(lengths: list[int], batch_size: int, desc: str) -> Iterator[np.ndarray]:
    """Indices in batches of similar length (less padding), with a tqdm progress bar and the core share followed."""
    for batch in tqdm(length_batches(lengths, batch_size), desc=desc, leave=False):
        threads.follow()
        yield batch



def pair_logps(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[Pair], max_length: int,
               batch_size: int = 16, desc: str = "log-probs") -> np.ndarray:
    """(n, 2) array of summed response log-probs for (chosen, rejected) of each pair."""
    tokens = [tokenize_pair(tokenizer, pair) for pair in pairs]
    lengths = [len(t["prompt_ids"]) + max(len(t["chosen_ids"]), len(t["rejected_ids"])) for t in tokens]
    out = np.zeros((len(pairs), 2))
    for idx in _batches(lengths, batch_size, desc):
        items = [(tokens[i]["prompt_ids"], tokens[i][f"{key}_ids"]) for key in ("chosen", "rejected") for i in idx]
        values = response_logps(model, completion_batch(items, tokenizer.pad_token_id, max_length)).numpy()
        out[idx] = values.reshape(2, -1).T
    return out



def reference_logps(policy: PeftModel, tokenizer: PreTrainedTokenizerBase, pairs: list[Pair], max_length: int,
                    batch_size: int = 16) -> np.ndarray:
    """Reference log-probs: the LoRA policy with its adapters disabled."""
    with policy.disable_adapter():
        return pair_logps(policy, tokenizer, pairs, max_length, batch_size, desc="reference log-probs")



def cached_reference_logps(models: RewardModels, pairs: list[Pair], max_length: int, batch_size: int = 16) -> np.ndarray:
    """reference_logps of the models' policy, stored in its reference's cache folder: computed once for these pairs,
    length and batching, whichever seed, run or notebook asks."""
    weights = next(models.policy.parameters())
    key = cache_key(kind="scores", pairs=pairs_fingerprint(pairs), max_length=max_length, batch_size=batch_size,
                    pad=models.tokenizer.pad_token_id, dtype=str(weights.dtype), device=str(weights.device),
                    autocast=torch.is_autocast_enabled(weights.device.type),
                    versions=library_versions())

    def compute() -> dict[str, np.ndarray]:
        """The reference log-probs of the pairs, computed."""
        return {"logps": reference_logps(models.policy, models.tokenizer, pairs, max_length, batch_size)}

    return cached_arrays(models.reference / f"scores-{key}.safetensors", ("logps",), len(pairs), compute)["logps"]



def folded(model: PeftModel) -> PreTrainedModel:
    """A copy of a LoRA model with its adapters merged into the weights (the original keeps its adapters)."""
    return copy.deepcopy(model).merge_and_unload().eval()


def folded_model(models: RewardModels, kind: str) -> PreTrainedModel:
    """The policy ("dpo") or the reward model ("rm") with its adapter folded in, made once per RewardModels."""
    if kind not in models.folded:
        models.folded[kind] = folded(models.policy if kind == "dpo" else models.rm)
    return models.folded[kind]


def cached_model_scores(models: RewardModels, kind: str, pairs: list[Pair], max_length: int, batch_size: int,
                        compute: Callable[[PreTrainedModel], np.ndarray]) -> np.ndarray:
    """One model's (n, 2) scores of the pairs, from its cache folder or computed by `compute` on its folded copy."""
    weights = next(models.policy.parameters())
    key = cache_key(kind=f"{kind}-scores", pairs=pairs_fingerprint(pairs), max_length=max_length, batch_size=batch_size,
                    pad=models.tokenizer.pad_token_id, dtype=str(weights.dtype), device=str(weights.device),
                    autocast=torch.is_autocast_enabled(weights.device.type), adapters="folded",
                    versions=library_versions())
    path = models.folders[kind] / f"scores-{key}.safetensors"
    return cached_arrays(path, ("scores",), len(pairs), lambda: {"scores": compute(folded_model(models, kind))})["scores"]


def implicit_rewards(policy_logps: np.ndarray, ref_logps: np.ndarray, beta: float) -> np.ndarray:
    """DPORM: beta * (log pi(y|x) - log pi_ref(y|x)), elementwise on (n, 2) arrays."""
    return beta * (policy_logps - ref_logps)



@torch.no_grad()
def explicit_rewards(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[Pair], max_length: int,
                     batch_size: int = 16) -> np.ndarray:
    """EXRM: (n, 2) scalar head outputs on prompt + response + EOS, tokenised as RewardTrainer does."""
    device = next(model.parameters()).device
    texts = [[tokenizer(pair["prompt"] + pair[key] + tokenizer.eos_token)["input_ids"] for key in ("chosen", "rejected")]
             for pair in pairs]
    out = np.zeros((len(pairs), 2))
    for idx in _batches([max(len(ids) for ids in both) for both in texts], batch_size, "explicit rewards"):
        items = [([], texts[i][side]) for side in (0, 1) for i in idx]
        batch = completion_batch(items, tokenizer.pad_token_id, max_length)
        scores = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
        out[idx] = scores.logits[:, 0].float().cpu().numpy().reshape(2, -1).T
    return out



def correct(rewards: np.ndarray) -> np.ndarray:
    """1.0 where the chosen response scores strictly above the rejected one, else 0.0."""
    return (rewards[:, 0] > rewards[:, 1]).astype(np.float64)



def score_models(models: RewardModels, pairs: list[Pair], ref: np.ndarray, beta: float, max_length: int,
                 batch_size: int = 16) -> dict[str, np.ndarray]:
    """Per-pair rewards of DPORM (given the reference log-probs) and EXRM on one set of pairs (each model's scores
    cached in its folder)."""
    tokenizer = models.tokenizer
    policy = cached_model_scores(models, "dpo", pairs, max_length, batch_size, lambda model: pair_logps(
        model, tokenizer, pairs, max_length, batch_size, desc="policy log-probs"))
    exrm = cached_model_scores(models, "rm", pairs, max_length, batch_size, lambda model: explicit_rewards(
        model, tokenizer, pairs, max_length, batch_size))
    return {"dporm": implicit_rewards(policy, ref, beta), "exrm": exrm}


def lengths_frame(tokenizer: PreTrainedTokenizerBase, sets: list[PreferenceSet]) -> pd.DataFrame:
    """Long table (set, response, tokens) of prompt + response token counts for every pair of every set."""
    return pd.concat([pd.DataFrame({"set": t.name, "response": ["chosen", "rejected"] * len(t.pairs),
                                    "tokens": sequence_lengths(tokenizer, list(t.pairs)).ravel()})
                      for t in sets if t.pairs], ignore_index=True)
