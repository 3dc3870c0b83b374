"""One round of iterative DPO, as Lin et al. motivate: each reward model labels fresh samples of the policy.

The trained DPO policy (first seed) writes two endings for new prompts; DPORM and EXRM each say which ending is
better, and their agreement with the gold labeller is measured on the pairs whose gold margin is at least the test
sets' `min_margin` (near-ties are a coin toss for any labeller). Each labeller's pairs are added to the training pairs
and a next policy is trained by DPO on them; the gold reward of that policy's samples on held-out prompts (log-odds
of the target sentiment) says which labeller makes the better next policy.

The round's prompts are IMDB openings that no training pair used. Each next policy is trained afresh from the
common SFT start on the training pairs plus the round's pairs (not continued from the policy's adapter), so
'policy against next' mixes new labels with more training, while DPORM's next policy against EXRM's holds
everything but the labels equal.

The next policies train for at least one pass over their pairs: with fewer optimizer steps than that, the trainer's
seeded sample of the (equally long) pair lists can miss exactly the pairs the two labellers disagree on, and the two
next policies come out identical although their labels differ. Where the labellers agree on every pair, the two
next policies are trained on the same pairs and are the same policy by construction; the record says how many pairs
they label differently.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from peft import PeftModel

from companion.core.files import staged_folder
from companion.core.models import MARKER, load_causal_lm
from companion.core.stats import against_chance, percentile_interval, resample_means
from companion.core.tables import format_interval
from companion.rewards.gold import GoldLabeller
from companion.rewards.preferences import Pair, normalise, pool, reviews
from companion.rewards.sampling import SampleSettings, sample_continuations
from companion.rewards.scoring import cached_reference_logps, score_models
from companion.rewards.sentiment_sets import TARGETS, prompt_text, split_review
from companion.rewards.training import TrainSettings, trained_folder, trained_models


@dataclass(frozen=True)
class RoundSettings:
    """Prompts labelled in the round, held-out prompts for the gold reward, how endings are sampled, and the least gold
    margin of a pair on which agreement with gold is measured (the test sets' `min_margin`)."""

    n_prompts: int = 128
    n_eval: int = 64
    prompt_words: int = 8
    max_new_tokens: int = 24
    seed: int = 0
    min_margin: float = 0.0


def merged_policy(s: TrainSettings, pairs: list[Pair]) -> str:
    """A folder with the DPO policy of these settings and pairs, adapter merged, that generate() can load (cached)."""
    adapter = trained_folder(s, pairs, "dpo")
    folder = adapter / "merged"
    if not (folder / MARKER).exists():
        with staged_folder(folder) as staging:
            base, tokenizer = load_causal_lm(s.model)
            PeftModel.from_pretrained(base, adapter / "dpo").merge_and_unload().save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            (staging / MARKER).write_text(json.dumps({"adapter": adapter.name}))
    return str(folder)


def round_prompts(n: int, r: RoundSettings, test: bool, used: frozenset[str] = frozenset()) -> tuple[list[str], np.ndarray]:
    """n prompts (alternating targets) from IMDB openings of the training or test pool that are not among the used
    openings (normalised), and each target's sign."""
    imdb = pool(reviews(), test)
    imdb = imdb[imdb["source"] == "imdb"]
    shuffled = imdb.iloc[np.random.default_rng(r.seed + 100 + int(test)).permutation(len(imdb))]
    candidates = (split_review(t, r.prompt_words, 0)[0] for t in shuffled["text"])
    openings = [o for o in candidates if normalise(o) not in used][:n]
    targets = [TARGETS[i % 2] for i in range(len(openings))]
    return [prompt_text(o, t) for o, t in zip(openings, targets)], np.array([1.0 if t == "positive" else -1.0 for t in targets])


def _samples(folder: str, prompts: list[str], r: RoundSettings, s: TrainSettings) -> list[list[str]]:
    """Two sampled endings of each prompt from a merged policy folder, at the training's precision and placement."""
    return sample_continuations(SampleSettings(model=folder, max_new_tokens=r.max_new_tokens, seed=r.seed,
                                               precision=s.precision, device_map=s.device_map), prompts)


def aligned_gold(gold: GoldLabeller, samples: list[list[str]], signs: np.ndarray) -> np.ndarray:
    """Per prompt, the mean gold log-odds of its endings in the direction of its target."""
    scores = gold.reward([e for pair in samples for e in pair]).reshape(len(samples), -1)
    return scores.mean(axis=1) * signs


def agreement_with_gold(first: np.ndarray, gold_margin: np.ndarray, min_margin: float) -> np.ndarray:
    """Per pair whose gold margin (first ending minus second, towards the target) is at least min_margin in size: 1.0
    where the labeller's winner is gold's. Near-ties say little about a labeller and are left out, as in the test sets."""
    clear = np.abs(gold_margin) >= min_margin
    return (first == (gold_margin > 0))[clear].astype(float)


def relabelled(fit_pairs: list[Pair], pairs: list[Pair], first: np.ndarray) -> list[Pair]:
    """The training pairs plus the round's pairs, each oriented as a labeller says (first: the first ending wins)."""
    return fit_pairs + [p if f else {**p, "chosen": p["rejected"], "rejected": p["chosen"]} for p, f in zip(pairs, first)]


def next_settings(s: TrainSettings, n_pairs: int) -> TrainSettings:
    """A next policy's training: the policy's settings with at least one pass over its n_pairs pairs, so that every
    pair a labeller oriented is seen (the steps are the same for both labellers, whose pair lists are equally long)."""
    return replace(s, steps=max(s.steps, math.ceil(n_pairs / s.batch_size)))


def labeller_rewards(s: TrainSettings, fit_pairs: list[Pair], pairs: list[Pair]) -> dict[str, np.ndarray]:
    """DPORM's and EXRM's (n, 2) rewards of the round's pairs; the two models are released on return, before the next
    policies train."""
    models = trained_models(s, fit_pairs)
    return score_models(models, pairs, cached_reference_logps(models, pairs, s.max_length), s.beta, s.max_length)


def iterative_round(s: TrainSettings, fit_pairs: list[Pair], gold: GoldLabeller, r: RoundSettings,
                    n_boot: int = 1000) -> dict:
    """Agreement of DPORM and EXRM with gold on fresh policy samples, and the gold reward of each next policy."""
    used = frozenset(normalise(p.get("opening") or p["prompt"].split("Review: ", 1)[-1]) for p in fit_pairs)
    prompts, signs = round_prompts(r.n_prompts, r, test=False, used=used)
    samples = _samples(merged_policy(s, fit_pairs), prompts, r, s)
    keep = [i for i, (a, b) in enumerate(samples) if normalise(a) != normalise(b)]
    pairs = [{"prompt": prompts[i], "chosen": " " + samples[i][0], "rejected": " " + samples[i][1]} for i in keep]
    gold_margin = gold.reward([p["chosen"] for p in pairs]) - gold.reward([p["rejected"] for p in pairs])
    agree, firsts = {}, {}
    for labeller, rewards in labeller_rewards(s, fit_pairs, pairs).items():
        firsts[labeller] = rewards[:, 0] > rewards[:, 1]
        agree[labeller] = agreement_with_gold(firsts[labeller], signs[keep] * gold_margin, r.min_margin)
    following = next_settings(s, len(fit_pairs) + len(pairs))
    eval_prompts, eval_signs = round_prompts(r.n_eval, r, test=True)
    policies = {"policy": merged_policy(s, fit_pairs),
                **{f"next ({name.upper()} labels)": merged_policy(following, relabelled(fit_pairs, pairs, firsts[name]))
                   for name in ("dporm", "exrm")}}
    reward = {name: aligned_gold(gold, _samples(folder, eval_prompts, r, s), eval_signs)
              for name, folder in policies.items()}
    n_clear = len(next(iter(agree.values()), []))
    groups = {"gold": tuple(v[None] for v in reward.values())}
    if n_clear:  # no pair clears the margin (a tiny round): no agreement to measure
        groups["agreement"] = tuple(a[None] for a in agree.values())
    reps = resample_means(groups, n_boot=n_boot, seed=r.seed)
    return {"n_pairs": len(pairs), "n_eval": len(eval_prompts), "n_agreement": n_clear, "min_margin": r.min_margin,
            "n_labelled_differently": int((firsts["dporm"] != firsts["exrm"]).sum()) if pairs else 0,
            "next_steps": following.steps, "next_pairs": len(fit_pairs) + len(pairs),
            "agreement": {k: float(v.mean()) if n_clear else None for k, v in agree.items()},
            "agreement_ci": {k: list(percentile_interval(reps["agreement"][:, i])) if n_clear else None
                             for i, k in enumerate(agree)},
            "gold_reward": {k: float(v.mean()) for k, v in reward.items()},
            "gold_reward_ci": {k: list(percentile_interval(reps["gold"][:, i])) for i, k in enumerate(reward)}}


def labelling_note(record: dict) -> str:
    """One paragraph for the page: how many pairs the labellers orient differently, and what that means for the two
    next policies (the same policy by construction when it is none)."""
    n, differ = record["n_pairs"], record["n_labelled_differently"]
    budget = (f"Each next policy is trained for {record['next_steps']} steps, at least one pass over its "
              f"{record['next_pairs']} pairs (the training pairs and the round's), so every pair a labeller oriented "
              "is seen.")
    if differ == 0:
        return (f"DPORM and EXRM label all {n} pairs of the round the same way, so the two next policies are trained "
                "on the same pairs: **they are the same policy by construction**, and their gold rewards are equal. "
                + budget)
    return (f"DPORM and EXRM label **{differ} of the {n} pairs** of the round differently; the two next policies "
            "differ only through those pairs. " + budget)


def agreement_note(record: dict) -> str:
    """One sentence for the page: each labeller's agreement with gold on the policy's own samples, against chance."""
    if record["n_agreement"] == 0:
        return ""
    parts = []
    for model, value in record["agreement"].items():
        interval = record["agreement_ci"][model]
        parts.append(f"{model.upper()} {value:.3f} {format_interval(interval)}, {against_chance(interval)}")
    return (f"Share of the policy's own samples ({record['n_agreement']} pairs, first seed) on which each labeller "
            "agrees with gold: " + "; ".join(parts) + ".")


def round_table(record: dict) -> pd.DataFrame:
    """The round's two questions as a table: agreement with gold per labeller, gold reward per policy."""
    rows = [{"quantity": f"agreement with gold, {k.upper()} ({record['n_agreement']} pairs whose gold margin is at least "
                         f"{record['min_margin']:g})", "value": None if v is None else round(v, 3),
             "95% interval": format_interval(record["agreement_ci"][k])} for k, v in record["agreement"].items()]
    rows += [{"quantity": f"gold reward of samples, {k}", "value": round(v, 3),
              "95% interval": format_interval(record["gold_reward_ci"][k])} for k, v in record["gold_reward"].items()]
    return pd.DataFrame(rows).set_index("quantity")
