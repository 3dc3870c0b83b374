"""What the review of paper A's pages added: the reverse retrieval direction from a shared cache, chance overlap,
degenerate samples, Wilson intervals and the palette."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from tiny import CORPUS, tiny_causal_lm, tiny_tokenizer

from companion.core.stats import share_ci, wilson_interval
from companion.core.style import palette
from companion.steering import alignment, embeddings, expertise, generation, primary, recording, retrieval, space
from companion.steering.settings import SteeringSettings

LANGS = ["en", "fr", "de", "es", "ru", "en", "en", "en"]  # the language of each CORPUS sentence


def test_wilson_interval_equals_the_direct_formula_and_is_not_a_point_at_n_of_n() -> None:
    z = norm.ppf(0.975)
    for successes, n in [(33, 33), (0, 33), (7, 20), (1, 2)]:
        p = successes / n
        centre = (p + z ** 2 / (2 * n)) / (1 + z ** 2 / n)
        half = z / (1 + z ** 2 / n) * np.sqrt(p * (1 - p) / n + z ** 2 / (4 * n ** 2))
        assert wilson_interval(successes, n) == pytest.approx((centre - half, centre + half), abs=1e-12)
    assert wilson_interval(33, 33)[0] == pytest.approx(33 / (33 + z ** 2))  # the closed form at n / n, below 1
    assert wilson_interval(33, 33)[1] == pytest.approx(1.0)
    assert share_ci(np.array([True] * 3 + [False])) == pytest.approx({"mean": 0.75, **dict(zip(("low", "high"),
                                                                                         wilson_interval(3, 4)))})


def test_chance_jaccard_matches_simulation_and_the_large_n_approximation() -> None:
    rng = np.random.default_rng(0)
    n, k = 60, 20
    simulated = np.mean([len(set(a) & set(b)) / len(set(a) | set(b))
                         for a, b in ((rng.choice(n, k, replace=False), rng.choice(n, k, replace=False))
                                      for _ in range(20000))])
    assert expertise.chance_jaccard(k, n) == pytest.approx(simulated, abs=0.003)
    assert expertise.chance_jaccard(8000, 36864) == pytest.approx(8000 / (2 * 36864 - 8000), rel=1e-3)
    assert expertise.chance_jaccard(n, n) == pytest.approx(1.0)


def test_mean_overlap_reports_the_ratio_to_chance() -> None:
    matrix = pd.DataFrame([[1.0, 0.2], [0.2, 1.0]], index=["en", "fr"], columns=["en", "fr"])
    table = expertise.mean_overlap({10: matrix}, 60)
    chance = expertise.chance_jaccard(10, 60)
    assert table.loc["mean overlap between languages", 10] == pytest.approx(0.2)
    assert table.loc["chance overlap (two random k-sets)", 10] == pytest.approx(chance)
    assert table.loc["observed / chance", 10] == pytest.approx(0.2 / chance)
    assert f"{0.2 / chance:.1f}x chance" in expertise.overlap_finding({10: matrix}, 60)


def test_degenerate_texts_are_the_repetitive_ones() -> None:
    assert generation.is_degenerate("п" * 32)
    assert generation.is_degenerate("la la la la la la la la la la")
    assert generation.is_degenerate("de la de la la la la la la la la la la la")
    assert generation.is_degenerate("")  # nothing to read
    for text in CORPUS:
        assert not generation.is_degenerate(text)
    assert generation.distinct_ratio("abcab") == pytest.approx(2 / 2)  # 'abca', 'bcab'
    assert generation.distinct_ratio("aaaaaa") == pytest.approx(1 / 3)


def test_sampled_degeneracy_counts_per_arm_with_wilson_intervals() -> None:
    texts = {"experts": ["п" * 30, "la la la la la la la la", CORPUS[1], CORPUS[2]],
             "k=0": CORPUS[:4], "random-target": ["п" * 30] + CORPUS[:3]}
    rows = [{"arm": arm, "target": "fr", "seed": 0, "sample": i, "text": text, "language": "fr", "in_target": i < 3}
            for arm, batch in texts.items() for i, text in enumerate(batch)]
    table = generation.sampled_degeneracy(pd.DataFrame(rows), "random-target")
    assert table.loc["fr", "degenerate_experts"] == pytest.approx(0.5)
    assert table.loc["fr", "degenerate_k0"] == pytest.approx(0.0)
    assert table.loc["fr", "degenerate_control"] == pytest.approx(0.25)
    assert table.loc["fr", "degenerate_experts_ci"] == pytest.approx(wilson_interval(2, 4))
    assert table.loc["fr", "in_target_experts"] == pytest.approx(0.75)
    assert "**fr** 0.50 under its experts, 0.00 at k = 0, 0.25 under the control" in generation.degeneracy_sentence(table)


def test_perplexity_sentence_reads_the_greedy_table() -> None:
    share = pd.DataFrame([{"target": "de", "k": 0, "selection": "experts", "perplexity": 100.0},
                          {"target": "de", "k": 20, "selection": "experts", "perplexity": 300.0},
                          {"target": "de", "k": 20, "selection": "random-target", "perplexity": 150.0},
                          {"target": "fr", "k": 0, "selection": "experts", "perplexity": 50.0},
                          {"target": "fr", "k": 20, "selection": "experts", "perplexity": 40.0}])
    text = generation.perplexity_sentence(share)
    assert text.startswith("Perplexity on the target language's own text rises under its experts for 1 of 2 targets")
    assert "de 100.0 at k = 0, 300.0 under its 20 experts, 150.0 under the control" in text


def test_direction_row_pools_pairs_per_sentence_with_a_paired_interval() -> None:
    rng = np.random.default_rng(3)
    hits = {(src, "en"): (rng.random(60) < 0.5, rng.random(60) < 0.2) for src in ("fr", "de")}
    row = primary.direction_row(hits, 9, 20, 0, 400)
    before = np.mean([hits[p][0] for p in hits], axis=0)
    after = np.mean([hits[p][1] for p in hits], axis=0)
    assert row["top1_pre"] == pytest.approx(before.mean()) and row["top1_post"] == pytest.approx(after.mean())
    assert row["diff_ci"][0] < row["diff"] < row["diff_ci"][1]
    items = np.random.default_rng(0).integers(0, 60, size=(400, 60))
    spread = np.std([after[i].mean() - before[i].mean() for i in items], ddof=1)
    assert row["diff_ci"][1] - row["diff_ci"][0] == pytest.approx(2 * norm.ppf(0.975) * spread, rel=1e-6)
    assert [p["pair"] for p in row["per_pair"]] == ["fr→en", "de→en"] and row["control"] is None
    text = primary.direction_sentence(row, {"top1_pre": 0.4, "top1_post": 0.5, "diff": 0.1, "diff_ci": (0.05, 0.15)})
    assert ("drops" in text) == (row["diff_ci"][1] < 0)


def test_the_forced_pass_is_cached_for_every_block_and_shared_by_both_pages(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path))
    model, tokenizer = tiny_causal_lm("llama"), tiny_tokenizer()
    acts, units = recording.record_activations(model, tokenizer, CORPUS, batch_size=3)
    table = expertise.expertise_table(acts, units, LANGS)
    evaluation = pd.DataFrame({"en": CORPUS[5:8], "fr": CORPUS[0:3], "de": CORPUS[2:5]})
    settings = SteeringSettings(languages=["en", "fr", "de"], n_boot=50, batch_size=2)
    lab = SimpleNamespace(settings=settings, model=model, tokenizer=tokenizer, table=table, languages=settings.languages)
    passes = []
    real = embeddings.sentence_embeddings
    monkeypatch.setattr(retrieval, "sentence_embeddings", lambda *a, **kw: passes.append(1) or real(*a, **kw))
    pre, post = space.before_after(lab, evaluation, "en", 6, [0, 1, 2])
    forced = len(passes)
    direct = embeddings.steered_embeddings(model, tokenizer, evaluation, table, "en", 6, "experts", [1], 0, ["fr"],
                                           settings.selection, batch_size=2)
    into = primary.into_pivot(lab, evaluation, 1, 6)
    assert len(passes) == forced  # the retrieval page reads the embedding-space page's forced pass
    np.testing.assert_allclose(post["fr"][1], direct["fr"][0], rtol=1e-5, atol=1e-6)  # a shallower pass, same block
    expected = [alignment.retrieval_hits(post[src][1], pre["en"][1]).mean() for src in ("fr", "de")]
    assert into["top1_post"] == pytest.approx(np.mean(expected))
    assert into["pairs"] == ["fr→en", "de→en"]


def test_palette_keeps_orange_and_vermilion_apart_up_to_six_keys() -> None:
    colours = np.array(list(palette([f"k{i}" for i in range(6)]).values()))
    distances = [np.linalg.norm(colours[a] - colours[b]) for a, b in combinations(range(6), 2)]
    assert min(distances) > 0.25  # seaborn's "colorblind" orange and vermilion are 0.20 apart
    assert len(palette([f"k{i}" for i in range(10)])) == 10
