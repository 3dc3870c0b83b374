"""Continuations sampled from a language model for each prompt, built once and cached by content hash."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass

import torch
import transformers
from tqdm import tqdm

from companion.core import threads
from companion.core.cache import cache_key, cache_root
from companion.core.decoding import sample, sampling_processors
from companion.core.files import cached_entry
from companion.core.models import load_causal_lm, model_identity
from companion.core.precision import autocast


@dataclass(frozen=True)
class SampleSettings:
    """How continuations are drawn: generator, count per prompt, length, temperature, seed, batch size, precision and
    placement."""

    model: str = "smollm2-135m"
    per_prompt: int = 2
    max_new_tokens: int = 24
    temperature: float = 1.0
    top_p: float = 0.95
    seed: int = 0
    batch_size: int = 128  # rows sampled at once: on a CPU 1.5x (SmolLM2-135M) to 1.6x (Gemma 3 270M) the tokens per
                           # second of 32 rows (decoding steps are bound by reading the weights, not by arithmetic)
    precision: str = "float32"  # or "bfloat16" (companion.core.precision)
    device_map: str | None = None  # where the generator runs ("auto": the GPUs present); None: the CPU


def clean(text: str) -> str:
    """One line of text: whitespace collapsed, special-token leftovers and surrounding spaces removed."""
    return re.sub(r"\s+", " ", text).strip()


def _fingerprint(texts: list[str]) -> str:
    """sha256 of a list of texts."""
    return hashlib.sha256(json.dumps(texts).encode()).hexdigest()


def _generate(s: SampleSettings, prompts: list[str]) -> list[list[str]]:
    """Sample s.per_prompt continuations of every prompt, left-padded batches, new tokens only."""
    model, tokenizer = load_causal_lm(s.model, device_map=s.device_map)
    tokenizer.padding_side = "left"
    flat = [p for p in prompts for _ in range(s.per_prompt)]
    processors = sampling_processors(s.temperature, s.top_p, s.seed)  # one stream of variates for every batch
    out: list[str] = []
    for start in tqdm(range(0, len(flat), s.batch_size), desc=f"sampling {s.model}", leave=False):
        threads.follow()
        batch = tokenizer(flat[start:start + s.batch_size], return_tensors="pt", padding=True).to(model.device)
        with autocast(s.precision, model.device):
            ids = sample(model, batch, s.max_new_tokens, processors, tokenizer.pad_token_id)
        out += [clean(t) for t in tokenizer.batch_decode(ids[:, batch["input_ids"].shape[1]:].cpu(), skip_special_tokens=True)]
    return [out[i:i + s.per_prompt] for i in range(0, len(out), s.per_prompt)]


def samples_key(s: SampleSettings, prompts: list[str]) -> str:
    """Cache key of a set of samples: settings, generator identity, the exact prompts and library versions."""
    return cache_key(kind="samples", settings=asdict(s), decoding="temperature, then a nucleus draw by inverse CDF",
                     model=model_identity(s.model), prompts=_fingerprint(prompts),
                     versions=[torch.__version__, transformers.__version__])


def sample_continuations(s: SampleSettings, prompts: list[str]) -> list[list[str]]:
    """s.per_prompt sampled continuations of each prompt: read from the cache, or generated and cached first."""
    path = cache_root() / "paper-b-samples" / f"{samples_key(s, prompts)}.json"

    def load() -> list[list[str]] | None:
        """The cached samples, or None when missing, corrupt or of another length."""
        try:
            cached = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return cached if len(cached) == len(prompts) else None

    # a notebook started beside this one waits for these samples rather than drawing them too
    return cached_entry(path, load, lambda: _generate(s, prompts) if prompts else [],
                        lambda samples, tmp: tmp.write_text(json.dumps(samples)))
