"""Steered generation: continuations under an intervention, their language, and perplexity."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from py3langid.langid import MODEL_FILE, LanguageIdentifier
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from companion.core.forward import forward_batches
from companion.core.stats import mean_ci
from companion.steering.experiments import Setup
from companion.steering.expertise import choose
from companion.steering.interventions import intervene


def continue_text(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                  max_new_tokens: int = 20, batch_size: int = 16) -> list[str]:
    """Greedy continuations of each prompt (the new text only), under whatever intervention is active."""
    device = next(model.parameters()).device
    texts = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(prompts), batch_size), desc="generating", leave=False, mininterval=10):
            batch = tokenizer(list(prompts[start:start + batch_size]), return_tensors="pt", padding=True,
                              padding_side="left").to(device)
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            texts += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return texts



def perplexity(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sentences: Sequence[str],
               batch_size: int = 8, max_tokens: int = 128) -> float:
    """Perplexity of the sentences: exp of the mean next-token loss over all their real tokens."""

    def per_batch(batch: dict[str, torch.Tensor], output: object) -> torch.Tensor:
        logits = output.logits[:, :-1].float()
        targets, keep = batch["input_ids"][:, 1:], batch["attention_mask"][:, 1:].bool()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        return torch.stack([torch.where(keep, nll, 0.0).sum(1), keep.sum(1).float()], 1)

    sums = forward_batches(model, tokenizer, sentences, per_batch, batch_size, max_tokens, "perplexity")
    return float(np.exp(sums[:, 0].sum() / sums[:, 1].sum()))



def language_identifier() -> LanguageIdentifier:
    """A fresh py3langid identifier (its shipped model, all of its languages, normalised probabilities)."""
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)



def identified_languages(texts: Sequence[str], identifier: LanguageIdentifier) -> list[str]:
    """The language code py3langid assigns to each text ('' for an empty text)."""
    return [identifier.classify(text)[0] if text.strip() else "" for text in texts]



def steered_generation(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, table: pd.DataFrame,
                       target: str, k: int, selection: str, prompts: Sequence[str], target_text: Sequence[str],
                       identifier: LanguageIdentifier, seed: int, expert_how: str = "top",
                       max_new_tokens: int = 20, batch_size: int = 16) -> dict:
    """Continue prompts while forcing target's units: continuations, their languages, and target-text perplexity."""
    units, value = choose(table, target, k, selection, seed, expert_how)
    with intervene(model, units, value):
        texts = continue_text(model, tokenizer, prompts, max_new_tokens, batch_size)
        ppl = perplexity(model, tokenizer, target_text, batch_size)
    found = identified_languages(texts, identifier)
    return {"target": target, "k": k, "selection": selection, "continuations": texts,
            "in_target": [code == target for code in found], "perplexity": ppl}



def generation_sweep(lab: Setup, evaluation: pd.DataFrame, prompts: Sequence[str], targets: Sequence[str],
                     k_values: Sequence[int], controls: Sequence[str], max_new_tokens: int) -> list[dict]:
    """steered_generation for every target and k, and for each control at the largest k."""
    s, identifier = lab.settings, language_identifier()
    return [steered_generation(lab.model, lab.tokenizer, lab.table, target, k, arm, prompts, list(evaluation[target]),
                               identifier, s.seed, s.selection, max_new_tokens)
            for target in tqdm(targets, desc="target language")
            for k in k_values
            for arm in ["experts"] + (list(controls) if k == max(k_values) else [])]



def share_in_target(runs: list[dict], seed: int) -> pd.DataFrame:
    """Per run: the share of continuations in the target language (bootstrap 95% interval) and the perplexity."""
    return pd.DataFrame([{"target": r["target"], "k": r["k"], "selection": r["selection"],
                          **mean_ci(np.array(r["in_target"], dtype=float), seed=seed), "perplexity": r["perplexity"]}
                         for r in runs])



def examples(runs: list[dict], prompts: Sequence[str], n: int = 4) -> pd.DataFrame:
    """The first n prompts and their continuations under each target's experts at the largest k."""
    largest = max(r["k"] for r in runs)
    return pd.DataFrame({"prompt": list(prompts[:n]), **{
        r["target"]: r["continuations"][:n] for r in runs if r["k"] == largest and r["selection"] == "experts"}})
