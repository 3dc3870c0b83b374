"""Train both reward models with TRL on the same pairs and budget, each cached on disk by content hash.

DPORM is a LoRA DPO policy (its reference: the same backbone with the adapters disabled); EXRM is the same
backbone with a scalar head, trained by TRL's RewardTrainer."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, TaskType
from safetensors import SafetensorError
from transformers import AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase, Trainer
from transformers.trainer_callback import ProgressCallback
from transformers.utils import logging as hf_logging
from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

from companion.core import threads
from companion.core.cache import cache_key, cache_root, portable
from companion.core.files import staged_folder
from companion.core.models import EMBEDDED, MARKER, embedded_cache_dir, load_causal_lm, model_identity
from companion.core.precision import trainer_flags
from companion.rewards.preferences import Pair
from companion.rewards.references import CachedReferenceDPOTrainer
from companion.rewards.response_head import score_responses_only

SHORT_NAMES = {"dporm": "DPORM", "exrm": "EXRM"}  # the two reward models as the pages' sentences name them

# TRL calls a deprecated transformers property on every trainer start; the message is for TRL's authors, not for a
# reader of the pages (filtered by category, message and the module that warns, nothing else).
warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning,
                        module=r"transformers\.modeling_utils")


class StderrProgress(ProgressCallback):
    """transformers' console progress bar, with each logged step written beside the bar on stderr instead of stdout;
    before each step, the notebook's share of the cores is followed (companion.core.threads)."""

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Follow the core share, then let the bar do its part."""
        threads.follow()
        super().on_step_begin(args, state, control, **kwargs)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        """One line of the logged values (floats to 4 digits), on stderr."""
        if state.is_world_process_zero and self.training_bar is not None:
            shown = {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in (logs or {}).items() if k != "total_flos"}
            self.training_bar.write(str(shown), file=sys.stderr)


def progress_on_stderr(trainer: Trainer) -> Trainer:
    """Training progress on stderr only, where pages drop it (their cells are tagged remove-stderr) and a terminal or
    Jupyter still shows it: in a notebook transformers would draw an HTML table of the logs, elsewhere print each
    logged step on stdout; both become a console bar with the logged steps on stderr."""
    if not trainer.args.disable_tqdm:
        for callback in list(trainer.callback_handler.callbacks):
            if type(callback) is ProgressCallback or type(callback).__name__ == "NotebookProgressCallback":
                trainer.remove_callback(callback)
        trainer.add_callback(StderrProgress)
    return trainer


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
    rm_learning_rate: float | None = None  # the reward model's own rate (None: the same as DPO's)
    seed: int = 0
    device_map: str | None = None
    precision: str = "float32"  # or "bfloat16": matrix products under autocast (companion.core.precision)



def _common_args(s: TrainSettings, out_dir: str | Path, model: PreTrainedModel) -> dict[str, Any]:
    """TrainingArguments shared by both trainers, so the two models get the same budget (trained where the model is)."""
    return dict(
        output_dir=str(out_dir), max_steps=s.steps, per_device_train_batch_size=s.batch_size,
        per_device_eval_batch_size=2 * s.batch_size, learning_rate=s.learning_rate, seed=s.seed,
        max_length=s.max_length, activation_checkpointing=False, logging_steps=1, save_strategy="no",
        report_to=[], **trainer_flags(s.precision, model), dataloader_num_workers=0, disable_tqdm=False,
    )



def dpo_config(s: TrainSettings, out_dir: str | Path, model: PreTrainedModel) -> DPOConfig:
    """DPOConfig for the model: no activation checkpointing, reference log-probs computed once before training."""
    return DPOConfig(**_common_args(s, out_dir, model), beta=s.beta, precompute_ref_log_probs=True,
                     precompute_ref_batch_size=2 * s.batch_size)



def reward_config(s: TrainSettings, out_dir: str | Path, model: PreTrainedModel) -> RewardConfig:
    """RewardConfig for the model, with the same budget as the DPO run."""
    return RewardConfig(**_common_args(s, out_dir, model))



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
                out_dir: str | Path, eval_pairs: list[Pair] | None = None,
                reference_cache: Path | None = None) -> DPOTrainer:
    """A TRL DPOTrainer with a fresh LoRA adapter (the reference is the backbone with adapters disabled).

    Given the reference's cache folder (`reference_folder`), its log-probs are read from there when TRL computed them
    before. On CPU its LM head scores the response tokens only (companion.response_head), as TRL does on GPUs.
    """
    inputs = dict(model=model, args=dpo_config(s, out_dir, model), train_dataset=pairs_dataset(pairs),
                  eval_dataset=pairs_dataset(eval_pairs) if eval_pairs else None, processing_class=tokenizer,
                  peft_config=lora_config(s, TaskType.CAUSAL_LM))
    trainer = (DPOTrainer(**inputs) if reference_cache is None
               else CachedReferenceDPOTrainer(**inputs, reference_cache=reference_cache))
    score_responses_only(trainer.model.get_base_model())
    return progress_on_stderr(trainer)



def train_dpo(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[Pair], s: TrainSettings,
              out_dir: str | Path, reference_cache: Path | None = None) -> tuple[PeftModel, list[dict[str, float]]]:
    """Train a LoRA DPO policy on the pairs (reference log-probs cached in reference_cache when given); returns the
    policy and TRL's log history."""
    trainer = dpo_trainer(model, tokenizer, pairs, s, out_dir, reference_cache=reference_cache)
    trainer.train()
    return trainer.model.eval(), trainer.state.log_history



def reward_trainer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[Pair], s: TrainSettings,
                   out_dir: str | Path) -> RewardTrainer:
    """A TRL RewardTrainer with a fresh LoRA adapter on the backbone with a scalar head."""
    model.config.pad_token_id = tokenizer.pad_token_id
    return progress_on_stderr(RewardTrainer(model=model, args=reward_config(s, out_dir, model), train_dataset=pairs_dataset(pairs),
                                            processing_class=tokenizer, peft_config=lora_config(s, TaskType.SEQ_CLS)))



def train_reward(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[Pair], s: TrainSettings,
                 out_dir: str | Path) -> tuple[PeftModel, list[dict[str, float]]]:
    """Train a LoRA Bradley-Terry reward model on the pairs; returns it and TRL's log history."""
    trainer = reward_trainer(model, tokenizer, pairs, s, out_dir)
    trainer.train()
    return trainer.model.eval(), trainer.state.log_history



def pairs_fingerprint(pairs: list[Pair]) -> str:
    """sha256 of the training pairs, so a cache entry is tied to the exact data."""
    return hashlib.sha256(json.dumps(pairs, sort_keys=True).encode()).hexdigest()


def for_kind(s: TrainSettings, kind: str) -> TrainSettings:
    """The settings one trainer sees: the reward model gets its own learning rate when one is set."""
    return replace(s, learning_rate=s.rm_learning_rate) if kind == "rm" and s.rm_learning_rate else s


def model_key(s: TrainSettings, pairs: list[Pair], kind: str) -> str:
    """The cache key of one trained model ("dpo" or "rm"): what its trainer sees, backbone, pairs, library versions."""
    import peft
    import trl

    settings = asdict(for_kind(s, kind))
    settings["model"] = portable(s.model)  # the common start's folder, wherever the cache lives
    settings.pop("rm_learning_rate")
    if kind == "rm":
        settings.pop("beta")  # the reward model does not use the DPO temperature
    return cache_key(kind=kind, settings=settings, model=model_identity(s.model), data=pairs_fingerprint(pairs),
                     versions=[trl.__version__, peft.__version__, torch.__version__])


def reference_folder(model: str, cache: Path | None = None) -> Path:
    """The cache folder of the DPO reference's log-probs: one per backbone (the policy with its adapter disabled)."""
    return (cache or cache_root()) / "paper-b-reference" / cache_key(model=model_identity(model))


def _train_into(folder: Path, s: TrainSettings, pairs: list[Pair], kind: str, cache: Path | None = None) -> None:
    """Train one model and save its adapter and log into folder (written in a temp dir, then renamed)."""
    s = for_kind(s, kind)
    with staged_folder(folder) as staging:
        if kind == "dpo":
            model, tokenizer = load_causal_lm(s.model, device_map=s.device_map)
            trained, log = train_dpo(model, tokenizer, pairs, s, staging / "run", reference_folder(s.model, cache))
        else:
            tokenizer = load_causal_lm(s.model, device_map=s.device_map)[1]
            trained, log = train_reward(load_reward_backbone(s.model, s.device_map), tokenizer, pairs, s, staging / "run")
        trained.save_pretrained(staging / kind)
        shutil.rmtree(staging / "run", ignore_errors=True)
        (staging / MARKER).write_text(json.dumps({"settings": asdict(s), "log": log}))


@dataclass
class RewardModels:
    """A trained DPO policy (DPORM) and explicit reward model (EXRM) with their training logs and cache folders."""

    policy: PeftModel
    rm: PeftModel
    tokenizer: PreTrainedTokenizerBase
    dpo_log: list[dict[str, float]]
    rm_log: list[dict[str, float]]
    folders: dict[str, Path]
    reference: Path  # the cache folder of the reference's log-probs (`reference_folder`)
    folded: dict[str, PreTrainedModel] = field(default_factory=dict, repr=False)  # adapters merged in, for scoring


def _load_from(folders: dict[str, Path], s: TrainSettings, cache: Path | None) -> RewardModels:
    """Load both adapters and their logs from complete cache folders."""
    logs = {kind: json.loads((folder / MARKER).read_text())["log"] for kind, folder in folders.items()}
    base, tokenizer = load_causal_lm(s.model, device_map=s.device_map)
    policy = PeftModel.from_pretrained(base, folders["dpo"] / "dpo").eval()
    rm_base = load_reward_backbone(s.model, s.device_map)
    rm_base.config.pad_token_id = tokenizer.pad_token_id
    rm = PeftModel.from_pretrained(rm_base, folders["rm"] / "rm").eval()
    return RewardModels(policy, rm, tokenizer, logs["dpo"], logs["rm"], folders, reference_folder(s.model, cache))


def trained_folder(s: TrainSettings, pairs: list[Pair], kind: str, cache: Path | None = None) -> Path:
    """The cache folder of one trained model ("dpo" or "rm"), trained first when the cache lacks it."""
    folder = (cache or cache_root()) / "paper-b" / model_key(s, pairs, kind)
    if not (folder / MARKER).exists():
        _train_into(folder, s, pairs, kind, cache)
    return folder


def trained_models(s: TrainSettings, pairs: list[Pair], cache: Path | None = None) -> RewardModels:
    """Both reward models for these settings and pairs: each loaded from the cache, or trained and cached first."""
    folders = {kind: trained_folder(s, pairs, kind, cache) for kind in ("dpo", "rm")}
    try:
        return _load_from(folders, s, cache)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError):
        for kind, folder in folders.items():  # a corrupt entry: rebuild both once
            shutil.rmtree(folder, ignore_errors=True)
            _train_into(folder, s, pairs, kind, cache)
        return _load_from(folders, s, cache)


def train_curve(log: list[dict[str, float]], metric: str) -> list[tuple[int, float]]:
    """(step, value) of one logged training metric (e.g. 'loss', 'rewards/accuracies', 'accuracy')."""
    return [(int(entry["step"]), float(entry[metric])) for entry in log if metric in entry and "step" in entry]
