"""Unit sites: each site records and forces where it says, on tiny models of the architectures the profiles use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tiny import ARCHITECTURES, CORPUS, tiny_causal_lm, tiny_tokenizer

from companion.core.errors import UserError
from companion.steering import expertise, interventions, recording

LANGS = ["en", "fr", "de", "es", "ru", "en", "en", "en"]  # the language of each CORPUS sentence
# The module each site's units belong to, by architecture: Gemma 3 (the default model), Llama/Qwen2 (Aya's Cohere
# layout names its MLP the same way), BLOOM-7b1, GPT-2 (the layout of PolyLM-13B's checkpoint).
SITE_MODULE = {
    "gemma3_text": {"input": "mlp.down_proj", "output": "post_feedforward_layernorm"},
    "llama": {"input": "mlp.down_proj", "output": "mlp.down_proj"},
    "qwen2": {"input": "mlp.down_proj", "output": "mlp.down_proj"},
    "bloom": {"input": "mlp.dense_4h_to_h", "output": "mlp.dense_4h_to_h"},
    "gpt2": {"input": "mlp.c_proj", "output": "mlp.c_proj"},
}


def captured(model: torch.nn.Module, name: str, site: str, text: str, tokenizer) -> torch.Tensor:
    """The input (site 'input') or output (site 'output') of one module on one sentence, seen by a last hook."""
    seen = {}
    module = dict(model.named_modules())[name]
    if site == "input":
        handle = module.register_forward_pre_hook(lambda m, args: seen.update(value=args[0].detach().clone()))
    else:
        handle = module.register_forward_hook(lambda m, args, out: seen.update(value=out.detach().clone()))
    with torch.inference_mode():
        model(**tokenizer(text, return_tensors="pt"))
    handle.remove()
    return seen["value"][0]


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
@pytest.mark.parametrize("site", ["input", "output"])
def test_each_site_records_and_forces_the_module_it_names(arch: str, site: str) -> None:
    model, tokenizer = tiny_causal_lm(arch), tiny_tokenizer()
    acts, units = recording.record_activations(model, tokenizer, CORPUS, batch_size=4, site=site)
    assert units["module"].str.endswith(SITE_MODULE[arch][site]).all() and (units["site"] == site).all()
    assert sorted(units["layer"].unique()) == [0, 1, 2]
    table = expertise.expertise_table(acts, units, LANGS)
    experts = expertise.select_experts(table, "fr", 6, "top_bottom")
    name = experts.sort_values("layer")["module"].iloc[0]
    chosen = experts[experts["module"] == name]
    before = captured(model, name, site, CORPUS[0], tokenizer)
    with interventions.intervene(model, experts) as hooks:
        assert f"{name}.hook_{'in' if site == 'input' else 'out'}" in hooks
        after = captured(model, name, site, CORPUS[0], tokenizer)
    index = torch.tensor(chosen["index"].to_numpy())
    torch.testing.assert_close(after[:, index], torch.tensor(chosen["on_p50"].to_numpy(), dtype=after.dtype).expand(
        after.shape[0], -1))
    others = torch.ones(after.shape[-1], dtype=torch.bool)
    others[index] = False
    if experts["layer"].min() == chosen["layer"].iloc[0]:  # nothing forced upstream: the other features are untouched
        torch.testing.assert_close(after[:, others], before[:, others])


def test_output_site_of_gemma_is_what_the_residual_stream_receives() -> None:
    model, tokenizer = tiny_causal_lm("gemma3_text"), tiny_tokenizer()
    assert recording.default_pattern(model, "output") == recording.RESIDUAL_WRITE
    block = model.model.layers[1]
    mid = captured(model, "model.layers.1.pre_feedforward_layernorm", "input", CORPUS[0], tokenizer)
    written = captured(model, "model.layers.1.post_feedforward_layernorm", "output", CORPUS[0], tokenizer)
    seen = {}
    handle = block.register_forward_hook(lambda m, args, out: seen.update(out=(out[0] if isinstance(out, tuple) else out)))
    with torch.inference_mode():
        model(**tokenizer(CORPUS[0], return_tensors="pt"))
    handle.remove()
    torch.testing.assert_close(seen["out"][0] - mid, written)  # the block adds exactly the site's output
    assert recording.default_pattern(tiny_causal_lm("llama"), "output") == recording.DEFAULT_UNITS
    with pytest.raises(UserError, match="unit site"):
        recording.unit_modules(model, site="middle")


def calls(module: torch.nn.Module) -> list[int]:
    """A list that grows by one each time module runs (a forward pre-hook left in place)."""
    seen: list[int] = []
    module.register_forward_pre_hook(lambda m, args: seen.append(1))
    return seen


@pytest.mark.parametrize("arch", ["gemma3_text", "gpt2"])
@pytest.mark.parametrize("order", [("input", "output"), ("output", "input")])
def test_both_sites_in_one_pass_equal_each_site_recorded_alone(arch: str, order: tuple[str, str]) -> None:
    model, tokenizer = tiny_causal_lm(arch), tiny_tokenizer()
    passes, head = calls(model), calls(model.get_output_embeddings())
    both = recording.record_sites(model, tokenizer, CORPUS, dict.fromkeys(order), batch_size=3)
    assert len(passes) == 3 and not head  # one pass per batch, stopped after the deepest module of either site
    for site in order:
        activations, units = recording.record_activations(model, tokenizer, CORPUS, batch_size=3, site=site)
        np.testing.assert_array_equal(both[site][0], activations)
        pd.testing.assert_frame_equal(both[site][1], units)


def test_site_experts_records_what_is_not_cached_in_one_pass_and_caches_each_site_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parallel = tmp_path / "parallel.tsv"
    pd.DataFrame({"en": [f"{CORPUS[0]} {i}" for i in range(40)], "fr": [f"{CORPUS[1]} {i}" for i in range(40)]}).to_csv(
        parallel, sep="\t", index=False)
    model, tokenizer = tiny_causal_lm("gemma3_text"), tiny_tokenizer()
    passes = calls(model)
    found = (model, tokenizer, "tiny", ["en", "fr"], 8, 0)
    options = {"parallel_path": str(parallel), "batch_size": 4}
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "both"))
    tables = expertise.site_experts(*found, dict.fromkeys(recording.SITES), **options)
    assert len(passes) == 4  # 16 sentences in batches of 4, both sites at once
    for site in recording.SITES:
        alone = expertise.site_experts(*found, {site: None}, **options)[site]
        pd.testing.assert_frame_equal(alone, tables[site], check_exact=True)
    assert len(passes) == 4  # each site's table is read from the cache, under its own key
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "alone"))
    for site in recording.SITES:
        alone = expertise.site_experts(*found, {site: None}, **options)[site]
        pd.testing.assert_frame_equal(alone, tables[site], check_exact=True)
    assert len(passes) == 12  # recorded alone, each site costs a pass of its own


@pytest.mark.parametrize("k", [6, 7])
def test_top_and_bottom_picks_half_of_each_tail(k: int) -> None:
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"language": "en", "unit": range(50), "ap": rng.permutation(50) / 50})
    chosen = expertise.select_experts(table, "en", k, "top_bottom")
    ranked = table.sort_values("ap")["unit"].tolist()
    assert len(chosen) == k and chosen["unit"].is_unique
    assert set(chosen["unit"]) == set(ranked[-(k - k // 2):]) | set(ranked[:k // 2])
