"""Steered generation: continuations under an intervention, their language, and perplexity."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack

import numpy as np
import pandas as pd
import torch
from py3langid.langid import MODEL_FILE, LanguageIdentifier
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from companion.core import threads
from companion.core.decoding import sample, sampling_processors
from companion.core.forward import forward_batches, next_token_logps, plain_logits, row_sums
from companion.core.stats import seed_item_draws, share_ci, wilson_interval
from companion.steering.experiments import Setup
from companion.steering.expertise import choose
from companion.steering.interventions import intervene


def continue_text(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                  max_new_tokens: int = 20, batch_size: int = 32) -> list[str]:
    """Greedy continuations of each prompt (the new text only), under whatever intervention is active.

    Few prompts per step leave the LM head (262,144 x 640 for Gemma 3) memory-bound on a CPU: a larger batch costs
    little more per step than a smaller one, so the default profile's 32 prompts go in one batch.
    """
    device = next(model.parameters()).device
    texts = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(prompts), batch_size), desc="generating", leave=False, mininterval=10):
            threads.follow()
            batch = tokenizer(list(prompts[start:start + batch_size]), return_tensors="pt", padding=True,
                              padding_side="left").to(device)
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            texts += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return texts


def perplexity(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sentences: Sequence[str],
               batch_size: int = 16, max_tokens: int = 128) -> float:
    """Perplexity of the sentences: exp of the mean next-token loss over all their real tokens.

    Where the logits are the LM head's output as they are (`plain_logits`), the network runs to its last hidden
    states and the head projects only the positions that predict a real token, a few at a time (`next_token_logps`): a batch's
    (batch x tokens x vocabulary) logits are never held at once (1.7 GB for 16 Gemma 3 verses of 100 tokens in
    float32, before the copies the loss makes of them). Other models run whole, their head on every position.
    """
    head = model.get_output_embeddings() if plain_logits(model) else None

    def per_batch(batch: dict[str, torch.Tensor], output: object) -> torch.Tensor:
        mask = batch["attention_mask"].bool()
        keep = mask[:, 1:] & mask[:, :-1]  # real tokens predicted from real ones
        targets = batch["input_ids"][:, 1:][keep]
        # the kept rows only, as one (tokens, vocabulary) matrix: half the time of the loss over the padded
        # (batch, vocabulary, tokens) layout, whose vocabulary axis is not contiguous
        nll = (-next_token_logps(head, output.last_hidden_state[:, :-1][keep], targets) if head is not None else
               torch.nn.functional.cross_entropy(output.logits[:, :-1][keep].float(), targets, reduction="none"))
        return torch.stack([row_sums(nll.to(keep.device), keep), keep.sum(1).float()], 1)

    network = model.base_model if head is not None else model  # the transformer without its head
    sums = forward_batches(network, tokenizer, sentences, per_batch, batch_size, max_tokens, "perplexity")
    return float(np.exp(sums[:, 0].sum() / sums[:, 1].sum()))



def language_identifier(languages: Sequence[str] | None = None) -> LanguageIdentifier:
    """A fresh py3langid identifier (its shipped model, normalised probabilities), choosing among languages if given."""
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    if languages is not None:
        identifier.set_languages(list(languages))
    return identifier



UNDETERMINED = "und"  # ISO 639-2 'undetermined': a text too short to tell its language (never a target)
MIN_LETTERS = 10  # a text with fewer letters (str.isalpha) than this, the empty text included, is UNDETERMINED
IDENTIFICATION_RULE = (f"a text with fewer than {MIN_LETTERS} letters (str.isalpha; digits, punctuation and the empty "
                       f"text included) is '{UNDETERMINED}' (undetermined) and counts as not in the target language")


def identified_languages(texts: Sequence[str], identifier: LanguageIdentifier) -> list[str]:
    """The language code py3langid assigns to each text, or 'und' for a text with fewer than MIN_LETTERS letters."""
    return [identifier.classify(text)[0] if sum(c.isalpha() for c in text) >= MIN_LETTERS else UNDETERMINED
            for text in texts]



def steered_generation(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, table: pd.DataFrame,
                       target: str, k: int, selection: str, prompts: Sequence[str], target_text: Sequence[str],
                       identifier: LanguageIdentifier, seed: int, expert_how: str = "top",
                       max_new_tokens: int = 20, batch_size: int = 32, unforced: Sequence[str] | None = None) -> dict:
    """Continue prompts (batch_size at a time) forcing target's units: continuations, their languages, target perplexity.

    At k=0 nothing is forced: the continuations are `unforced` when given (the same for every target)."""
    units, value = choose(table, target, k, selection, seed, expert_how)
    with intervene(model, units, value):
        texts = (list(unforced) if k == 0 and unforced is not None
                 else continue_text(model, tokenizer, prompts, max_new_tokens, batch_size))
        ppl = perplexity(model, tokenizer, target_text)
    found = identified_languages(texts, identifier)
    return {"target": target, "k": k, "selection": selection, "continuations": texts,
            "in_target": [code == target for code in found], "perplexity": ppl}



def generation_sweep(lab: Setup, evaluation: pd.DataFrame, prompts: Sequence[str], targets: Sequence[str],
                     k_values: Sequence[int], controls: Sequence[str], max_new_tokens: int) -> list[dict]:
    """steered_generation for every target and k, and for each control at every k > 0; the unforced continuations
    (k=0) are generated once, not once per target."""
    s, identifier = lab.settings, language_identifier()
    unforced = continue_text(lab.model, lab.tokenizer, prompts, max_new_tokens, s.batch_size) if 0 in k_values else None
    return [steered_generation(lab.model, lab.tokenizer, lab.table, target, k, arm, prompts, list(evaluation[target]),
                               identifier, s.seed, s.selection, max_new_tokens, s.batch_size, unforced)
            for target in tqdm(targets, desc="target language")
            for k in k_values
            for arm in ["experts"] + (list(controls) if k > 0 else [])]



def share_in_target(runs: list[dict]) -> pd.DataFrame:
    """Per run: the share of continuations in the target language (Wilson 95% interval), the share of degenerate
    continuations (`is_degenerate`) and the perplexity."""
    return pd.DataFrame([{"target": r["target"], "k": r["k"], "selection": r["selection"],
                          **share_ci(np.array(r["in_target"], dtype=bool)),
                          "degenerate": float(np.mean([is_degenerate(text) for text in r["continuations"]])),
                          "perplexity": r["perplexity"]} for r in runs])


DISTINCT_N = 4  # character n-grams of the degeneracy measure
DEGENERATE_BELOW = 0.5  # a text whose distinct-n-gram ratio is below this counts as degenerate


def distinct_ratio(text: str, n: int = DISTINCT_N) -> float:
    """Distinct character n-grams over all of them, whitespace runs collapsed to one space (0 for a text with none):
    about 1 for ordinary prose, near 0 for 'пппп...' or 'la la la ...'."""
    flat = " ".join(text.split())
    grams = [flat[i:i + n] for i in range(len(flat) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def is_degenerate(text: str, threshold: float = DEGENERATE_BELOW) -> bool:
    """Whether a text repeats itself (distinct_ratio below threshold) or is too short to hold one n-gram."""
    return distinct_ratio(text) < threshold


def sampled_degeneracy(samples: pd.DataFrame, control: str) -> pd.DataFrame:
    """Per target: the share of degenerate samples (Wilson 95% interval over the pooled samples) under its experts,
    with nothing forced (k=0) and under the control, beside the share identified as the target language."""
    rows = []
    for target, part in samples.groupby("target", sort=False):
        row: dict = {"target": target}
        for arm, name in (("experts", "experts"), ("k=0", "k0"), (control, "control")):
            texts = part[part["arm"] == arm]["text"]
            flags = np.array([is_degenerate(text) for text in texts], dtype=bool)
            row[f"in_target_{name}"] = float(part[part["arm"] == arm]["in_target"].mean())
            row[f"degenerate_{name}"] = float(flags.mean()) if flags.size else float("nan")
            row[f"degenerate_{name}_ci"] = wilson_interval(int(flags.sum()), int(flags.size))
        row["n"] = int((part["arm"] == "experts").sum())
        rows.append(row)
    return pd.DataFrame(rows).set_index("target")


def degeneracy_sentence(table: pd.DataFrame) -> str:
    """The degenerate shares of the sampled test in one sentence (numbers from the table, rounded)."""
    parts = [f"**{target}** {row['degenerate_experts']:.2f} under its experts, {row['degenerate_k0']:.2f} at k = 0, "
             f"{row['degenerate_control']:.2f} under the control" for target, row in table.iterrows()]
    return (f"Share of samples that are degenerate (distinct character {DISTINCT_N}-grams below {DEGENERATE_BELOW:.0%} "
            f"of all, e.g. one letter or word repeated): " + "; ".join(parts) + ". A degenerate sample still counts "
            "toward the target-language share when the identifier assigns it that language.")


def perplexity_sentence(share: pd.DataFrame) -> str:
    """How the greedy test's perplexity on target-language text moves under forcing, per target (from the table)."""
    parts, rose = [], 0
    for target, rows in share.groupby("target", sort=False):
        base = rows[rows["k"] == 0]["perplexity"]
        forced = rows[(rows["k"] > 0) & (rows["selection"] == "experts")]
        if base.empty or forced.empty:
            continue
        top = forced.sort_values("k").iloc[-1]
        control = rows[(rows["k"] == top["k"]) & (rows["selection"] != "experts")]["perplexity"]
        rose += int(top["perplexity"] > base.iloc[0])
        parts.append(f"{target} {base.iloc[0]:.1f} at k = 0, {top['perplexity']:.1f} under its {int(top['k']):,} experts"
                     + (f", {control.iloc[0]:.1f} under the control" if len(control) else ""))
    if not parts:
        return ""
    return (f"Perplexity on the target language's own text rises under its experts for {rose} of {len(parts)} targets: "
            + "; ".join(parts) + ".")



def examples(runs: list[dict], prompts: Sequence[str], n: int = 4) -> pd.DataFrame:
    """The first n prompts and their continuations under each target's experts at the largest k."""
    largest = max(r["k"] for r in runs)
    return pd.DataFrame({"prompt": list(prompts[:n]), **{
        r["target"]: r["continuations"][:n] for r in runs if r["k"] == largest and r["selection"] == "experts"}})



def sample_texts(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, n: int, seed: int,
                 max_new_tokens: int, temperature: float, blocks: int = 1) -> list[str]:
    """n continuations of one prompt sampled at a temperature (no top-k or top-p cut), reproducible by seed; with
    blocks, n x blocks rows in one batch, each block of n drawn with the variates of a lone call (under whatever
    each block's rows have forced)."""
    threads.follow()
    ids = tokenizer(prompt)["input_ids"] or [tokenizer.bos_token_id]  # an empty prompt is <bos> alone
    inputs = torch.tensor([ids] * (n * blocks), device=next(model.parameters()).device)
    out = sample(model, {"input_ids": inputs, "attention_mask": torch.ones_like(inputs)}, max_new_tokens,
                 sampling_processors(temperature, 1.0, seed, blocks), tokenizer.pad_token_id)
    return tokenizer.batch_decode(out[:, inputs.shape[1]:], skip_special_tokens=True)



SAMPLED_ROWS = 128  # most rows sampled at once by `sampled_generation`: whole arms of per_seed samples, one batch


def sampled_generation(lab: Setup, k: int, control: str, seeds: Sequence[int], per_seed: int, prompt: str,
                       max_new_tokens: int, temperature: float) -> pd.DataFrame:
    """The lineage's test: sample from a neutral prompt with no units forced, then with each language's k experts and
    with the control; one row per (arm, target, seed, sample) with the language identified among the study's.

    Each seed is an experts split and a sampling stream at once: seed s forces the experts found on the experts split
    drawn with s (lab.expertise(s), cached on disk), draws the control's random units with s, and samples with s.
    The unforced samples (arm 'k=0') are drawn once per seed and scored against every target. A seed's arms are
    sampled side by side, each in its own block of rows under its own units and with the same variates (SAMPLED_ROWS
    rows at a time): the samples a call per arm would draw, up to float rounding, in a fraction of the time, since
    a few rows leave the LM head bound by reading its weights on a CPU.
    """
    s, identifier = lab.settings, language_identifier(lab.languages)
    rows = []
    for seed in tqdm(seeds, desc="seeds (experts split and sampling)"):
        table = lab.expertise(seed)
        arms = [("k=0", list(lab.languages), None, "on_p50")]
        arms += [(arm, [target], *choose(table, target, k, arm, seed, s.selection))
                 for target in lab.languages for arm in ("experts", control)]
        step = max(1, SAMPLED_ROWS // per_seed)
        for start in range(0, len(arms), step):
            batch = arms[start:start + step]
            with ExitStack() as stack:
                for block, (_, _, units, value) in enumerate(batch):
                    if units is not None:
                        stack.enter_context(intervene(lab.model, units, value,
                                                      rows=slice(block * per_seed, (block + 1) * per_seed)))
                texts = sample_texts(lab.model, lab.tokenizer, prompt, per_seed, seed, max_new_tokens, temperature,
                                     len(batch))
            drawn = list(zip(texts, identified_languages(texts, identifier)))
            for block, (arm, targets, _, _) in enumerate(batch):
                rows.extend({"arm": arm, "target": target, "seed": seed, "sample": i, "text": text, "language": code,
                             "in_target": code == target} for target in targets
                            for i, (text, code) in enumerate(drawn[block * per_seed:(block + 1) * per_seed]))
    return pd.DataFrame(rows)



def sampled_primary(samples: pd.DataFrame, k: int, selection: str, prompt: str, n_boot: int, seed: int) -> dict:
    """Per target: share in the target language under its experts, at k=0 and under the control, with paired intervals.

    A seed is one experts split and one sampling stream, shared by the arms (see sampled_generation). The samples are
    nested in the seeds, so an interval is the spread of the per-seed values with a t quantile, never narrower than a
    bootstrap of the samples (drawn jointly for the three arms): `SeedItemDraws.interval` with `nested`. That interval
    collapses to [1, 1] when every sample of every seed is in the target language, so `share_wilson_ci` gives the
    Wilson score interval of the pooled samples beside it (samples treated as independent, seeds ignored).
    """
    arms = [arm for arm in samples["arm"].unique() if arm not in ("k=0", "experts")]
    targets = []
    for target, rows in samples.groupby("target", sort=False):
        grid = {arm: rows[rows["arm"] == arm].pivot(index="seed", columns="sample", values="in_target").to_numpy(float)
                for arm in ["experts", "k=0", *arms]}
        # (experts, k=0, control); sample i of one seed is unrelated to sample i of another: nested
        draws = seed_item_draws({"shares": tuple(grid.values())}, n_boot, seed, nested=True)
        share, k0, control = (float(grid[arm].mean()) for arm in grid)
        targets.append({"target": target, "share": share,
                        "share_ci": draws.interval(lambda m: m["shares"][:, 0], bounds=(0, 1)),
                        "share_wilson_ci": wilson_interval(int(grid["experts"].sum()), int(grid["experts"].size)),
                        "share_k0": k0, "share_control": control, "diff_vs_k0": share - k0,
                        "diff_vs_k0_ci": draws.interval(lambda m: m["shares"][:, 0] - m["shares"][:, 1], bounds=(-1, 1)),
                        "diff_vs_control": share - control,
                        "diff_vs_control_ci": draws.interval(lambda m: m["shares"][:, 0] - m["shares"][:, 2],
                                                             bounds=(-1, 1))})
    return {"k": k, "selection": selection, "control": arms[0], "prompt": prompt,
            "seeds": sorted(int(seed) for seed in samples["seed"].unique()), "per_seed": int(samples["sample"].nunique()),
            "experts_split": "one per seed: seed s forces the experts found on the experts split drawn with s",
            "targets": targets}



def sampled_sentence(primary: dict, n: int) -> str:
    """The sampled test's result in one sentence per target (numbers from the primary record, rounded)."""
    parts = [f"**{t['target']}**: {t['share']:.2f} under its experts vs {t['share_k0']:.2f} with nothing forced "
             f"(difference {t['diff_vs_k0']:+.2f}, 95% CI {t['diff_vs_k0_ci'][0]:+.2f} to {t['diff_vs_k0_ci'][1]:+.2f}) "
             f"and {t['share_control']:.2f} under the control" for t in primary["targets"]]
    return f"Share of {n} samples per target in the target language (k={primary['k']}): " + "; ".join(parts) + "."
