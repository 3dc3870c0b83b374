"""Paper B data: the gold labeller's accuracy, prompt-dependent labels, deduplication at the default settings,
and the shortcut rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from companion.core.errors import UserError
from companion.rewards import sentiment_sets
from companion.rewards.baselines import fit_shortcuts
from companion.rewards.gold import gold_labeller
from companion.rewards.preferences import PreferenceSet, deduplicate, normalise, pair_texts, set_descriptions
from companion.rewards.sentiment_sets import SPECS, BuildSettings, embedded_sets, embedded_training, labelled_pairs

ROOT = Path(__file__).resolve().parents[1]
GOLD_FLOOR = 0.85  # a TF-IDF logistic regression on IMDB scores about 0.90 on held-out reviews


@pytest.fixture(scope="module")
def gold():
    """The cached gold labeller (fitted once, about 20 s, then read from the companion cache)."""
    return gold_labeller()


def test_gold_labeller_is_accurate_on_held_out_reviews(gold):
    assert gold.accuracy["imdb_held_out"] >= GOLD_FLOOR
    assert gold.reward(["a wonderful, moving film"])[0] > 0 > gold.reward(["a dull, boring waste of time"])[0]


def test_the_target_in_the_prompt_decides_which_ending_wins(gold):
    endings = [("a wonderful, moving film", "a dull, boring waste of time")] * 2
    pairs = labelled_pairs(["I saw this film", "I saw this film"], endings, gold, min_margin=0.5)
    assert [p["target"] for p in pairs] == ["positive", "negative"]
    assert pairs[0]["chosen"] == pairs[1]["rejected"] == " a wonderful, moving film"
    assert labelled_pairs(["x"], [("a film", "a film!")], gold, min_margin=0.5) == []  # no margin, no pair


def test_deduplication_drops_case_and_punctuation_twins_and_seen_text():
    seen = {normalise("Old text.")}
    pairs = [{"prompt": "p1", "chosen": " Great film!", "rejected": " great film"},
             {"prompt": "p2", "chosen": " old TEXT", "rejected": " new"},
             {"prompt": "p3", "chosen": " fine", "rejected": " bad"},
             {"prompt": "p3", "chosen": " other", "rejected": " words"}]
    assert [p["prompt"] for p in deduplicate(pairs, seen)] == ["p3"]
    assert {"fine", "bad", "p3"} <= seen


def fake_sampler(settings, prompts):
    """Endings of three words from a small vocabulary, so that some collide across sets (the real sampler is slow)."""
    rng = np.random.default_rng(abs(hash((settings.model, settings.seed, settings.temperature))) % 2**32)
    words = "great awful film boring lovely plot bad best dull fine superb weak acting story cast worst script fun".split()
    words += "loved hated brilliant terrible moving silly charming ugly clever stupid warm cold".split()
    return [[" ".join(rng.choice(words, size=3)) for _ in range(settings.per_prompt)] for _ in prompts]


def test_no_text_is_shared_between_training_and_test_sets_at_the_default_settings(monkeypatch):
    params = yaml.safe_load((ROOT / "notebooks" / "profiles" / "paper_b.default.yaml").read_text())["notebooks"]
    defaults = params["dpo_3_generalization"]
    monkeypatch.setattr(sentiment_sets, "sample_continuations", fake_sampler)
    settings = BuildSettings(n_train=defaults["n_train"], n_test=defaults["n_test"], sets=tuple(SPECS))
    train, sets = embedded_sets(settings)
    assert len(train) > 0 and {t.name for t in sets} >= set(defaults["ood"]) | {"in-distribution"}
    assert embedded_training(settings) == train  # the training page's path (no test set drawn) gives the same pairs
    seen = {text for pair in train for text in pair_texts(pair)}
    for t in sets:
        assert len(t.description) > 80
        for pair in t.pairs:
            assert normalise(pair["chosen"]) != normalise(pair["rejected"])
            assert not pair_texts(pair) & seen, f"{t.name} shares text with an earlier set"
            seen |= pair_texts(pair)
    assert all(len(t.pairs) == defaults["n_test"] for t in sets), {t.name: len(t.pairs) for t in sets}


def test_unknown_set_names_are_one_clear_line():
    with pytest.raises(UserError, match="unknown test set"):
        BuildSettings(sets=("nowhere",))


def test_shortcut_rules_learn_length_and_words_but_not_the_prompt():
    train = [{"prompt": f"p{i}", "chosen": " good good film here", "rejected": " bad"} for i in range(10)]
    rules = fit_shortcuts(train)
    assert rules.longer_wins
    test = [{"prompt": "q", "chosen": " good", "rejected": " bad bad bad"}]
    assert rules.length_correct(test).tolist() == [0.0] and rules.bow_correct(test).tolist() == [1.0]
    json.dumps({"ok": float(rules.bow_correct(train).mean())})


def test_set_descriptions_list_every_set_with_its_shift_and_size():
    """The page lists what each set shifts below the shortcut table, one line per set."""
    pair = {"prompt": "p", "chosen": " a", "rejected": " b"}
    sets = [PreferenceSet(spec.name, spec.shift, spec.description, (pair,) * (i + 1))
            for i, spec in enumerate(SPECS.values())]
    lines = set_descriptions(sets).splitlines()
    assert len(lines) == len(SPECS)
    assert lines[0] == f"- **in-distribution** (in distribution, 1 pairs): {SPECS['in-distribution'].description}"
    assert lines[1].startswith("- **rt-prompts** (prompt shift, 2 pairs): ")
    assert any("(prompt and response shift" in line for line in lines)
