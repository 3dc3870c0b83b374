"""Paper B: preference builders, implicit/explicit reward scoring, agreement with TRL, cached training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from peft import LoraConfig, get_peft_model
from tiny import tiny_causal_lm, tiny_tokenizer
from transformers import AutoModelForSequenceClassification

from companion.core.errors import UserError
from companion.core.preference_files import read_preference_file
from companion.rewards import scoring, training
from companion.rewards.experiments import experiment_sets
from companion.rewards.preferences import PreferenceSet, own_file_sets
from companion.rewards.sentiment_sets import BuildSettings

PAIRS = [
    {"prompt": "the cat sat", "chosen": " on the mat", "rejected": " a dull film"},
    {"prompt": "a good film,", "chosen": " I loved it", "rejected": " I hated it"},
    {"prompt": "In the beginning", "chosen": " God created the earth.", "rejected": " the chat est"},
    {"prompt": "le chat", "chosen": " est sur le tapis", "rejected": " sat on"},
] * 2
SETTINGS = training.TrainSettings(model="unused", beta=0.5, lora_r=4, lora_alpha=8, max_length=32, steps=2,
                                batch_size=4, learning_rate=5e-2, seed=0)


@pytest.fixture(scope="module")
def tokenizer():
    """The shared tiny byte-level BPE tokenizer."""
    return tiny_tokenizer()


@pytest.fixture()
def lora_policy():
    """A tiny llama wrapped in a LoRA adapter whose weights are random (so policy != reference)."""
    config = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
    return get_peft_model(tiny_causal_lm("llama"), config).eval()


def direct_logp(model, ids: list[int], n_prompt: int) -> float:
    """Log-prob of ids[n_prompt:] given ids[:n_prompt], one unpadded sequence, token by token."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    logps = torch.log_softmax(logits, dim=-1)
    return float(sum(logps[t - 1, ids[t]] for t in range(n_prompt, len(ids))))


def test_tokenize_pair_splits_prompt_and_response(tokenizer):
    for pair in PAIRS:
        tokens = scoring.tokenize_pair(tokenizer, pair)
        for key in ("chosen", "rejected"):
            assert tokens["prompt_ids"] + tokens[f"{key}_ids"] == tokenizer(pair["prompt"] + pair[key] + "<eos>")["input_ids"]
            assert tokens[f"{key}_ids"][-1] == tokenizer.eos_token_id


def test_implicit_reward_matches_direct_computation(lora_policy, tokenizer):
    beta = 0.3
    policy = scoring.pair_logps(lora_policy, tokenizer, PAIRS, max_length=64, batch_size=3)
    ref = scoring.reference_logps(lora_policy, tokenizer, PAIRS, max_length=64, batch_size=5)
    got = scoring.implicit_rewards(policy, ref, beta)
    for row, pair in enumerate(PAIRS):
        tokens = scoring.tokenize_pair(tokenizer, pair)
        n_prompt = len(tokens["prompt_ids"])
        for col, key in enumerate(("chosen", "rejected")):
            ids = tokens["prompt_ids"] + tokens[f"{key}_ids"]
            pol = direct_logp(lora_policy, ids, n_prompt)
            with lora_policy.disable_adapter():
                base = direct_logp(lora_policy, ids, n_prompt)
            assert got[row, col] == pytest.approx(beta * (pol - base), abs=1e-4)
    assert np.abs(got).max() > 1e-3  # the adapter really changes the model


def test_prompt_tokens_are_masked(lora_policy, tokenizer):
    prompt, response = tokenizer("the cat sat")["input_ids"], tokenizer(" on the mat")["input_ids"]

    def logps(prompt_ids, chosen, rejected, max_length=64):
        tokens = [{"prompt_ids": prompt_ids, "chosen_ids": chosen, "rejected_ids": rejected}]
        [(_, batch)] = scoring.shared_batches(tokens, 0, max_length, 4, "test")
        return scoring.response_logps(lora_policy, batch)

    values = logps(prompt, response, [])
    assert values[1] == 0.0  # no response token: nothing counted
    assert values[0] == pytest.approx(direct_logp(lora_policy, prompt + response, len(prompt)), abs=1e-4)
    assert values[0] != pytest.approx(float(direct_logp(lora_policy, prompt + response, 1)), abs=1e-3)
    # no prompt: the first token has no prefix and is not counted
    assert logps([], prompt + response, response)[0] == pytest.approx(direct_logp(lora_policy, prompt + response, 1), abs=1e-4)
    cut = len(prompt) + 2  # a sequence longer than max_length is cut, as the trainers cut it
    assert logps(prompt, response, response, max_length=cut)[0] == pytest.approx(
        direct_logp(lora_policy, (prompt + response)[:cut], len(prompt)), abs=1e-4)


def test_pairs_without_a_prompt_are_batched_apart():
    tokens = [{"prompt_ids": [5, 6], "chosen_ids": [7], "rejected_ids": [8, 9]},
              {"prompt_ids": [], "chosen_ids": [7, 7], "rejected_ids": [8]},
              {"prompt_ids": [5], "chosen_ids": [7, 8, 9], "rejected_ids": [8]}]
    batches = {tuple(idx.tolist()): batch for idx, batch in scoring.shared_batches(tokens, 0, 64, 8, "test")}
    assert set(batches) == {(1,), (0, 2)}
    assert batches[(1,)].prompts.shape == (1, 0)
    assert batches[(0, 2)].prompt_mask.tolist() == [[1, 1], [0, 1]]  # left-padded
    assert batches[(0, 2)].mask.tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1], [1, 0, 0]]  # chosen, rejected of each


MIXED = [  # prompts of several token lengths, responses of several lengths, repeated prompts
    {"prompt": "the cat", "chosen": " sat on the mat today", "rejected": " no"},
    {"prompt": "a good film, I think", "chosen": " I loved it", "rejected": " I hated it a lot"},
    {"prompt": "the cat", "chosen": " ran", "rejected": " slept all day long"},
    {"prompt": "In the beginning God created", "chosen": " the earth.", "rejected": " chat"},
    {"prompt": "le", "chosen": " chat est sur le tapis", "rejected": " sat"},
]


# Gemma 3 with a sliding-window layer beside a full one, a window shorter than the prompts (its cache is cut back)
SHAPES = {"llama": {}, "gemma3_text": {"layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
                                       "sliding_window": 4}}


@pytest.mark.parametrize("pad", ["own pad token", "pad is EOS"])  # the embedded models pad with EOS
@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_shared_prompt_scoring_equals_one_full_pass_per_sequence(arch, pad):
    """Both responses continue one prompt pass (cached keys and values): the numbers of a full pass per sequence."""
    tokenizer = tiny_tokenizer()
    if pad == "pad is EOS":
        tokenizer.pad_token = tokenizer.eos_token
    assert max(len(scoring.tokenize_pair(tokenizer, pair)["prompt_ids"]) for pair in MIXED) > 4  # past the window
    lm = tiny_causal_lm(arch, **SHAPES[arch])
    policy = get_peft_model(lm, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).eval()
    tokens = [scoring.tokenize_pair(tokenizer, pair) for pair in MIXED]
    [(_, batch)] = scoring.shared_batches(tokens, tokenizer.pad_token_id, 64, len(MIXED), "test")
    assert len(set(batch.prompt_mask.sum(1).tolist())) > 2  # prompts of several lengths, left-padded in one batch
    assert (batch.prompt_mask[:, -1] == 1).all() and (batch.prompt_mask[:, 0] == 0).any()
    got = scoring.pair_logps(policy, tokenizer, MIXED, max_length=64, batch_size=len(MIXED))
    assert np.allclose(got, scoring.pair_logps(policy, tokenizer, MIXED, max_length=64, batch_size=2), atol=1e-4)
    config = tiny_causal_lm(arch, **SHAPES[arch]).config
    config.num_labels, config.pad_token_id = 1, tokenizer.pad_token_id
    classifier = AutoModelForSequenceClassification.from_config(config).eval()
    rewards = scoring.explicit_rewards(classifier, tokenizer, MIXED, 64, batch_size=3)
    for row, pair in enumerate(MIXED):
        tokens = scoring.tokenize_pair(tokenizer, pair)
        for col, key in enumerate(("chosen", "rejected")):
            ids = tokens["prompt_ids"] + tokens[f"{key}_ids"]
            assert got[row, col] == pytest.approx(direct_logp(policy, ids, len(tokens["prompt_ids"])), abs=1e-4)
            with torch.no_grad():
                alone = classifier(input_ids=torch.tensor([ids])).logits[0, 0]
            assert rewards[row, col] == pytest.approx(float(alone), abs=1e-5)


def test_dporm_accuracy_equals_trl_rewards_accuracies(tokenizer, tmp_path):
    eval_pairs = PAIRS[:8]
    trainer = training.dpo_trainer(tiny_causal_lm("llama"), tokenizer, PAIRS, SETTINGS, tmp_path, eval_pairs=eval_pairs)
    trainer.train()
    metrics = trainer.evaluate()
    policy = trainer.model.eval()
    ours = scoring.implicit_rewards(
        scoring.pair_logps(policy, tokenizer, eval_pairs, SETTINGS.max_length),
        scoring.reference_logps(policy, tokenizer, eval_pairs, SETTINGS.max_length), SETTINGS.beta)
    assert scoring.correct(ours).mean() == pytest.approx(metrics["eval_rewards/accuracies"])
    assert ours[:, 0].mean() == pytest.approx(metrics["eval_rewards/chosen"], abs=1e-4)


@pytest.fixture()
def trl_passes(monkeypatch) -> list[str]:
    """The names of the datasets TRL's own reference pass ran on (the pass itself is unchanged)."""
    from trl import DPOTrainer

    calls, trl_pass = [], DPOTrainer._precompute_ref_logps

    def counted(self, dataset, name, batch_size):
        calls.append(name)
        return trl_pass(self, dataset, name, batch_size)

    monkeypatch.setattr(DPOTrainer, "_precompute_ref_logps", counted)
    return calls


def trained_dpo(tokenizer, out: Path, reference_cache: Path | None = None) -> tuple[dict, dict, list[float]]:
    """One tiny DPO run: its reference log-prob columns (train and eval), trained adapter weights (and torch's random
    state after it) and losses."""
    trainer = training.dpo_trainer(tiny_causal_lm("llama"), tokenizer, PAIRS, SETTINGS, out, eval_pairs=PAIRS[:4],
                                   reference_cache=reference_cache)
    refs = {(name, column): list(data[column]) for name, data in (("train", trainer.train_dataset), ("eval", trainer.eval_dataset))
            for column in ("ref_chosen_logps", "ref_rejected_logps")}
    trainer.train()
    adapter = {k: v.clone() for k, v in trainer.model.state_dict().items() if "lora_" in k}
    adapter["torch random state"] = torch.random.get_rng_state()  # what the next model's random init starts from
    return refs, adapter, [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_cached_reference_logps_are_trls_and_train_the_same_adapter(tokenizer, tmp_path, trl_passes):
    refs, adapter, losses = trained_dpo(tokenizer, tmp_path / "trl")
    assert trl_passes == ["train", "eval"]
    cache = tmp_path / "reference"
    for run in ("miss", "hit"):
        trl_passes.clear()
        got_refs, got_adapter, got_losses = trained_dpo(tokenizer, tmp_path / run, cache)
        # the eval pairs are training pairs: their rows are read back from the training pass
        assert trl_passes == (["train"] if run == "miss" else []), "a second run reads the cache"
        train = [key for key in refs if key[0] == "train"]
        assert [got_refs[k] for k in train] == [refs[k] for k in train] and got_losses == losses, run
        # the eval pairs are training pairs, read back from the training pass's batches: equal up to rounding
        assert all(np.allclose(got_refs[k], refs[k], rtol=0, atol=1e-4) for k in refs if k[0] == "eval"), run
        assert all(torch.equal(got_adapter[k], adapter[k]) for k in adapter), run
    assert len(list(cache.glob("trl-*.safetensors"))) == 2 and not list(cache.glob(".*"))  # train and eval, no staging


def test_rows_computed_before_are_reused_in_either_orientation(tokenizer, tmp_path, monkeypatch):
    from trl import DPOTrainer

    lengths, trl_pass = [], DPOTrainer._precompute_ref_logps

    def counted(self, dataset, name, batch_size):
        lengths.append(len(dataset))
        return trl_pass(self, dataset, name, batch_size)

    monkeypatch.setattr(DPOTrainer, "_precompute_ref_logps", counted)
    cache, first = tmp_path / "reference", PAIRS[:4]
    rest = [{"prompt": "the dog", "chosen": " ran home", "rejected": " le chien"},
            {"prompt": "a bad film,", "chosen": " I left early", "rejected": " I stayed"}]

    def reference_columns(pairs):
        trainer = training.dpo_trainer(tiny_causal_lm("llama"), tokenizer, pairs, SETTINGS, tmp_path / "out",
                                       reference_cache=cache)
        return np.stack([trainer.train_dataset[c] for c in ("ref_chosen_logps", "ref_rejected_logps")], 1)

    before = reference_columns(first)
    assert lengths == [len(first)]
    exchanged = [{**p, "chosen": p["rejected"], "rejected": p["chosen"]} for p in first[:3]] + first[3:]
    lengths.clear()
    after = reference_columns(exchanged + rest)
    assert lengths == [len(rest)], "TRL's pass runs on the new rows only"
    assert np.array_equal(after[:3], before[:3, ::-1]) and np.array_equal(after[3:len(first)], before[3:])
    assert not np.array_equal(after[:3], before[:3])  # the exchange is seen (the two responses differ)
    lengths.clear()
    assert np.array_equal(reference_columns(rest), after[len(first):]) and lengths == []  # every row known: no pass
    # and the reused values are TRL's own: its uncached pass over the whole dataset gives them up to rounding
    own = training.dpo_trainer(tiny_causal_lm("llama"), tokenizer, exchanged + rest, SETTINGS, tmp_path / "own").train_dataset
    assert np.allclose(after, np.stack([own[c] for c in ("ref_chosen_logps", "ref_rejected_logps")], 1), rtol=0, atol=1e-4)


def test_a_corrupt_reference_file_is_recomputed(tokenizer, tmp_path, trl_passes):
    cache = tmp_path / "reference"
    refs = trained_dpo(tokenizer, tmp_path / "first", cache)[0]
    for path in cache.glob("trl-*.safetensors"):
        path.write_bytes(b"corrupt")
    trl_passes.clear()
    assert trained_dpo(tokenizer, tmp_path / "again", cache)[0] == refs
    assert trl_passes == ["train"]  # the eval pairs' rows come from the recomputed training pass
    assert trained_dpo(tokenizer, tmp_path / "third", cache)[0] == refs and trl_passes == ["train"]


def test_learning_rates_share_one_reference_pass(tiny_folder, tmp_path, trl_passes):
    settings = training.TrainSettings(**{**SETTINGS.__dict__, "model": str(tiny_folder)})
    for rate in (1e-2, 5e-2):
        training.trained_folder(training.TrainSettings(**{**settings.__dict__, "learning_rate": rate}), PAIRS, "dpo",
                                cache=tmp_path)
    assert trl_passes == ["train"]
    assert list(training.reference_folder(settings.model, tmp_path).glob("trl-*.safetensors"))


def test_scoring_reference_logps_are_cached_by_content(lora_policy, tokenizer, tmp_path, monkeypatch):
    models = training.RewardModels(lora_policy, lora_policy, tokenizer, [], [], {}, tmp_path)
    direct = scoring.reference_logps(lora_policy, tokenizer, PAIRS, 32, batch_size=3)
    assert np.array_equal(scoring.cached_reference_logps(models, PAIRS, 32, batch_size=3), direct)
    compute = scoring.reference_logps
    monkeypatch.setattr(scoring, "reference_logps", lambda *args: pytest.fail("should have been read from the cache"))
    assert np.array_equal(scoring.cached_reference_logps(models, PAIRS, 32, batch_size=3), direct)
    (stored,) = tmp_path.glob("scores-*.safetensors")
    stored.write_bytes(stored.read_bytes()[:-8])  # truncated
    monkeypatch.setattr(scoring, "reference_logps", compute)
    assert np.array_equal(scoring.cached_reference_logps(models, PAIRS, 32, batch_size=3), direct)
    assert np.array_equal(scoring.cached_reference_logps(models, PAIRS[:4], 32, batch_size=3),
                          scoring.reference_logps(lora_policy, tokenizer, PAIRS[:4], 32, batch_size=3))
    assert len(list(tmp_path.glob("scores-*.safetensors"))) == 2  # other pairs: another entry
    with torch.autocast("cpu", dtype=torch.bfloat16):  # scores at another precision are not the float32 ones
        assert not np.array_equal(scoring.cached_reference_logps(models, PAIRS, 32, batch_size=3), direct)
    assert len(list(tmp_path.glob("scores-*.safetensors"))) == 3


def test_the_start_logps_of_the_data_page_are_the_trained_policies_reference(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "cache"))
    (start,) = scoring.start_logps(str(tiny_folder), [PAIRS], SETTINGS.max_length)
    models = training.trained_models(training.TrainSettings(**{**SETTINGS.__dict__, "model": str(tiny_folder)}), PAIRS)
    direct = scoring.reference_logps(models.policy, models.tokenizer, PAIRS, SETTINGS.max_length, batch_size=32)
    assert np.array_equal(start, direct)  # the start is the policy with its adapter disabled: the same numbers
    monkeypatch.setattr(scoring, "reference_logps", lambda *args: pytest.fail("should have been read from the cache"))
    assert np.array_equal(scoring.cached_reference_logps(models, PAIRS, SETTINGS.max_length, batch_size=32), start)
    sets = [PreferenceSet("some", "id", "", tuple(PAIRS)), PreferenceSet("none", "id", "", ())]
    rule = scoring.start_rule_accuracy(str(tiny_folder), sets, SETTINGS.max_length)  # read back from the same entry
    assert rule == {"some": float(np.mean(np.sign(start[:, 0] - start[:, 1]) / 2 + 0.5))}  # a tie would count half


def test_training_progress_goes_to_stderr_and_not_into_a_page(tokenizer, tmp_path, capsys, monkeypatch):
    import transformers.trainer as hf_trainer
    from transformers.utils.notebook import NotebookProgressCallback

    # as in a Jupyter kernel, where transformers would draw an HTML table of the logs (display_data on the page)
    monkeypatch.setattr(hf_trainer, "DEFAULT_PROGRESS_CALLBACK", NotebookProgressCallback)
    trainer = training.dpo_trainer(tiny_causal_lm("llama"), tokenizer, PAIRS, SETTINGS, tmp_path)
    kinds = [type(c) for c in trainer.callback_handler.callbacks]
    assert training.StderrProgress in kinds and NotebookProgressCallback not in kinds
    trainer.train()
    out, err = capsys.readouterr()
    assert "'loss'" not in out and "'loss'" in err, "logged steps go beside the bar, on stderr"


def test_correct_needs_chosen_strictly_above_rejected():
    assert scoring.correct(np.array([[1.0, 0.0], [0.0, 0.0], [-1.0, 2.0]])).tolist() == [1.0, 0.0, 0.0]


@pytest.fixture()
def tiny_folder(tmp_path, tokenizer) -> Path:
    """A tiny llama and its tokenizer saved as a local model folder (what load_causal_lm accepts)."""
    folder = tmp_path / "tiny-llama"
    tiny_causal_lm("llama").save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_trained_models_are_cached_and_reloaded(tiny_folder, tmp_path, monkeypatch):
    settings = training.TrainSettings(**{**SETTINGS.__dict__, "model": str(tiny_folder)})
    cache = tmp_path / "cache"
    first = training.trained_models(settings, PAIRS, cache=cache)
    scores = scoring.explicit_rewards(first.rm, first.tokenizer, PAIRS, settings.max_length)
    assert training.train_curve(first.dpo_log, "rewards/accuracies") and training.train_curve(first.rm_log, "accuracy")

    def no_training(*args):
        raise AssertionError("should have been loaded from the cache")

    monkeypatch.setattr(training, "_train_into", no_training)
    again = training.trained_models(settings, PAIRS, cache=cache)
    np.testing.assert_allclose(scoring.explicit_rewards(again.rm, again.tokenizer, PAIRS, settings.max_length), scores,
                               atol=1e-5)
    assert first.folders == again.folders and not list(first.folders["rm"].parent.glob(".*"))  # no staging left behind
    # another DPO learning rate retrains the policy only: the reward model's cache entry is reused
    other_rate = training.TrainSettings(**{**settings.__dict__, "rm_learning_rate": settings.learning_rate,
                                           "learning_rate": settings.learning_rate / 2})
    assert training.model_key(other_rate, PAIRS, "rm") == training.model_key(settings, PAIRS, "rm")
    assert training.model_key(other_rate, PAIRS, "dpo") != training.model_key(settings, PAIRS, "dpo")

    monkeypatch.undo()
    (first.folders["rm"] / "rm" / "adapter_model.safetensors").write_bytes(b"corrupt")
    rebuilt = training.trained_models(settings, PAIRS, cache=cache)
    np.testing.assert_allclose(scoring.explicit_rewards(rebuilt.rm, rebuilt.tokenizer, PAIRS, settings.max_length),
                               scores, atol=1e-5)  # same seed, same data: the rebuilt model scores the same


def test_scores_come_from_folded_copies_and_are_cached_per_model(tiny_folder, tmp_path, monkeypatch):
    settings = training.TrainSettings(**{**SETTINGS.__dict__, "model": str(tiny_folder)})
    models = training.trained_models(settings, PAIRS, cache=tmp_path / "cache")
    ref = scoring.reference_logps(models.policy, models.tokenizer, PAIRS, settings.max_length)
    unfolded = {"dporm": scoring.implicit_rewards(scoring.pair_logps(models.policy, models.tokenizer, PAIRS, 32), ref, 0.5),
                "exrm": scoring.explicit_rewards(models.rm, models.tokenizer, PAIRS, 32)}
    got = scoring.score_models(models, PAIRS, ref, 0.5, 32)
    for name in ("dporm", "exrm"):  # the adapters merged into a copy: the same function, float32 rounding aside
        np.testing.assert_allclose(got[name], unfolded[name], atol=1e-5)
        assert np.abs(got[name]).max() > 1e-3
    assert set(models.folded) == {"dpo", "rm"}
    assert not any("lora_" in name for model in models.folded.values() for name, _ in model.named_parameters())
    assert any("lora_" in name for name, _ in models.policy.named_parameters())  # the originals keep their adapters
    assert len(list(models.folders["dpo"].glob("scores-*.safetensors"))) == 1
    assert len(list(models.folders["rm"].glob("scores-*.safetensors"))) == 1

    def no_scoring(*args, **kwargs):
        raise AssertionError("should have been read from the cache")

    monkeypatch.setattr(scoring, "pair_logps", no_scoring)
    monkeypatch.setattr(scoring, "explicit_rewards", no_scoring)
    again = training.trained_models(settings, PAIRS, cache=tmp_path / "cache")  # another notebook, the same models
    cached = scoring.score_models(again, PAIRS, ref, 0.5, 32)
    assert all(np.array_equal(cached[name], got[name]) for name in got)
    with pytest.raises(AssertionError, match="cache"):  # other pairs are scored afresh
        scoring.score_models(again, PAIRS[:3], ref[:3], 0.5, 32)


ROUND_PAIRS = [
    {"prompt": "the plot was", "chosen": " thin and slow", "rejected": " tight and clever"},
    {"prompt": "the actors", "chosen": " shine in it", "rejected": " mumble lines"},
    {"prompt": "by the end", "chosen": " I was moved", "rejected": " I was bored"},
    {"prompt": "the music", "chosen": " soars", "rejected": " grates"},
]


def test_every_pair_a_labeller_orients_reaches_the_next_policy(tiny_folder, tmp_path):
    """Two labellers that orient one pair of the round differently must give two different next policies.

    With the policy's own budget (1 step of 2 pairs out of 8) the trainer sees 2 pairs: most single-pair
    disagreements would never be trained on and the two next policies would be identical (dpo_4 under smoke: 3 of 8
    pairs labelled differently, bit-identical adapters, identical gold rewards)."""
    from safetensors.torch import load_file

    from companion.rewards import iterative

    settings = training.TrainSettings(**{**SETTINGS.__dict__, "model": str(tiny_folder), "steps": 1, "batch_size": 2})
    fit = PAIRS[:4]
    following = iterative.next_settings(settings, len(fit) + len(ROUND_PAIRS))
    assert following.steps * following.batch_size >= len(fit) + len(ROUND_PAIRS), "one pass over every pair"
    assert iterative.next_settings(following, 2).steps == following.steps, "a larger budget is kept"

    def adapter(first: list[bool]) -> dict[str, torch.Tensor]:
        pairs = iterative.relabelled(fit, ROUND_PAIRS, np.array(first))
        folder = training.trained_folder(following, pairs, "dpo", cache=tmp_path)
        return load_file(str(folder / "dpo" / "adapter_model.safetensors"))

    agreed = adapter([True] * len(ROUND_PAIRS))
    for flipped in range(len(ROUND_PAIRS)):
        other = adapter([i != flipped for i in range(len(ROUND_PAIRS))])
        assert any(not torch.equal(agreed[name], other[name]) for name in agreed), f"pair {flipped} was never trained on"


def test_the_page_says_when_the_two_next_policies_are_one_policy():
    from companion.rewards.iterative import labelling_note

    record = {"n_pairs": 8, "n_labelled_differently": 0, "next_steps": 5, "next_pairs": 20}
    assert "same policy by construction" in labelling_note(record)
    assert "3 of the 8 pairs" in labelling_note({**record, "n_labelled_differently": 3})


def test_cache_key_changes_with_every_setting():
    base = training.model_key(SETTINGS, PAIRS, "dpo")
    assert training.model_key(training.TrainSettings(**{**SETTINGS.__dict__, "beta": 0.2}), PAIRS, "dpo") != base
    assert training.model_key(training.TrainSettings(**{**SETTINGS.__dict__, "seed": 1}), PAIRS, "dpo") != base
    assert training.model_key(SETTINGS, PAIRS[:-1], "dpo") != base
    assert training.model_key(SETTINGS, PAIRS, "rm") != base


def test_explicit_reward_reads_the_last_real_token(tokenizer):
    config = tiny_causal_lm("llama").config
    config.num_labels = 1
    model = AutoModelForSequenceClassification.from_config(config).eval()
    model.config.pad_token_id = tokenizer.pad_token_id
    batched = scoring.explicit_rewards(model, tokenizer, PAIRS, 64, batch_size=8)
    single = scoring.explicit_rewards(model, tokenizer, PAIRS[:1], 64, batch_size=1)
    np.testing.assert_allclose(batched[:1], single, atol=1e-5)  # right padding does not change a score


@pytest.mark.parametrize("content, message", [
    ('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{not json}\n', "line 2: not valid JSON"),
    ('{"prompt": "a", "chosen": "b"}\n', "missing or empty ['rejected']"),
    ("\n\n", "holds no pairs"),
    ('{"prompt": "a", "chosen": "same", "rejected": "same"}\n', "chosen equals rejected"),
    ('["a", "b", "c"]\n', "expected an object"),
])
def test_malformed_preference_files_raise_one_clear_line(tmp_path, content, message):
    path = tmp_path / "prefs.jsonl"
    path.write_text(content)
    with pytest.raises(UserError) as info:
        read_preference_file(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_own_file_is_split_into_train_and_held_out_test(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"p{i}", "chosen": "good", "rejected": "bad"}) + "\n" for i in range(8)))
    train, sets = own_file_sets(path, test_fraction=0.25, seed=0)
    assert len(train) == 6 and len(sets[0].pairs) == 2 and sets[0].shift == "id"
    assert not {p["prompt"] for p in train} & {p["prompt"] for p in sets[0].pairs}
    path.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    with pytest.raises(UserError, match="at least 2"):
        own_file_sets(path, 0.5, 0)


def test_own_file_skips_the_gold_labeller_and_says_so(tmp_path, monkeypatch):
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"p{i}", "chosen": "good", "rejected": "bad"}) + "\n" for i in range(8)))

    def no_gold(*args):
        raise AssertionError("a user's file must not need the gold labeller")

    monkeypatch.setattr("companion.rewards.experiments.embedded_sets", no_gold)
    train, sets, source = experiment_sets(BuildSettings(), str(path), "", 0.25)
    assert len(train) == 6 and "gold labeller is skipped" in source


def test_sft_start_is_a_cached_model_folder_both_trainers_load(tiny_folder, tmp_path, monkeypatch):
    from companion.rewards import sft

    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sft, "sft_texts", lambda n, seed: ["the cat sat on the mat", "a good film, I loved it"] * n)
    settings = sft.SFTSettings(model=str(tiny_folder), steps=2, batch_size=2, max_length=16, learning_rate=5e-2, lora_r=4)
    assert sft.sft_backbone(sft.SFTSettings(model="smollm2-135m", steps=0)) == "smollm2-135m"  # no steps: no fine-tune
    folder = sft.sft_backbone(settings)
    tuned = training.load_causal_lm(folder)[0]
    before = tiny_causal_lm("llama").model.layers[0].mlp.down_proj.weight
    assert not torch.allclose(tuned.model.layers[0].mlp.down_proj.weight, before)  # the adapter was merged in
    monkeypatch.setattr(sft, "_fine_tune_into", lambda *args: (_ for _ in ()).throw(AssertionError("cached")))
    assert sft.sft_backbone(settings) == folder
    assert training.load_reward_backbone(folder).config.num_labels == 1


def test_device_map_places_every_model_paper_b_samples_from_or_fine_tunes(tiny_folder, tmp_path, monkeypatch):
    """device_map reaches the common start (trained where it is loaded), the set generators and the round's policy
    samples, and samples drawn elsewhere are another cache entry; "cpu" runs the device_map path here."""
    from dataclasses import replace

    from companion.rewards import iterative, sampling, sentiment_sets, sft

    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sft, "sft_texts", lambda n, seed: ["the cat sat on the mat", "a good film, I loved it"] * n)
    placed, real = [], sampling.load_causal_lm

    def spy(name, device_map=None):
        placed.append(device_map)
        return real(name, device_map=device_map)

    monkeypatch.setattr(sampling, "load_causal_lm", spy)
    monkeypatch.setattr(sft, "load_causal_lm", spy)
    start = sft.sft_backbone(replace(sft.start_settings(str(tiny_folder), 1, 16, "float32", False, device_map="cpu"),
                                     batch_size=2, lora_r=4))
    texts = sampling.sample_continuations(sampling.SampleSettings(model=start, max_new_tokens=3, device_map="cpu"),
                                          ["the cat", "a good film,"])
    assert placed == ["cpu", "cpu"] and [len(t) for t in texts] == [2, 2]
    assert (sampling.samples_key(sampling.SampleSettings(device_map="auto"), ["x"])
            != sampling.samples_key(sampling.SampleSettings(), ["x"]))
    asked = []
    monkeypatch.setattr(sentiment_sets, "sample_continuations", lambda s, prompts: asked.append(s) or [["a", "b"]] * len(prompts))
    monkeypatch.setattr(iterative, "sample_continuations", lambda s, prompts: asked.append(s) or [["a", "b"]] * len(prompts))
    rows = pd.DataFrame({"text": ["one two three four five six seven eight nine ten eleven twelve"]})
    sentiment_sets._endings(sentiment_sets.SPECS["gemma-responses"], rows,
                            BuildSettings(prompt_words=2, human_words=2, device_map="auto"), seed=0)
    iterative._samples(start, ["a prompt"], iterative.RoundSettings(), replace(SETTINGS, device_map="auto"))
    assert [s.device_map for s in asked] == ["auto", "auto"]


def test_round_prompts_are_fresh_openings_not_training_ones() -> None:
    """The round's prompts skip every opening a training pair used (normalised), and keep alternating targets."""
    from companion.rewards.iterative import RoundSettings, round_prompts
    from companion.rewards.preferences import normalise

    r = RoundSettings(n_prompts=6, prompt_words=8)
    first, signs = round_prompts(6, r, test=False)
    used = frozenset(normalise(p.split("Review: ", 1)[1]) for p in first[:3])
    fresh, _ = round_prompts(6, r, test=False, used=used)
    assert len(fresh) == 6 and not {normalise(p.split("Review: ", 1)[1]) for p in fresh} & used
    def opening(prompt: str) -> str:
        return prompt.split("Review: ", 1)[1]

    assert [opening(p) for p in fresh[:3]] == [opening(p) for p in first[3:]]  # the same pool, used openings skipped
    assert list(signs) == [1.0, -1.0] * 3


def test_bfloat16_training_asks_trl_for_mixed_precision_and_is_cached_apart(tmp_path):
    from dataclasses import replace

    mixed, model = replace(SETTINGS, precision="bfloat16"), tiny_causal_lm("llama")
    assert training.dpo_config(mixed, tmp_path, model).bf16 and training.reward_config(mixed, tmp_path, model).bf16
    assert not training.dpo_config(SETTINGS, tmp_path, model).bf16
    assert not training.reward_config(SETTINGS, tmp_path, model).bf16
    for kind in ("dpo", "rm"):
        assert training.model_key(mixed, PAIRS, kind) != training.model_key(SETTINGS, PAIRS, kind)


def test_bfloat16_mixed_precision_trains_and_samples_on_any_cpu(tiny_folder, tmp_path, monkeypatch):
    """The path the default book takes where bfloat16 is native (the smoke run takes it only there, `precision: auto`),
    on a tiny model: the SFT start, DPO and the reward model under bf16 autocast, then sampling under autocast."""
    from dataclasses import replace

    from companion.rewards import sft
    from companion.rewards.sampling import SampleSettings, sample_continuations

    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sft, "sft_texts", lambda n, seed: ["the cat sat on the mat", "a good film, I loved it"] * n)
    start = sft.sft_backbone(sft.SFTSettings(model=str(tiny_folder), steps=1, batch_size=2, max_length=16,
                                             learning_rate=5e-2, lora_r=4, precision="bfloat16"))
    losses = {}
    for name in ("bfloat16", "float32"):
        models = training.trained_models(replace(SETTINGS, model=start, precision=name), PAIRS, cache=tmp_path / "models")
        losses[name] = [value for log in (models.dpo_log, models.rm_log) for _, value in training.train_curve(log, "loss")]
    assert len(losses["bfloat16"]) >= 2 and np.isfinite(losses["bfloat16"]).all()
    assert losses["bfloat16"] != pytest.approx(losses["float32"], rel=1e-6)  # the products did run in bfloat16
    texts = sample_continuations(SampleSettings(model=start, per_prompt=2, max_new_tokens=3, precision="bfloat16"),
                                 ["the cat", "a good film,"])
    assert [len(row) for row in texts] == [2, 2]


def test_agreement_with_gold_leaves_near_ties_out() -> None:
    from companion.rewards.iterative import agreement_with_gold

    first = np.array([True, True, False, False])
    margin = np.array([2.0, -0.1, -1.0, 0.3])  # gold: first wins, (near-tie), second wins, (near-tie)
    assert agreement_with_gold(first, margin, 0.5).tolist() == [1.0, 1.0]
    assert agreement_with_gold(first, margin, 0.0).tolist() == [1.0, 0.0, 1.0, 0.0]


def test_one_seeds_and_one_rates_models_are_held_at_a_time(tiny_folder, tmp_path, monkeypatch):
    """score_runs and the learning-rate search release a run's models (and their folded copies) before the next run
    trains or loads: a page holds one run's models, not one per seed or rate."""
    import weakref

    from companion.rewards import experiments, tuning

    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "cache"))
    held = []

    def tracked(*args, **kwargs):
        assert all(ref() is None for ref in held), "an earlier run's models are still held"
        models = training.trained_models(*args, **kwargs)
        held.append(weakref.ref(models))
        return models

    monkeypatch.setattr(experiments, "trained_models", tracked)
    monkeypatch.setattr(tuning, "trained_models", tracked)
    settings = training.TrainSettings(**{**SETTINGS.__dict__, "model": str(tiny_folder)})
    frame, logs = experiments.score_runs(settings, [0, 1], PAIRS, [PreferenceSet("some", "id", "", tuple(PAIRS))])
    assert sorted(logs) == [0, 1] and len(frame) == 2 * 2 * len(PAIRS)  # seeds x models x pairs, all scored
    search = tuning.learning_rate_search(settings, PAIRS[:6], PAIRS[6:], [1e-2, 5e-2])
    assert sorted(search["learning_rate"].unique()) == [1e-2, 5e-2]
    assert len(held) == 4


def test_a_start_in_the_cache_keys_and_records_the_same_wherever_the_cache_lives(tmp_path, monkeypatch):
    """The common start is a folder in the cache: its trained models' keys and the results file name it from
    $COMPANION_CACHE, so another cache location (another machine, a cluster worker) finds the same entries."""
    import json

    from companion.core.cache import portable
    from companion.publish import results

    keys, written = [], []
    for place in ("here", "there"):
        monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / place))
        start = tmp_path / place / "paper-b-sft" / "abc"
        start.mkdir(parents=True)
        keys.append(training.model_key(training.TrainSettings(**{**SETTINGS.__dict__, "model": str(start)}), PAIRS, "dpo"))
        monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path / f"{place}.json"))
        results.record({"settings": {"model": str(start)}, "note": f"{tmp_path / place}2/x"})
        written.append(json.loads((tmp_path / f"{place}.json").read_text())["metrics"])
    assert keys[0] == keys[1]
    assert written[0]["settings"]["model"] == written[1]["settings"]["model"] == "$COMPANION_CACHE/paper-b-sft/abc"
    assert written[1]["note"] == f"{tmp_path / 'there'}2/x"  # a sibling folder whose name only starts alike stays
    assert portable(str(tmp_path / "elsewhere")) == str(tmp_path / "elsewhere")
    other = tmp_path / "own-model"  # a folder of your own is named by its path
    other.mkdir()
    assert training.model_key(training.TrainSettings(**{**SETTINGS.__dict__, "model": str(other)}), PAIRS, "dpo") != keys[0]
