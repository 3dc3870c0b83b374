"""DPO implicit reward (DPORM) versus an explicit Bradley-Terry reward model (EXRM), trained with TRL.

DPORM scores a response by r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)), summed over the response tokens
only; with LoRA the reference is the policy with its adapters disabled. EXRM is the same backbone with a scalar
head, trained by TRL's RewardTrainer on the same pairs with the same budget.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, TaskType
from safetensors import SafetensorError
from tqdm import tqdm
from transformers import AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging
from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

from companion.files import staged_folder
from companion.models import EMBEDDED, MARKER, cache_root, embedded_cache_dir, load_causal_lm, model_identity
from companion.preferences import Pair
from companion.response_head import score_responses_only



@dataclass(frozen=True)
class TrainSettings:
    """One training run of both reward models: backbone, LoRA, DPO beta and the shared budget."""

    model: str = "smollm2-135m"
    beta: float = 0.1
    lora_r: int = 16
    lora_alpha: int = 32
    max_length: int = 48
    steps: int = 32
    batch_size: int = 8
    learning_rate: float = 1e-3
    seed: int = 0
    device_map: str | None = None


def _common_args(s: TrainSettings, out_dir: str | Path) -> dict[str, Any]:
    """TrainingArguments shared by both trainers, so the two models get the same budget."""
    on_gpu = torch.cuda.is_available()
    return dict(
        output_dir=str(out_dir), max_steps=s.steps, per_device_train_batch_size=s.batch_size,
        per_device_eval_batch_size=2 * s.batch_size, learning_rate=s.learning_rate, seed=s.seed,
        max_length=s.max_length, activation_checkpointing=False, logging_steps=1, save_strategy="no",
        report_to=[], bf16=on_gpu, use_cpu=not on_gpu, dataloader_num_workers=0, disable_tqdm=False,
    )


def dpo_config(s: TrainSettings, out_dir: str | Path) -> DPOConfig:
    """DPOConfig: no activation checkpointing, reference log-probs computed once before training."""
    return DPOConfig(**_common_args(s, out_dir), beta=s.beta, precompute_ref_log_probs=True,
                     precompute_ref_batch_size=2 * s.batch_size)


def reward_config(s: TrainSettings, out_dir: str | Path) -> RewardConfig:
    """RewardConfig with the same budget as the DPO run."""
    return RewardConfig(**_common_args(s, out_dir))


def lora_config(s: TrainSettings, task: TaskType) -> LoraConfig:
    """LoRA on every linear layer of the backbone (the reward head stays fully trainable for EXRM)."""
    return LoraConfig(r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                      task_type=task)


def backbone_folder(name: str) -> str:
    """Where from_pretrained finds a model: the converted cache of an embedded model, else the id or folder."""
    return str(embedded_cache_dir(name)) if name in EMBEDDED else name


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Show only transformers' errors inside the block, restoring the previous verbosity after it."""
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def load_reward_backbone(name: str, device_map: str | None = None) -> PreTrainedModel:
    """The backbone with a freshly initialised scalar head (num_labels=1) for the explicit reward model."""
    with quiet_transformers():  # the new head is reported as "missing" weights, which is expected
        return AutoModelForSequenceClassification.from_pretrained(backbone_folder(name), num_labels=1,
                                                                  device_map=device_map)


def pairs_dataset(pairs: list[Pair]) -> Dataset:
    """A datasets.Dataset of {prompt, chosen, rejected} for the TRL trainers."""
    return Dataset.from_list([{key: pair[key] for key in ("prompt", "chosen", "rejected")} for pair in pairs])


def dpo_trainer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[Pair], s: TrainSettings,
                out_dir: str | Path, eval_pairs: list[Pair] | None = None) -> DPOTrainer:
    """A TRL DPOTrainer with a fresh LoRA adapter (the reference is the backbone with adapters disabled).

    On CPU its LM head scores the response tokens only (companion.response_head), as TRL does on GPUs.
    """
    trainer = DPOTrainer(model=model, args=dpo_config(s, out_dir), train_dataset=pairs_dataset(pairs),
                         eval_dataset=pairs_dataset(eval_pairs) if eval_pairs else None, processing_class=tokenizer,
                         peft_config=lora_config(s, TaskType.CAUSAL_LM))
    score_responses_only(trainer.model.get_base_model())
    return trainer


def train_dpo(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[Pair], s: TrainSettings,
              out_dir: str | Path) -> tuple[PeftModel, list[dict[str, float]]]:
    """Train a LoRA DPO policy on the pairs; returns the policy and TRL's log history."""
    trainer = dpo_trainer(model, tokenizer, pairs, s, out_dir)
    trainer.train()
    return trainer.model.eval(), trainer.state.log_history


def reward_trainer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[Pair], s: TrainSettings,
                   out_dir: str | Path) -> RewardTrainer:
    """A TRL RewardTrainer with a fresh LoRA adapter on the backbone with a scalar head."""
    model.config.pad_token_id = tokenizer.pad_token_id
    return RewardTrainer(model=model, args=reward_config(s, out_dir), train_dataset=pairs_dataset(pairs),
                         processing_class=tokenizer, peft_config=lora_config(s, TaskType.SEQ_CLS))


def train_reward(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[Pair], s: TrainSettings,
                 out_dir: str | Path) -> tuple[PeftModel, list[dict[str, float]]]:
    """Train a LoRA Bradley-Terry reward model on the pairs; returns it and TRL's log history."""
    trainer = reward_trainer(model, tokenizer, pairs, s, out_dir)
    trainer.train()
    return trainer.model.eval(), trainer.state.log_history


# ---------------------------------------------------------------- scoring


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
    """Sum of log p(token | prefix) over response tokens only (prompt and padding masked out)."""
    device = next(model.parameters()).device
    logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
    logits = logits[:, :-1].float()
    targets = batch["input_ids"][:, 1:].to(device)
    token_logps = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return (token_logps * batch["completion_mask"][:, 1:].to(device)).sum(dim=1).cpu()


def _batches(n: int, batch_size: int, desc: str) -> list[range]:
    """Index ranges of consecutive batches, wrapped in a tqdm progress bar."""
    return tqdm([range(i, min(i + batch_size, n)) for i in range(0, n, batch_size)], desc=desc, leave=False)


def pair_logps(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[Pair], max_length: int,
               batch_size: int = 16, desc: str = "log-probs") -> np.ndarray:
    """(n, 2) array of summed response log-probs for (chosen, rejected) of each pair."""
    tokens = [tokenize_pair(tokenizer, pair) for pair in pairs]
    out = np.zeros((len(pairs), 2))
    for idx in _batches(len(pairs), batch_size, desc):
        items = [(tokens[i]["prompt_ids"], tokens[i][f"{key}_ids"]) for key in ("chosen", "rejected") for i in idx]
        values = response_logps(model, completion_batch(items, tokenizer.pad_token_id, max_length)).numpy()
        out[list(idx)] = values.reshape(2, -1).T
    return out


def reference_logps(policy: PeftModel, tokenizer: PreTrainedTokenizerBase, pairs: list[Pair], max_length: int,
                    batch_size: int = 16) -> np.ndarray:
    """Reference log-probs: the LoRA policy with its adapters disabled."""
    with policy.disable_adapter():
        return pair_logps(policy, tokenizer, pairs, max_length, batch_size, desc="reference log-probs")


def implicit_rewards(policy_logps: np.ndarray, ref_logps: np.ndarray, beta: float) -> np.ndarray:
    """DPORM: beta * (log pi(y|x) - log pi_ref(y|x)), elementwise on (n, 2) arrays."""
    return beta * (policy_logps - ref_logps)


@torch.no_grad()
def explicit_rewards(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[Pair], max_length: int,
                     batch_size: int = 16) -> np.ndarray:
    """EXRM: (n, 2) scalar head outputs on prompt + response + EOS, tokenised as RewardTrainer does."""
    device = next(model.parameters()).device
    out = np.zeros((len(pairs), 2))
    for idx in _batches(len(pairs), batch_size, "explicit rewards"):
        items = [([], tokenizer(pairs[i]["prompt"] + pairs[i][key] + tokenizer.eos_token)["input_ids"])
                 for key in ("chosen", "rejected") for i in idx]
        batch = completion_batch(items, tokenizer.pad_token_id, max_length)
        scores = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
        out[list(idx)] = scores.logits[:, 0].float().cpu().numpy().reshape(2, -1).T
    return out


def correct(rewards: np.ndarray) -> np.ndarray:
    """1.0 where the chosen response scores strictly above the rejected one, else 0.0."""
    return (rewards[:, 0] > rewards[:, 1]).astype(np.float64)


# ---------------------------------------------------------------- cached training of both models


def pairs_fingerprint(pairs: list[Pair]) -> str:
    """sha256 of the training pairs, so a cache entry is tied to the exact data."""
    return hashlib.sha256(json.dumps(pairs, sort_keys=True).encode()).hexdigest()


def cache_key(s: TrainSettings, pairs: list[Pair]) -> str:
    """Hash of everything a trained pair of reward models depends on."""
    import peft
    import trl

    payload = {"settings": asdict(s), "model": model_identity(s.model), "data": pairs_fingerprint(pairs),
               "versions": [trl.__version__, peft.__version__, torch.__version__]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _train_into(folder: Path, s: TrainSettings, pairs: list[Pair]) -> None:
    """Train both models and save their adapters and logs into folder (written in a temp dir, then renamed)."""
    with staged_folder(folder) as staging:
        model, tokenizer = load_causal_lm(s.model, device_map=s.device_map)
        policy, dpo_log = train_dpo(model, tokenizer, pairs, s, staging / "dpo-run")
        policy.save_pretrained(staging / "dpo")
        rm, rm_log = train_reward(load_reward_backbone(s.model, s.device_map), tokenizer, pairs, s, staging / "rm-run")
        rm.save_pretrained(staging / "rm")
        (staging / MARKER).write_text(json.dumps({"settings": asdict(s), "dpo_log": dpo_log, "rm_log": rm_log}))


@dataclass
class RewardModels:
    """A trained DPO policy (DPORM) and explicit reward model (EXRM) with their training logs."""

    policy: PeftModel
    rm: PeftModel
    tokenizer: PreTrainedTokenizerBase
    dpo_log: list[dict[str, float]]
    rm_log: list[dict[str, float]]
    folder: Path


def _load_from(folder: Path, s: TrainSettings) -> RewardModels:
    """Load both adapters and the logs from a complete cache folder."""
    meta = json.loads((folder / MARKER).read_text())
    base, tokenizer = load_causal_lm(s.model, device_map=s.device_map)
    policy = PeftModel.from_pretrained(base, folder / "dpo").eval()
    rm_base = load_reward_backbone(s.model, s.device_map)
    rm_base.config.pad_token_id = tokenizer.pad_token_id
    rm = PeftModel.from_pretrained(rm_base, folder / "rm").eval()
    return RewardModels(policy, rm, tokenizer, meta["dpo_log"], meta["rm_log"], folder)


def trained_models(s: TrainSettings, pairs: list[Pair], cache: Path | None = None) -> RewardModels:
    """Both reward models for these settings and pairs: loaded from the cache, or trained and cached first."""
    folder = (cache or cache_root()) / "paper-b" / cache_key(s, pairs)
    if (folder / MARKER).exists():
        try:
            return _load_from(folder, s)
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError):
            shutil.rmtree(folder, ignore_errors=True)  # corrupt entry: rebuild below
    _train_into(folder, s, pairs)
    return _load_from(folder, s)


def train_curve(log: list[dict[str, float]], metric: str) -> list[tuple[int, float]]:
    """(step, value) of one logged training metric (e.g. 'loss', 'rewards/accuracies', 'accuracy')."""
    return [(int(entry["step"]), float(entry[metric])) for entry in log if metric in entry and "step" in entry]


def score_models(models: RewardModels, pairs: list[Pair], ref: np.ndarray, beta: float, max_length: int,
                 batch_size: int = 16) -> dict[str, np.ndarray]:
    """Per-pair rewards of DPORM (given the reference log-probs) and EXRM on one set of pairs."""
    policy = pair_logps(models.policy, models.tokenizer, pairs, max_length, batch_size, desc="policy log-probs")
    return {"dporm": implicit_rewards(policy, ref, beta),
            "exrm": explicit_rewards(models.rm, models.tokenizer, pairs, max_length, batch_size)}
