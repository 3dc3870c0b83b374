"""A fair common start: a short supervised fine-tune of the backbone on in-domain text (IMDB reviews).

Both reward models start from the result, and it is the DPO reference (the policy with its adapter disabled), as in
the DPO paper's controlled-sentiment setting, where the policy is first fine-tuned on IMDB reviews. The fine-tune is
a LoRA adapter merged into the weights and saved as a model folder, cached by content hash.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass

import numpy as np
from datasets import Dataset
from peft import LoraConfig, TaskType
from trl import SFTConfig, SFTTrainer

from companion.core.cache import cache_key, cache_root
from companion.core.files import computing, staged_folder
from companion.core.models import MARKER, load_causal_lm, model_identity
from companion.core.precision import trainer_flags
from companion.rewards.preferences import pool, reviews
from companion.rewards.training import progress_on_stderr


@dataclass(frozen=True)
class SFTSettings:
    """The fine-tune: backbone, steps (0: none), batch, tokens per text, learning rate, LoRA rank, seed, precision and
    placement."""

    model: str = "smollm2-135m"
    steps: int = 32
    batch_size: int = 8
    max_length: int = 64
    learning_rate: float = 1e-3
    lora_r: int = 16
    seed: int = 0
    precision: str = "float32"  # or "bfloat16" (companion.core.precision)
    device_map: str | None = None  # where the backbone is loaded and trained ("auto": the GPUs present); None: the CPU


def start_settings(model: str, sft_steps: int, max_length: int, precision: str, own_data: bool,
                   device_map: str | None = None) -> SFTSettings:
    """The common start every paper B page asks for: the fine-tune of these settings, or none (the backbone itself)
    on your own preference file or a hub dataset, whose text the IMDB fine-tune would not match."""
    return SFTSettings(model=model, steps=0 if own_data else sft_steps, max_length=max_length, precision=precision,
                       device_map=device_map)


def sft_texts(n: int, seed: int) -> list[str]:
    """n IMDB reviews of the training pool (the test pool stays unseen), in a seeded random order."""
    imdb = pool(reviews(), test=False)
    imdb = imdb[imdb["source"] == "imdb"]
    return imdb["text"].iloc[np.random.default_rng(seed + 500).permutation(len(imdb))[:n]].tolist()


def _fine_tune_into(folder: str, s: SFTSettings) -> None:
    """Fine-tune a LoRA adapter on review text, merge it, save model and tokenizer into folder (all or nothing)."""
    with staged_folder(folder) as staging:
        model, tokenizer = load_causal_lm(s.model, device_map=s.device_map)
        args = SFTConfig(output_dir=str(staging / "run"), max_steps=s.steps, per_device_train_batch_size=s.batch_size,
                         learning_rate=s.learning_rate, seed=s.seed, max_length=s.max_length, packing=False,
                         activation_checkpointing=False, logging_steps=1, save_strategy="no", report_to=[],
                         **trainer_flags(s.precision, model), dataloader_num_workers=0)
        texts = Dataset.from_dict({"text": sft_texts(s.steps * s.batch_size, s.seed)})
        trainer = progress_on_stderr(SFTTrainer(
            model=model, args=args, train_dataset=texts, processing_class=tokenizer,
            peft_config=LoraConfig(r=s.lora_r, lora_alpha=2 * s.lora_r, target_modules="all-linear",
                                   task_type=TaskType.CAUSAL_LM)))
        trainer.train()
        trainer.model.merge_and_unload().save_pretrained(staging / "model")
        tokenizer.save_pretrained(staging / "model")
        for item in (staging / "model").iterdir():
            item.rename(staging / item.name)
        shutil.rmtree(staging / "run", ignore_errors=True)
        (staging / MARKER).write_text(json.dumps({"settings": asdict(s), "log": trainer.state.log_history}))


def sft_backbone(s: SFTSettings) -> str:
    """The model both reward models start from: the backbone itself (steps=0) or its cached fine-tuned folder."""
    if s.steps <= 0:
        return s.model
    key = cache_key(kind="sft", settings=asdict(s), model=model_identity(s.model), data="imdb-training-pool")
    folder = cache_root() / "paper-b-sft" / key
    with computing(folder):  # the data page and the training page ask for it at once: one trains, the other waits
        if not (folder / MARKER).exists():
            _fine_tune_into(str(folder), s)
    return str(folder)
