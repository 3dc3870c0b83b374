"""companion.steering: AP against sklearn, hooks, interventions, the expertise table and its cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score
from tiny import ARCHITECTURES, CORPUS, tiny_causal_lm, tiny_tokenizer

from companion.core import cache, forward
from companion.core.errors import UserError
from companion.steering import average_precision, expertise, generation, interventions, recording

WIDTH = {"gemma3_text": 48, "llama": 48, "qwen2": 48, "bloom": 128, "gpt2": 128}
LANGS = ["en", "fr", "de", "es", "ru", "en", "en", "en"]  # the language of each CORPUS sentence


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def sklearn_ap(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Reference: sklearn's AP, one unit and one class at a time."""
    return np.array([[average_precision_score(labels[:, c], scores[:, u]) for u in range(scores.shape[1])]
                     for c in range(labels.shape[1])])


def test_average_precision_equals_sklearn_on_random_scores():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(300, 40)).astype(np.float32)
    labels = rng.random((300, 3)) < [0.2, 0.5, 0.05]
    np.testing.assert_allclose(average_precision.average_precision(scores, labels, chunk=16), sklearn_ap(scores, labels), atol=1e-6)


def test_average_precision_equals_sklearn_with_ties():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, size=(200, 30)).astype(np.float32)  # heavy ties
    scores[:, 0] = 1.0  # a constant unit: AP is the positive rate
    labels = rng.random((200, 2)) < 0.3
    ours = average_precision.average_precision(scores, labels)
    np.testing.assert_allclose(ours, sklearn_ap(scores, labels), atol=1e-6)
    np.testing.assert_allclose(ours[:, 0], labels.mean(axis=0), atol=1e-9)


def test_average_precision_one_label_per_row_equals_sklearn():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(240, 50)).astype(np.float32)
    scores[:, :5] = rng.integers(-2, 3, size=(240, 5))  # tied units take the exact path
    scores[:8, 5], scores[8:16, 5] = -0.0, 0.0  # signed zeros are ties too
    labels = np.eye(4, dtype=bool)[rng.integers(0, 4, size=240)]
    ours = average_precision.average_precision(scores, labels, chunk=16)
    np.testing.assert_allclose(ours, sklearn_ap(scores, labels), atol=1e-9)


def test_average_precision_of_float64_scores_equals_sklearn():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(150, 20))
    scores[:, :4] = rng.integers(0, 3, size=(150, 4))  # ties
    labels = rng.random((150, 3)) < [0.3, 0.5, 0.1]
    np.testing.assert_allclose(average_precision.average_precision(scores, labels), sklearn_ap(scores, labels), atol=1e-9)


def no_hooks(model: torch.nn.Module) -> bool:
    """True when no forward or pre-forward hook is left on any module."""
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def some_experts(table: pd.DataFrame, layer: int, index: list[int]) -> pd.DataFrame:
    """Rows of the 'en' table at the given layer and indices, with recognisable forced values."""
    rows = table[(table["language"] == "en") & (table["layer"] == layer) & table["index"].isin(index)].copy()
    rows["on_p50"] = [7.0 + i for i in range(len(rows))]
    return rows


@pytest.fixture(scope="module")
def llama_table(tokenizer):
    model = tiny_causal_lm("llama")
    acts, units = recording.record_activations(model, tokenizer, CORPUS, batch_size=3)
    return model, acts, expertise.expertise_table(acts, units, LANGS)


def test_hooks_removed_when_the_body_raises(llama_table):
    model, _, table = llama_table
    experts = some_experts(table, 1, [0, 1])
    with pytest.raises(RuntimeError, match="boom"):
        with interventions.intervene(model, experts) as names:
            assert names == ["model.layers.1.mlp.down_proj.hook_in"]
            assert not no_hooks(model)
            raise RuntimeError("boom")
    assert no_hooks(model)


def test_hooks_removed_when_a_module_is_unknown(llama_table):
    model, _, table = llama_table
    experts = pd.concat([some_experts(table, 0, [0]), some_experts(table, 1, [0]).assign(module="no.such")])
    with pytest.raises(KeyError):
        with interventions.intervene(model, experts):
            pass
    assert no_hooks(model)


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_intervention_changes_exactly_the_chosen_units(llama_table, tokenizer, pooling):
    model, _, table = llama_table
    before, units = recording.record_activations(model, tokenizer, CORPUS, pooling=pooling)
    experts = some_experts(table, 1, [2, 5, 7])
    with interventions.intervene(model, experts):
        after, _ = recording.record_activations(model, tokenizer, CORPUS, pooling=pooling)
    chosen = units["unit"].isin(experts["unit"]).to_numpy()
    shallow = (units["layer"] <= 1).to_numpy()
    np.testing.assert_allclose(after[:, chosen], np.tile(experts["on_p50"].to_numpy(), (len(CORPUS), 1)), rtol=1e-6)
    np.testing.assert_array_equal(after[:, shallow & ~chosen], before[:, shallow & ~chosen])
    assert not np.allclose(after[:, ~shallow], before[:, ~shallow])  # the change propagates downstream
    assert no_hooks(model)


def test_intervention_on_some_rows_leaves_the_other_rows_as_they_were(llama_table, tokenizer):
    """rows: one batch, units forced in its second half only; its first half is the unforced run, its second half
    the run with every row forced."""
    model, _, table = llama_table
    experts = some_experts(table, 1, [2, 5, 7])
    batch = tokenizer(CORPUS[:2] * 2, return_tensors="pt", padding=True)
    with torch.no_grad():
        plain = model(**batch).logits
        with interventions.intervene(model, experts):
            forced = model(**batch).logits
        with interventions.intervene(model, experts, rows=slice(2, 4)):
            half = model(**batch).logits
    assert torch.allclose(half[:2], plain[:2]) and torch.allclose(half[2:], forced[2:])
    assert not torch.allclose(forced[2:], plain[2:])  # the forcing changes the output, so the first check can fail
    assert no_hooks(model)


def test_intervention_at_last_position_only(llama_table, tokenizer):
    model, _, table = llama_table
    experts = some_experts(table, 0, [3])
    with interventions.intervene(model, experts, positions="last"):
        mean_after, units = recording.record_activations(model, tokenizer, CORPUS[:1], pooling="mean")
        last_after, _ = recording.record_activations(model, tokenizer, CORPUS[:1], pooling="last")
    unit = units["unit"].isin(experts["unit"]).to_numpy()
    assert last_after[0, unit][0] == pytest.approx(7.0)
    assert mean_after[0, unit][0] != pytest.approx(7.0)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_architecture_records_ranks_and_forces(arch, tokenizer):
    model = tiny_causal_lm(arch)
    acts, units = recording.record_activations(model, tokenizer, CORPUS, batch_size=4)
    assert acts.shape == (len(CORPUS), 3 * WIDTH[arch]) and np.isfinite(acts).all()
    assert sorted(units["layer"].unique()) == [0, 1, 2]
    table = expertise.expertise_table(acts, units, LANGS)
    assert len(table) == 5 * acts.shape[1] and table["ap"].between(0, 1).all()
    experts = expertise.select_experts(table, "fr", 4)
    with interventions.intervene(model, experts):
        forced, _ = recording.record_activations(model, tokenizer, CORPUS[:2])
    np.testing.assert_allclose(forced[:, experts["unit"].to_numpy()][0], experts["on_p50"].to_numpy(), rtol=1e-5)
    assert no_hooks(model)


def test_user_pattern_selects_other_units_and_bad_pattern_is_a_user_error(tokenizer):
    model = tiny_causal_lm("llama")
    acts, units = recording.record_activations(model, tokenizer, CORPUS[:3], pattern=r"self_attn\.o_proj$")
    assert acts.shape == (3, 3 * 32) and units["module"].str.endswith("o_proj").all()
    with pytest.raises(UserError, match="unit pattern"):
        recording.unit_modules(model, r"no_such_module$")


def test_selection_top_bottom_random_and_controls(llama_table):
    _, _, table = llama_table
    en = table[table["language"] == "en"].sort_values("ap")
    top = expertise.select_experts(table, "en", 6)
    assert sorted(top["ap"]) == sorted(en.tail(6)["ap"])  # compared by AP: tied units may swap
    both = expertise.select_experts(table, "en", 6, "top_bottom")
    assert sorted(both["ap"]) == sorted([*en.head(3)["ap"], *en.tail(3)["ap"]])
    r1, r2 = (expertise.select_experts(table, "en", 6, "random", seed=3) for _ in range(2))
    assert list(r1["unit"]) == list(r2["unit"]) and len(set(r1["unit"])) == 6
    assert expertise.choose(table, "en", 6, "random-median", seed=3)[1] == "all_p50"
    assert expertise.choose(table, "en", 6, "experts", seed=3)[1] == "on_p50"
    experts = expertise.choose(table, "en", 6, "experts", seed=3, expert_how="top_bottom")[0]
    control = expertise.choose(table, "en", 6, "random-target", seed=3, expert_how="top_bottom")[0]
    assert control["layer"].value_counts().to_dict() == experts["layer"].value_counts().to_dict()  # layer-matched
    assert set(control["language"]) == {"en"} and control.index.is_unique
    others = [expertise.choose(table, "en", 6, "random-target", seed=s, expert_how="top_bottom")[0] for s in range(5)]
    assert len({tuple(c["unit"]) for c in others}) > 1  # drawn at random, by seed
    with pytest.raises(UserError):
        expertise.select_experts(table, "en", 10**6)


def test_expertise_table_statistics_and_round_trip(llama_table, tmp_path):
    _, acts, table = llama_table
    fr = table[table["language"] == "fr"].sort_values("unit")
    is_fr = np.array(LANGS) == "fr"
    np.testing.assert_allclose(fr["on_p50"], np.median(acts[is_fr], axis=0))
    np.testing.assert_allclose(fr["off_mean"], acts[~is_fr].mean(axis=0), rtol=1e-6)
    path = expertise.save_table(table, tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(expertise.load_table(path), table)
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]  # no temporary file left behind


def test_corrupt_cache_is_rebuilt_alone(llama_table, tmp_path):
    _, _, table = llama_table
    calls = []

    def build(names):
        calls.append(names)
        return dict.fromkeys(names, table)

    keys = {"a": cache.cache_key(model="tiny", languages=["en", "fr"], n=8), "b": cache.cache_key(model="tiny", n=9)}
    first = expertise.cached_tables(keys, build, root=tmp_path)
    again = expertise.cached_tables(keys, build, root=tmp_path)
    assert calls == [["a", "b"]]  # the missing tables are built together, once
    pd.testing.assert_frame_equal(first["a"], again["a"])
    (tmp_path / "experts" / f"{keys['b']}.parquet").write_bytes(b"not a parquet file")
    rebuilt = expertise.cached_tables(keys, build, root=tmp_path)
    assert calls == [["a", "b"], ["b"]]  # only the corrupt one is rebuilt
    pd.testing.assert_frame_equal(rebuilt["b"], table)
    assert cache.cache_key(model="tiny", languages=["en", "de"], n=8) != keys["a"]


@pytest.mark.parametrize("arch, overrides", [("llama", {}), ("gemma3_text", {}),
                                             ("gemma3_text", {"final_logit_softcapping": 2.0})])
def test_perplexity_matches_the_model_loss_and_ignores_padding(tokenizer, monkeypatch, arch, overrides):
    model = tiny_causal_lm(arch, **overrides)
    batch = tokenizer(CORPUS[:1], return_tensors="pt")
    with torch.no_grad():
        loss = model(**batch, labels=batch["input_ids"]).loss
    projected = []  # rows the LM head projects at once
    model.get_output_embeddings().register_forward_hook(lambda module, args, out: projected.append(args[0].shape[:-1]))
    monkeypatch.setattr(forward, "HEAD_ROWS", 5)
    assert generation.perplexity(model, tokenizer, CORPUS[:1]) == pytest.approx(float(torch.exp(loss)), rel=1e-5)
    n = batch["input_ids"].shape[1]
    if overrides:  # softcapped logits are not the head's output: the model runs whole, its head on every position
        assert projected == [(1, n)]
    else:  # the head projects the n - 1 positions that predict a real token, at most HEAD_ROWS at a time
        assert projected == [(min(5, n - 1 - start),) for start in range(0, n - 1, 5)] and n - 1 > 5
    for side in ("right", "left"):  # Gemma's tokenizer pads on the left: no loss is counted from a pad position
        tokenizer.padding_side = side
        together = generation.perplexity(model, tokenizer, CORPUS, batch_size=8)
        one_by_one = generation.perplexity(model, tokenizer, CORPUS, batch_size=1)
        assert together == pytest.approx(one_by_one, rel=1e-5), side
    tokenizer.padding_side = "right"


@pytest.mark.parametrize("arch", ["gemma3_text", "llama"])
def test_greedy_continuations_do_not_depend_on_the_batch(arch, tokenizer):
    model = tiny_causal_lm(arch)
    prompts = [" ".join(text.split()[:words]) for text in CORPUS for words in (2, 4, 6)]  # 24 prompts, left-padded
    together = generation.continue_text(model, tokenizer, prompts, max_new_tokens=8, batch_size=32)
    assert any(together)
    for batch_size in (1, 16):
        assert generation.continue_text(model, tokenizer, prompts, max_new_tokens=8, batch_size=batch_size) == together


def test_steered_generation_reports_languages_and_leaves_no_hooks(llama_table, tokenizer):
    model, _, table = llama_table
    run = generation.steered_generation(model, tokenizer, table, "fr", 4, "random-median", CORPUS[:2], CORPUS[1:3],
                                      generation.language_identifier(), seed=0, max_new_tokens=3)
    assert len(run["continuations"]) == 2 and len(run["in_target"]) == 2 and run["perplexity"] > 1
    assert no_hooks(model)


def test_unforced_continuations_are_reused_at_k0_only(llama_table, tokenizer):
    model, _, table = llama_table
    identifier, prompts = generation.language_identifier(), CORPUS[:2]
    fresh = generation.steered_generation(model, tokenizer, table, "fr", 0, "experts", prompts, CORPUS[1:3], identifier,
                                          seed=0, max_new_tokens=3)
    unforced = generation.continue_text(model, tokenizer, prompts, max_new_tokens=3)
    assert fresh["continuations"] == unforced  # k=0 forces nothing
    reused = generation.steered_generation(model, tokenizer, table, "fr", 0, "experts", prompts, CORPUS[1:3], identifier,
                                           seed=0, max_new_tokens=3, unforced=["x", "y"])
    assert reused["continuations"] == ["x", "y"] and reused["perplexity"] == fresh["perplexity"]
    forced = generation.steered_generation(model, tokenizer, table, "fr", 4, "experts", prompts, CORPUS[1:3], identifier,
                                           seed=0, max_new_tokens=3, unforced=["x", "y"])
    assert forced["continuations"] != ["x", "y"]


def test_language_identifier_names_clear_sentences():
    identifier = generation.language_identifier()
    found = generation.identified_languages(["The cat is sleeping on the warm mat.", "Le chat dort sur le tapis.", " "],
                                          identifier)
    assert found == ["en", "fr", "und"]


@pytest.mark.parametrize("languages", [None, ["en", "fr"]])
def test_too_few_letters_is_undetermined_not_a_language(languages):
    identifier = generation.language_identifier(languages)
    junk = ["", "   ", "1234567890 42 3.14", "!!! ... ???", "abc def", "a1b2c3d4e5f6g7h8i9", "Le chat ?"]
    assert generation.identified_languages(junk, identifier) == ["und"] * len(junk)
    assert generation.identified_languages(["Le chat dort sur le tapis."], identifier) == ["fr"]
    assert generation.identified_languages(["1 2 abcdefghij"], identifier)[0] != "und"  # ten letters: identified
