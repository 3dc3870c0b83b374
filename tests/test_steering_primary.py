"""The primary retrieval row, the exploratory maximum and the sampled generation test: bootstraps against a direct
computation."""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from test_stats import direct_seed_item_interval
from tiny import tiny_causal_lm, tiny_tokenizer

from companion.core.stats import percentile_interval, wilson_interval
from companion.steering import generation, primary, retrieval
from companion.steering.expertise import choose
from companion.steering.settings import SteeringSettings

PAIRS = [("en", "fr"), ("fr", "en")]


def fake_runs(rng: np.random.Generator, seeds: list[int], n: int) -> dict:
    """Hits (layers x sentences) before and after for experts and control runs of each seed."""
    runs = {}
    before = {pair: rng.random((2, n)) < 0.4 for pair in PAIRS}
    for seed in seeds:
        for arm, p in (("experts", 0.6), ("random-target", 0.45)):
            runs[(seed, arm, 8)] = {pair: (before[pair], rng.random((2, n)) < p, np.zeros(2), ~before[pair],
                                           rng.random((2, n)) < p) for pair in PAIRS}
    return runs


def test_primary_row_pools_pairs_per_sentence_and_pairs_its_intervals() -> None:
    rng = np.random.default_rng(1)
    runs = fake_runs(rng, [0, 1, 2], 30)
    row = primary.primary_row(runs, PAIRS, [4, 9], 9, 8, [0, 1, 2], "random-target", "top_bottom", 200, 5)
    pre = np.stack([np.mean([runs[(s, "experts", 8)][p][0][1] for p in PAIRS], axis=0) for s in range(3)])
    post = np.stack([np.mean([runs[(s, "experts", 8)][p][1][1] for p in PAIRS], axis=0) for s in range(3)])
    assert row["top1_pre"] == pytest.approx(pre.mean()) and row["top1_post"] == pytest.approx(post.mean())
    assert row["ratio"] == pytest.approx(post.mean() / pre.mean())
    assert row["diff_ci"] == pytest.approx(direct_seed_item_interval(pre, post, 200, 5))
    other = row["other_centring"]  # the same runs' hits with the other centring (the last two of each run's hits)
    other_pre = np.stack([np.mean([runs[(s, "experts", 8)][p][3][1] for p in PAIRS], axis=0) for s in range(3)])
    other_post = np.stack([np.mean([runs[(s, "experts", 8)][p][4][1] for p in PAIRS], axis=0) for s in range(3)])
    assert row["center"] is False and other["center"] is True
    assert other["top1_pre"] == pytest.approx(other_pre.mean()) and other["top1_post"] == pytest.approx(other_post.mean())
    assert other["diff_ci"] == pytest.approx(direct_seed_item_interval(other_pre, other_post, 200, 5))
    table = primary.centring_table(row)
    assert table.loc["off", "top1_pre"] == row["top1_pre"] and table.loc["on", "top1_post"] == other["top1_post"]
    assert "With the embeddings centred" in primary.sentence(row)
    flipped = primary.primary_row(runs, PAIRS, [4, 9], 9, 8, [0, 1, 2], "random-target", "top_bottom", 200, 5, center=True)
    assert flipped["center"] is True and flipped["other_centring"]["center"] is False  # labels follow the setting
    assert primary.centring_table(flipped).loc["off", "top1_pre"] == pytest.approx(other_pre.mean())
    assert row["pairs"] == ["en→fr", "fr→en"] and row["n_eval"] == 30 and row["seeds"] == [0, 1, 2]
    assert row["diff_ci"][0] <= row["diff"] <= row["diff_ci"][1]
    assert set(row) >= {"layer", "k", "selection", "ratio_ci", "diff_vs_control", "diff_vs_control_ci"}
    assert [r["seed"] for r in row["per_seed"]] == [0, 1, 2]
    assert [r["top1_post"] for r in row["per_seed"]] == pytest.approx(list(post.mean(axis=1)))


def test_the_maximum_ratio_has_the_interval_of_the_maximum_not_of_the_selected_cell() -> None:
    rng = np.random.default_rng(3)
    n, layers, n_boot = 15, [4, 9], 300
    runs = {(0, arm, k): {pair: (rng.random((2, n)) < 0.3, rng.random((2, n)) < p, np.zeros(2)) for pair in PAIRS}
            for k in (8, 16) for arm, p in (("experts", 0.5), ("random-target", 0.35))}
    runs[(0, "experts", 0)] = {pair: (np.ones((2, n), bool), np.ones((2, n), bool), np.zeros(2)) for pair in PAIRS}
    runs[(1, "experts", 8)] = {pair: (np.ones((2, n), bool), np.ones((2, n), bool), np.zeros(2)) for pair in PAIRS}
    runs[(0, "experts", 8)][PAIRS[0]][0][1] = False  # no hit before forcing: no ratio, not a cell of the maximum
    got = retrieval.best_ratio(runs, layers, 0, "experts", n_boot)
    cells = [((src, tgt, layers[i], k), before[i], after[i]) for (s, arm, k), hits in runs.items()
             if s == 0 and arm == "experts" and k > 0 for (src, tgt), (before, after, _) in hits.items() for i in range(2)
             if before[i].any()]
    maxima = [max(after[d].mean() / before[d].mean() for _, before, after in cells if before[d].any())
              for d in np.random.default_rng(0).integers(0, n, size=(n_boot, n))]  # sentences drawn once per replicate
    where, before, after = max(cells, key=lambda cell: cell[2].mean() / cell[1].mean())
    assert got["cells"] == len(cells) == 2 * 2 * 2 - 1
    assert got["ratio"] == pytest.approx(after.mean() / before.mean())
    low, high = percentile_interval(np.log(maxima))  # reflected about the largest ratio, on the log scale
    assert got["ratio_ci"] == pytest.approx([got["ratio"] ** 2 / np.exp(high), got["ratio"] ** 2 / np.exp(low)])
    assert got["record"] == {"src": where[0], "tgt": where[1], "layer": where[2], "k": where[3],
                             "top1_pre": pytest.approx(before.mean()), "top1_post": pytest.approx(after.mean())}
    control = retrieval.best_ratio(runs, layers, 0, "random-target", n_boot)
    assert control["cells"] == 8 and control["ratio"] != got["ratio"]
    assert retrieval.best_ratio(runs, layers, 2, "experts", n_boot) == {"ratio": None, "ratio_ci": None, "record": None,
                                                                       "cells": 0}


def test_sampled_primary_compares_each_target_with_k0_and_the_control() -> None:
    rows = []
    for arm, targets, hits in (("k=0", ["en", "fr"], {"en": 1, "fr": 0}), ("experts", ["fr"], {"fr": 1}),
                               ("random-target", ["fr"], {"fr": 0}), ("experts", ["en"], {"en": 1}),
                               ("random-target", ["en"], {"en": 1})):
        rows += [{"arm": arm, "target": t, "seed": s, "sample": i, "in_target": bool(hits[t] and (s + i) % 2 == 0)}
                 for t in targets for s in range(2) for i in range(4)]
    result = generation.sampled_primary(pd.DataFrame(rows), 8, "top_bottom", "", 100, 0)
    by_target = {t["target"]: t for t in result["targets"]}
    assert by_target["fr"]["share"] == 0.5 and by_target["fr"]["share_k0"] == 0.0
    assert by_target["fr"]["diff_vs_control"] == 0.5 and by_target["en"]["diff_vs_k0"] == 0.0
    assert tuple(by_target["en"]["diff_vs_k0_ci"]) == (0.0, 0.0)
    assert result["control"] == "random-target" and result["prompt"] == ""
    assert by_target["fr"]["share_wilson_ci"] == pytest.approx(wilson_interval(4, 8))  # pooled samples, seeds ignored


def fake_table(seed: int, languages: list[str], units: int = 40) -> pd.DataFrame:
    """An expertise table whose AP ranking depends on the experts-split seed."""
    rng = np.random.default_rng(100 + seed)
    return pd.DataFrame([{"language": code, "module": "m", "layer": 0, "index": i, "unit": f"m:{i}", "ap": rng.random(),
                          "on_p50": 1.0, "off_p50": 0.0, "off_mean": 0.0, "all_p50": 0.5}
                         for code in languages for i in range(units)])


def test_each_sampling_seed_forces_the_experts_of_its_own_experts_split(monkeypatch: pytest.MonkeyPatch) -> None:
    languages = ["en", "fr"]
    tables = {seed: fake_table(seed, languages) for seed in (0, 1, 2)}
    asked, forced = [], []
    lab = SimpleNamespace(settings=SteeringSettings(languages=languages), model=None, tokenizer=None, languages=languages,
                          expertise=lambda seed: asked.append(seed) or tables[seed])

    @contextmanager
    def record(model: object, units: pd.DataFrame, value: str, rows: slice):
        """Remember the units forced in a block of rows around the next sample_texts call."""
        forced.append((rows.start // 3, set(units["unit"]), value))
        yield []

    def sample(model: object, tokenizer: object, prompt: str, n: int, seed: int, tokens: int, temperature: float,
               blocks: int) -> list[str]:
        """Texts that name the seed and block they were sampled with."""
        forced.append((seed, blocks))
        return [f"Le chat dort sur le tapis, graine {seed}, bloc {i // n}." for i in range(n * blocks)]

    monkeypatch.setattr(generation, "intervene", record)
    monkeypatch.setattr(generation, "sample_texts", sample)
    samples = generation.sampled_generation(lab, 6, "random-target", [0, 1, 2], 3, "", 8, 0.8)
    assert sorted(asked) == [0, 1, 2]
    calls = iter(forced)
    for seed in (0, 1, 2):  # one batch per seed: block 0 (k=0) forces nothing, then experts and control per target
        arms = [(target, arm) for target in languages for arm in ("experts", "random-target")]
        for block, (target, arm) in enumerate(arms, start=1):
            units, value = choose(tables[seed], target, 6, arm, seed, "top_bottom")
            assert next(calls) == (block, set(units["unit"]), value)
        assert next(calls) == (seed, 1 + len(arms))
        drawn = samples[samples["seed"] == seed]
        assert (drawn[drawn["arm"] == "k=0"]["text"].str.endswith("bloc 0.")).all()
        for block, (target, arm) in enumerate(arms, start=1):
            texts = drawn[(drawn["arm"] == arm) & (drawn["target"] == target)]["text"]
            assert len(texts) == 3 and texts.str.endswith(f"graine {seed}, bloc {block}.").all()
    assert len(samples) == 3 * 3 * (len(languages) + 2 * len(languages))
    assert (samples[samples["arm"] == "experts"].groupby("seed").size() == 3 * len(languages)).all()
    one = {seed: choose(tables[seed], "fr", 6, "experts", seed, "top_bottom")[0]["unit"].tolist() for seed in (0, 1)}
    assert one[0] != one[1]  # the splits' experts differ, so the test above tells them apart
    result = generation.sampled_primary(samples, 6, "top_bottom", "", 50, 0)
    assert result["seeds"] == [0, 1, 2] and result["per_seed"] == 3


def test_language_identifier_chooses_among_the_study_languages_only() -> None:
    identifier = generation.language_identifier(["en", "de"])
    assert generation.identified_languages(["Le chat est sur le tapis et il dort."], identifier)[0] in {"en", "de"}


def test_sampling_from_an_empty_prompt_is_reproducible_by_seed() -> None:
    model, tokenizer = tiny_causal_lm("llama"), tiny_tokenizer()
    first, again = (generation.sample_texts(model, tokenizer, "", 6, 3, 5, 0.8) for _ in range(2))
    other = generation.sample_texts(model, tokenizer, "", 6, 4, 5, 0.8)
    assert first == again and first != other and len(first) == 6


def test_arms_sampled_side_by_side_draw_what_each_draws_alone() -> None:
    """Blocks of one batch, each under its own forced units and with the seed's variates, give the samples of one
    call per arm (the forcing is strong enough to change them)."""
    model, tokenizer = tiny_causal_lm("llama"), tiny_tokenizer()
    modules = ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    arms = [pd.DataFrame({"module": modules, "index": [3, 5], "on_p50": [40.0 * sign, -40.0 * sign]}) for sign in (1, -1)]
    alone = [generation.sample_texts(model, tokenizer, "", 4, 3, 6, 0.8)]
    for units in arms:
        with generation.intervene(model, units, "on_p50"):
            alone.append(generation.sample_texts(model, tokenizer, "", 4, 3, 6, 0.8))
    with ExitStack() as stack:
        for block, units in enumerate(arms, start=1):
            stack.enter_context(generation.intervene(model, units, "on_p50", rows=slice(4 * block, 4 * block + 4)))
        together = generation.sample_texts(model, tokenizer, "", 4, 3, 6, 0.8, blocks=3)
    assert together == [text for texts in alone for text in texts]
    assert alone[0] != alone[1] and alone[1] != alone[2]


def test_what_decides_labels_its_first_row_by_the_seed_and_sentences_it_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = SteeringSettings(languages=["en", "fr"], selection="top", n_boot=20)
    lab = SimpleNamespace(settings=settings, expertise=lambda site=None: None)
    hits = {pair: (np.array([[True, False, True]]), np.array([[True, True, True]]), np.array([0.5])) for pair in PAIRS}
    monkeypatch.setattr(primary, "embed_languages", lambda *args: {})
    monkeypatch.setattr(primary, "forced_hits", lambda *args: hits)
    evaluation = pd.DataFrame({"en": ["a", "b", "c"], "fr": ["d", "e", "f"]})
    decided = primary.what_decides(lab, evaluation, PAIRS, 9, 8)
    assert decided["choice"].iloc[0] == "primary settings (experts-split seed 0 only, first 3 sentences per language)"
    assert "selection: top k (not top and bottom)" not in decided["choice"].tolist()  # already the primary setting
    assert decided["diff"].iloc[0] == pytest.approx(1 / 3)
