"""Language experts: record unit activations, rank units by average precision, force them at inference.

The expertise table (one row per language and unit: module, layer, index, ap, on_p50, off_p50, off_mean,
all_p50) is the seam between finding experts and forcing them; it saves to and loads from parquet.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from itertools import repeat
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow
import torch
from py3langid.langid import MODEL_FILE, LanguageIdentifier
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from companion.data import parallel_corpus
from companion.errors import UserError
from companion.forward import StopForward, forward_batches, pool, removing
from companion.files import sha256_file, staged_file
from companion.models import cache_root, model_identity

# The input of each block's MLP down projection: Gemma 3 / Llama / Qwen2 / Cohere, BLOOM, GPT-2.
DEFAULT_UNITS = r"mlp\.(down_proj|dense_4h_to_h|c_proj)$"
STATISTICS = ("on_p50", "off_p50", "off_mean", "all_p50")
SELECTIONS = ("top", "top_bottom", "random")
# What each named selection forces: (how units are chosen, which statistic they are forced to).
CONTROLS = {"random-target": ("random", "on_p50"), "random-median": ("random", "all_p50")}
TABLE_VERSION = 1


def unit_modules(model: nn.Module, pattern: str | None = None) -> dict[str, nn.Module]:
    """Modules (by name, in forward order) whose input features are the units; default: MLP down projections."""
    regex = re.compile(pattern or DEFAULT_UNITS)
    found = {name: module for name, module in model.named_modules() if regex.search(name)}
    if not found:
        raise UserError(
            f"no module of {type(model).__name__} matches the unit pattern '{regex.pattern}'; "
            "pass units=<regex> matching names from model.named_modules(), e.g. 'mlp\\.down_proj$'"
        )
    return found


def layer_of(module_name: str) -> int:
    """The block number in a module name (model.layers.3.mlp.down_proj -> 3)."""
    match = re.search(r"\.(\d+)(\.|$)", module_name)
    return int(match.group(1)) if match else 0


def hook_name(module_name: str) -> str:
    """The name of the hook point at a module's input, TransformerLens style."""
    return f"{module_name}.hook_in"


def record_activations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[str],
    pattern: str | None = None,
    pooling: str = "mean",
    batch_size: int = 32,
    max_tokens: int = 128,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Pooled unit activations (sentences x units, float32) and the unit index (module, layer, index, unit)."""
    modules = unit_modules(model, pattern)
    names = list(modules)
    masks: list[torch.Tensor] = []
    pooled: dict[str, torch.Tensor] = {}

    def keep_mask(module: nn.Module, args: tuple, kwargs: dict) -> None:
        """A model pre-hook that hands the batch's attention mask to the unit hooks."""
        masks[:] = [kwargs["attention_mask"]]

    def hook_for(name: str) -> Callable:
        """A pre-hook that pools the module's input at once (its tokens are not kept) and stops after the deepest."""

        def hook(module: nn.Module, args: tuple) -> None:
            pooled[name] = pool(args[0].float(), masks[0], pooling)
            if name == names[-1]:
                raise StopForward

        return hook

    def per_batch(batch: dict[str, torch.Tensor], output: object) -> torch.Tensor:
        return torch.cat([pooled[name] for name in names], 1)

    handles = [model.register_forward_pre_hook(keep_mask, with_kwargs=True)]
    handles += [modules[name].register_forward_pre_hook(hook_for(name)) for name in names]
    with removing(handles):
        activations = forward_batches(model, tokenizer, sentences, per_batch, batch_size, max_tokens, "recording units")
    widths = [pooled[name].shape[-1] for name in names]
    units = pd.DataFrame({
        "module": np.repeat(names, widths),
        "layer": np.repeat([layer_of(name) for name in names], widths),
        "index": np.concatenate([np.arange(width) for width in widths]),
    })
    units["unit"] = np.arange(len(units))
    return activations, units


def _exact_ap(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AP of every column of scores for each label column (classes x units), any dtype, by a float sort per unit."""
    order = np.argsort(-scores, axis=0, kind="stable")
    ranked = np.take_along_axis(scores, order, axis=0).T
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([_tied_ap(ranked, labels[:, c][order].T, np.bincount(labels[:, c], minlength=2))[1]
                         for c in range(labels.shape[1])])


def _sorted_keys(block: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Sorted int64 keys (units x rows): ascending keys are descending float32 scores, row class in the low byte."""
    bits = np.empty(block.shape[::-1], dtype=np.float32)
    for row in range(0, len(block), 16):  # transposed 16 rows at a time: cache-friendly, 4x faster than at once
        np.add(block[row:row + 16].T, np.float32(0), out=bits[:, row:row + 16])  # + 0: -0.0 becomes 0.0, a tie
    bits = bits.view(np.int32)
    bits ^= (bits >> 31) & 0x7FFFFFFF  # integers in the order of the float32 scores
    np.invert(bits, out=bits)  # ... and in reverse order
    keys = np.left_shift(bits, 8, dtype=np.int64)
    keys |= classes
    keys.sort(axis=1)
    return keys


def _tied_ap(scores: np.ndarray, ranked_classes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """One-vs-rest AP (classes x units) from sorted scores with ties: a tied group counts at its last rank."""
    last = np.ones(scores.shape, dtype=bool)
    last[:, :-1] = scores[:, 1:] != scores[:, :-1]
    end = np.minimum.accumulate(np.where(last, np.arange(scores.shape[1]), scores.shape[1])[:, ::-1], axis=1)[:, ::-1]
    result = []
    for c, size in enumerate(sizes):
        hit = ranked_classes == c
        precision = np.take_along_axis(np.cumsum(hit, axis=1), end, axis=1) / (end + 1.0)
        result.append(np.where(hit, precision, 0.0).sum(axis=1) / size)
    return np.stack(result)


def _ap_partition(block: np.ndarray, classes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """One-vs-rest AP (classes x units) of float32 scores for rows in disjoint classes.

    One integer sort per unit yields the classes in rank order; a stable radix sort of those gives each class's
    ranks in order, so its k-th best row contributes precision k / rank. Units with tied scores count each tied
    group at its last rank instead, as sklearn does.
    """
    keys = _sorted_keys(block, classes)
    ranked_classes = (keys & 0xFF).astype(np.uint8)
    ties = ((keys[:, 1:] ^ keys[:, :-1]).view(np.uint64) < 256).any(axis=1)  # equal scores, any classes
    ranks = np.argsort(ranked_classes, axis=1, kind="stable") + 1.0
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    gained = np.concatenate([np.arange(1, size + 1) for size in sizes]) / ranks
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.stack([gained[:, a:b].sum(axis=1) / (b - a) for a, b in zip(bounds[:-1], bounds[1:])])
        if ties.any():
            ap[:, ties] = _tied_ap(keys[ties] >> 8, ranked_classes[ties], sizes)
    return ap


def _one_vs_rest(labels: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, list[int]]]:
    """(row classes, class sizes, class of each label column) problems covering every label column."""
    if (labels.sum(axis=1) == 1).all() and labels.shape[1] < 256:
        classes = labels.argmax(axis=1)
        return [(classes, np.bincount(classes, minlength=labels.shape[1]), list(range(labels.shape[1])))]
    return [(labels[:, c].astype(np.int64), np.bincount(labels[:, c], minlength=2), [-1, c])
            for c in range(labels.shape[1])]


def average_precision(scores: np.ndarray, labels: np.ndarray, chunk: int = 512) -> np.ndarray:
    """AP of every column of scores (n x units) for each label column (n x classes): classes x units.

    Equal to sklearn.metrics.average_precision_score column by column, ties included. For float32 scores one
    integer sort per unit serves every class when each row has exactly one label, and blocks of units run on
    torch's CPU threads (numpy releases the GIL); other dtypes take a slower float sort.
    """
    labels = np.asarray(labels, dtype=bool).reshape(len(scores), -1)
    if scores.dtype != np.float32:
        return _exact_ap(scores, labels)
    result = np.empty((labels.shape[1], scores.shape[1]))
    starts = range(0, scores.shape[1], chunk)
    with ThreadPoolExecutor(max(1, min(torch.get_num_threads(), len(starts)))) as pool:
        for classes, sizes, columns in _one_vs_rest(labels):
            blocks = pool.map(_ap_partition, (scores[:, s:s + chunk] for s in starts), repeat(classes), repeat(sizes))
            for start, ap in zip(starts, blocks):
                for row, column in enumerate(columns):
                    if column >= 0:
                        result[column, start:start + chunk] = ap[row]
    return result


def expertise_table(activations: np.ndarray, units: pd.DataFrame, row_languages: Sequence[str]) -> pd.DataFrame:
    """One row per (language, unit): one-vs-rest AP and the unit's median/mean activation on and off language."""
    row_languages = np.asarray(row_languages)
    languages = list(dict.fromkeys(row_languages))
    labels = np.stack([row_languages == code for code in languages], axis=1)
    ap = average_precision(activations, labels)
    everywhere = np.median(activations, axis=0)
    parts = []
    for c, code in enumerate(languages):
        on, off = activations[labels[:, c]], activations[~labels[:, c]]
        part = units.copy()
        part.insert(0, "language", code)
        part["ap"] = ap[c]
        part["on_p50"] = np.median(on, axis=0)
        part["off_p50"] = np.median(off, axis=0)
        part["off_mean"] = off.mean(axis=0)
        part["all_p50"] = everywhere
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def save_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Write an expertise table to parquet atomically (temporary file, then rename)."""
    with staged_file(path) as tmp:
        table.to_parquet(tmp, index=False)
    return Path(path)


def load_table(path: str | Path) -> pd.DataFrame:
    """Read an expertise table written by save_table."""
    return pd.read_parquet(path)


def cache_key(**parts: object) -> str:
    """A short stable hash of everything that determines a cached result."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cached_table(key: str, build: Callable[[], pd.DataFrame], root: Path | None = None) -> pd.DataFrame:
    """The table cached under key, or build(), saved for next time; a missing or corrupt file is rebuilt."""
    path = (root or cache_root()) / "experts" / f"{key}.parquet"
    try:
        return load_table(path)
    except (OSError, ValueError, pyarrow.ArrowException):
        table = build()
        save_table(table, path)
        return table


def stacked(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """A parallel frame (one column per language) as sentences and their languages, language by language."""
    sentences = [text for code in frame.columns for text in frame[code]]
    languages = [code for code in frame.columns for _ in range(len(frame))]
    return sentences, languages


def language_experts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    model_name: str,
    languages: list[str],
    n: int,
    seed: int,
    corpus: str = "bible",
    parallel_path: str | None = None,
    pooling: str = "mean",
    units: str | None = None,
    batch_size: int = 32,
) -> pd.DataFrame:
    """The expertise table for these languages from the 'experts' split, cached on disk across notebooks."""
    key = cache_key(
        version=TABLE_VERSION, model=model_identity(model_name), languages=list(languages), n=n, seed=seed,
        corpus=corpus, parallel=sha256_file(Path(parallel_path)) if parallel_path else None,
        pooling=pooling, units=units or DEFAULT_UNITS,
    )

    def build() -> pd.DataFrame:
        """Record activations on the experts split and rank every unit."""
        sentences, labels = stacked(parallel_corpus(languages, n, "experts", seed, corpus, parallel_path))
        activations, unit_index = record_activations(model, tokenizer, sentences, units, pooling, batch_size)
        return expertise_table(activations, unit_index, labels)

    return cached_table(key, build)


def select_experts(table: pd.DataFrame, language: str, k: int, how: str = "top", seed: int = 0) -> pd.DataFrame:
    """k units of one language: highest AP ('top'), k/2 highest + k/2 lowest ('top_bottom'), or 'random'."""
    rows = table[table["language"] == language]
    if rows.empty:
        raise UserError(f"no experts for language '{language}'; the table covers {sorted(table['language'].unique())}")
    if not 0 <= k <= len(rows):
        raise UserError(f"k={k} is outside 0..{len(rows)} (the number of units); pick a smaller k")
    ranked = rows.sort_values("ap", ascending=False, kind="stable")
    if how == "top":
        return ranked.head(k)
    if how == "top_bottom":
        return pd.concat([ranked.head(k - k // 2), ranked.tail(k // 2)]) if k else ranked.head(0)
    if how == "random":
        return rows.iloc[np.sort(np.random.default_rng(seed).choice(len(rows), size=k, replace=False))]
    raise UserError(f"unknown expert selection '{how}'; use one of {', '.join(SELECTIONS)}")


def choose(table: pd.DataFrame, language: str, k: int, selection: str, seed: int,
           expert_how: str = "top") -> tuple[pd.DataFrame, str]:
    """Units and the statistic to force them to, for 'experts' or a random control (random-target, random-median)."""
    if selection == "experts":
        return select_experts(table, language, k, expert_how, seed), "on_p50"
    if selection not in CONTROLS:
        raise UserError(f"unknown selection '{selection}'; use 'experts' or one of {', '.join(CONTROLS)}")
    how, value = CONTROLS[selection]
    return select_experts(table, language, k, how, seed), value


def _forcing_hook(index: torch.Tensor, values: torch.Tensor, positions: str) -> Callable:
    """A pre-hook that overwrites the chosen input features with fixed values."""

    def hook(module: nn.Module, args: tuple) -> tuple:
        hidden = args[0].clone()
        forced = values.to(device=hidden.device, dtype=hidden.dtype)
        if positions == "all":
            hidden[..., index] = forced
        else:
            hidden[..., -1, index] = forced
        return (hidden, *args[1:])

    return hook


@contextmanager
def intervene(model: nn.Module, experts: pd.DataFrame, value: str = "on_p50",
              positions: str = "all") -> Iterator[list[str]]:
    """Force the experts' units to a statistic of the table while the block runs; yields the hook names.

    positions='all' forces every token; 'last' only the last position of each forward call (with left
    padding, each sentence's last token; during generation, each new token). Hooks are removed on exit,
    also when the body raises.
    """
    if value not in STATISTICS:
        raise UserError(f"unknown statistic '{value}'; use one of {', '.join(STATISTICS)}")
    if positions not in ("all", "last"):
        raise UserError(f"unknown positions '{positions}'; use 'all' or 'last'")
    modules = dict(model.named_modules())
    with removing([]) as handles:
        for name, group in experts.groupby("module", sort=False):
            index = torch.tensor(group["index"].to_numpy(), dtype=torch.long)
            values = torch.tensor(group[value].to_numpy(), dtype=torch.float32)
            handles.append(modules[name].register_forward_pre_hook(_forcing_hook(index, values, positions)))
        yield [hook_name(name) for name in experts["module"].unique()]


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


def experts_per_layer(table: pd.DataFrame, k: int, how: str = "top") -> pd.DataFrame:
    """How many of each language's k experts sit in each layer (layers x languages)."""
    chosen = pd.concat([select_experts(table, code, k, how) for code in table["language"].unique()])
    counts = chosen.groupby(["layer", "language"], sort=False).size().unstack(fill_value=0)
    return counts.reindex(sorted(table["layer"].unique()), fill_value=0)[list(table["language"].unique())]


def expert_overlap(table: pd.DataFrame, k: int, how: str = "top") -> pd.DataFrame:
    """Jaccard overlap between the languages' k-expert sets (languages x languages)."""
    codes = list(table["language"].unique())
    sets = {code: set(select_experts(table, code, k, how)["unit"]) for code in codes}
    return pd.DataFrame([[len(sets[a] & sets[b]) / max(len(sets[a] | sets[b]), 1) for b in codes] for a in codes],
                        index=codes, columns=codes)


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
