"""companion.embedding: pooled block outputs (padding, truncation, interventions) and alignment metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import ARCHITECTURES, CORPUS, tiny_causal_lm, tiny_tokenizer

from companion.core import forward
from companion.core.errors import UserError
from companion.steering import alignment, embeddings, expertise, recording, retrieval


def tokenizer_padding(side: str):
    """A tiny tokenizer that pads on the given side."""
    tok = tiny_tokenizer()
    tok.padding_side = side
    return tok


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
@pytest.mark.parametrize("pooling", ["mean", "max", "last"])
def test_padding_left_or_right_equals_unpadded(arch, pooling):
    model = tiny_causal_lm(arch)
    alone = embeddings.sentence_embeddings(model, tokenizer_padding("right"), CORPUS, [0, 2], pooling, batch_size=1)
    for side in ("left", "right"):
        padded = embeddings.sentence_embeddings(model, tokenizer_padding(side), CORPUS, [0, 2], pooling, batch_size=8)
        np.testing.assert_allclose(padded, alone, atol=1e-5, err_msg=f"{arch} {side} {pooling}")


def test_no_block_beyond_the_deepest_and_no_lm_head():
    model = tiny_causal_lm("llama")
    calls = []
    handles = [model.model.layers[2].register_forward_hook(lambda *a: calls.append("block2")),
               model.lm_head.register_forward_hook(lambda *a: calls.append("head"))]
    out = embeddings.sentence_embeddings(model, tiny_tokenizer(), CORPUS, [1, 0])
    assert out.shape == (2, len(CORPUS), 32) and calls == []
    embeddings.sentence_embeddings(model, tiny_tokenizer(), CORPUS, [2])
    assert calls and "head" not in calls
    for handle in handles:
        handle.remove()
    with pytest.raises(UserError, match="layers"):
        embeddings.sentence_embeddings(model, tiny_tokenizer(), CORPUS, [3])


def test_intervention_moves_only_blocks_at_or_after_it():
    model, tok = tiny_causal_lm("qwen2"), tiny_tokenizer()
    acts, units = recording.record_activations(model, tok, CORPUS)
    table = expertise.expertise_table(acts, units, ["en", "fr", "de", "es", "ru", "en", "en", "en"])
    experts = table[(table["language"] == "fr") & (table["layer"] == 1)].head(5).assign(on_p50=5.0)
    before = embeddings.sentence_embeddings(model, tok, CORPUS, [0, 1, 2])
    after = embeddings.sentence_embeddings(model, tok, CORPUS, [0, 1, 2], experts=experts)
    np.testing.assert_array_equal(after[0], before[0])
    assert not np.allclose(after[1], before[1]) and not np.allclose(after[2], before[2])
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_retrieval_on_a_constructed_case():
    a = np.eye(4)
    b = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0.9, 0, 0.1, 0], [0, 0, 0, 1]], dtype=float)
    assert alignment.retrieval_hits(a, b, 1).tolist() == [True, True, True, True]
    assert alignment.retrieval_hits(b, a, 1).tolist() == [True, True, False, True]  # b2 is closest to a0
    assert alignment.retrieval_hits(b, a, 2).all()
    result = alignment.retrieval(a, b, n_boot=200)
    assert result["top1_ab"]["mean"] == 1.0 and result["top1_ba"]["mean"] == 0.75 and result["top5_ba"]["mean"] == 1.0
    assert result["top1_ba"]["low"] <= 0.75 <= result["top1_ba"]["high"]


def test_retrieval_of_a_permutation_counts_fixed_points_and_ties_count_against():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 16))
    perm = np.arange(50)
    perm[:20] = np.roll(perm[:20], 1)  # 20 rows moved, 30 in place
    assert alignment.retrieval_hits(a, a[perm], 1).mean() == pytest.approx(30 / 50)
    assert not alignment.retrieval_hits(np.ones((5, 3)), np.ones((5, 3)), 1).any()


def test_centering_removes_a_shared_offset():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(40, 8))
    b = a + rng.normal(scale=0.05, size=a.shape)
    a, b = a + 50 * rng.normal(size=8), b + 50 * rng.normal(size=8)  # a large offset per language
    assert alignment.retrieval_hits(a, b, 1, center=True).all()
    assert alignment.retrieval_hits(a, b, 1, center=False).mean() < 0.5


def test_cosine_and_separability_on_known_geometry():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(30, 8))
    cos = alignment.parallel_cosine(a, a)
    assert cos["parallel"] == pytest.approx(1.0) and abs(cos["non_parallel"]) < 0.2
    apart = {"x": np.eye(8)[0] + 0.01 * a, "y": np.eye(8)[1] + 0.01 * a}
    mixed = {"x": a[:15], "y": a[15:]}
    assert alignment.separability(apart) > 0.9 > 0.1 > alignment.separability(mixed)
    metrics = alignment.alignment(a, a + 0.01, n_boot=100)
    assert metrics["top1_ab"]["mean"] == 1.0 and set(metrics) >= {"cosine", "silhouette", "top5_ba"}


def test_ordered_pairs_all_or_through_the_pivot():
    assert retrieval.ordered_pairs(["en", "fr", "ru"]) == [("en", "fr"), ("en", "ru"), ("fr", "en"), ("fr", "ru"),
                                                          ("ru", "en"), ("ru", "fr")]
    assert retrieval.ordered_pairs(["en", "fr", "ru"], "pivot") == [("en", "fr"), ("en", "ru"), ("fr", "en"), ("ru", "en")]
    assert retrieval.ordered_pairs(["en", "fr", "ru"], "to-pivot") == [("fr", "en"), ("ru", "en")]
    assert retrieval.ordered_pairs(["en", "fr", "ru"], "from-pivot") == [("en", "fr"), ("en", "ru")]


def test_bos_state_does_not_reach_the_pool():
    """With special tokens skipped, changing the <bos> position's state leaves the pooled embedding unchanged."""
    rng = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 5, 4, generator=rng)
    ids = torch.tensor([[2, 10, 11, 12, 0], [2, 13, 14, 0, 0]])  # <bos>=2 first, <pad>=0 last
    mask = (ids != 0).long()
    keep = forward.content_mask(ids, mask, [0, 2, 3])
    assert keep.tolist() == [[0, 1, 1, 1, 0], [0, 1, 1, 0, 0]]
    moved = hidden.clone()
    moved[:, 0] += 100.0
    for how in ("mean", "max"):
        torch.testing.assert_close(forward.pool(moved, keep, how), forward.pool(hidden, keep, how))
        assert not torch.allclose(forward.pool(moved, mask, how), forward.pool(hidden, mask, how))


def test_sentence_embeddings_leave_bos_out_of_the_mean():
    model, tok = tiny_causal_lm("llama"), tokenizer_padding("right")
    text = "<bos>the cat sat on the mat"
    ids = tok(text, return_tensors="pt")["input_ids"]
    assert ids[0, 0] == tok.bos_token_id
    with torch.inference_mode():
        states = model(ids, output_hidden_states=True).hidden_states[2][0]  # the output of block 1
    without = embeddings.sentence_embeddings(model, tok, [text], [1])[0, 0]
    with_bos = embeddings.sentence_embeddings(model, tok, [text], [1], skip_special=False)[0, 0]
    np.testing.assert_allclose(without, states[1:].mean(0).numpy(), atol=1e-5)
    np.testing.assert_allclose(with_bos, states.mean(0).numpy(), atol=1e-5)
