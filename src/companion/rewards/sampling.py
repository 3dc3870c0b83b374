"""Continuations sampled from a language model for each prompt, built once and cached by content hash."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass

import torch
import transformers
from tqdm import tqdm
from transformers import LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from companion.core.cache import cache_key, cache_root
from companion.core.files import staged_file
from companion.core.models import load_causal_lm, model_identity


@dataclass(frozen=True)
class SampleSettings:
    """How continuations are drawn: generator, count per prompt, length, temperature, seed and batch size."""

    model: str = "smollm2-135m"
    per_prompt: int = 2
    max_new_tokens: int = 24
    temperature: float = 1.0
    top_p: float = 0.95
    seed: int = 0
    batch_size: int = 32


def clean(text: str) -> str:
    """One line of text: whitespace collapsed, special-token leftovers and surrounding spaces removed."""
    return re.sub(r"\s+", " ", text).strip()


def _fingerprint(texts: list[str]) -> str:
    """sha256 of a list of texts."""
    return hashlib.sha256(json.dumps(texts).encode()).hexdigest()


class NucleusFilter(LogitsProcessor):
    """Top-p filtering that keeps the tokens transformers' TopPLogitsWarper keeps (up to float rounding at the cut),
    found without a full sort.

    The warper sorts the whole vocabulary at every step (262,144 tokens for Gemma 3: half of a sampling run's time on
    a CPU). A token is kept when the probability of the tokens ranked above it is below top_p, so when the largest
    `candidates` logits of every row already hold top_p, the cut lies among them and a partial sort (top-k) finds it;
    otherwise the batch goes through the warper itself.
    """

    def __init__(self, top_p: float, candidates: int = 1024) -> None:
        """top_p in (0, 1]; candidates: how many of the largest logits are ranked exactly."""
        self.top_p, self.candidates, self.fallback = top_p, candidates, TopPLogitsWarper(top_p)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Scores with every token outside the nucleus set to -inf."""
        top, index = scores.topk(min(self.candidates, scores.shape[-1]), dim=-1)
        probs = (top - scores.logsumexp(-1, keepdim=True)).exp()
        if (probs.sum(-1) < self.top_p).any():
            return self.fallback(input_ids, scores)
        above = probs.cumsum(-1) - probs
        kept = torch.where(above < self.top_p, top, torch.full_like(top, -torch.inf))
        return torch.full_like(scores, -torch.inf).scatter(-1, index, kept)


def sampling_processors(temperature: float, top_p: float) -> LogitsProcessorList:
    """Temperature, then the nucleus filter: transformers' own order, which a custom processor passed to generate()
    would not keep (custom processors go before its temperature), so generate() is called at temperature 1."""
    first = [TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []
    return LogitsProcessorList([*first, NucleusFilter(top_p)] if top_p < 1.0 else first)


@torch.no_grad()
def _generate(s: SampleSettings, prompts: list[str]) -> list[list[str]]:
    """Sample s.per_prompt continuations of every prompt, left-padded batches, new tokens only."""
    model, tokenizer = load_causal_lm(s.model)
    tokenizer.padding_side = "left"
    generator = torch.Generator().manual_seed(s.seed)
    flat = [p for p in prompts for _ in range(s.per_prompt)]
    out: list[str] = []
    for start in tqdm(range(0, len(flat), s.batch_size), desc=f"sampling {s.model}", leave=False):
        batch = tokenizer(flat[start:start + s.batch_size], return_tensors="pt", padding=True)
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        ids = model.generate(**batch, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                             logits_processor=sampling_processors(s.temperature, s.top_p),
                             max_new_tokens=s.max_new_tokens, pad_token_id=tokenizer.pad_token_id)
        out += [clean(t) for t in tokenizer.batch_decode(ids[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)]
    return [out[i:i + s.per_prompt] for i in range(0, len(out), s.per_prompt)]


def samples_key(s: SampleSettings, prompts: list[str]) -> str:
    """Cache key of a set of samples: settings, generator identity, the exact prompts and library versions."""
    return cache_key(kind="samples", settings=asdict(s), nucleus="temperature, then top-p over top-k candidates",
                     model=model_identity(s.model), prompts=_fingerprint(prompts),
                     versions=[torch.__version__, transformers.__version__])


def sample_continuations(s: SampleSettings, prompts: list[str]) -> list[list[str]]:
    """s.per_prompt sampled continuations of each prompt: read from the cache, or generated and cached first."""
    path = cache_root() / "paper-b-samples" / f"{samples_key(s, prompts)}.json"
    if path.exists():
        try:
            cached = json.loads(path.read_text())
            if len(cached) == len(prompts):
                return cached
        except (OSError, ValueError):
            pass  # corrupt entry: regenerate below
    samples = _generate(s, prompts) if prompts else []
    with staged_file(path) as tmp:
        tmp.write_text(json.dumps(samples))
    return samples
