"""Nucleus filtering without a full sort keeps exactly the tokens transformers' top-p warper keeps."""

import torch
from transformers import TopPLogitsWarper

from companion.rewards.sampling import NucleusFilter


def test_same_tokens_as_the_warper_on_peaked_and_flat_rows() -> None:
    """Peaked rows (the cut among the candidates) and flat rows (the fall-back) both match the warper exactly."""
    torch.manual_seed(0)
    ids = torch.zeros((4, 1), dtype=torch.long)
    for scale in (0.5, 3.0, 8.0):  # flat to peaked distributions over a Gemma-sized vocabulary
        scores = torch.randn(4, 262_144) * scale
        for top_p in (0.5, 0.9, 0.95):
            expected = TopPLogitsWarper(top_p)(ids, scores.clone())
            found = NucleusFilter(top_p, candidates=256)(ids, scores.clone())
            assert torch.equal(torch.isinf(found), torch.isinf(expected)), (scale, top_p)
            assert torch.equal(found[~torch.isinf(found)], scores[~torch.isinf(expected)])


def test_the_partial_sort_path_is_taken_when_the_candidates_hold_top_p() -> None:
    """With a few dominant tokens the filter never calls the warper, and keeps the smallest set reaching top_p."""
    scores = torch.full((1, 1000), -20.0)
    scores[0, [3, 7, 11]] = torch.tensor([5.0, 4.0, 3.0])

    class Refuse(TopPLogitsWarper):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            raise AssertionError("fell back to the full sort")

    nucleus = NucleusFilter(0.8, candidates=8)
    nucleus.fallback = Refuse(0.8)
    kept = torch.nonzero(~torch.isinf(nucleus(torch.zeros((1, 1), dtype=torch.long), scores)))[:, 1].tolist()
    assert kept == [3, 7]  # p(3) = 0.67 < 0.8, so the second token is needed; 0.67 + 0.24 >= 0.8 ends the nucleus


def test_generate_samples_the_same_tokens_as_transformers_own_temperature_and_top_p() -> None:
    """Through generate() at a temperature other than 1: the same seed gives the same continuation token for token."""
    from tiny import tiny_causal_lm, tiny_tokenizer

    from companion.rewards.sampling import sampling_processors

    model, tokenizer = tiny_causal_lm("llama"), tiny_tokenizer()
    inputs = tokenizer(["the cat sat", "a good film"], return_tensors="pt", padding=True, padding_side="left")
    for temperature, top_p in ((1.4, 0.9), (0.7, 0.5), (1.0, 0.95)):
        torch.manual_seed(3)
        expected = model.generate(**inputs, do_sample=True, temperature=temperature, top_p=top_p, top_k=0,
                                  max_new_tokens=12, pad_token_id=tokenizer.pad_token_id)
        torch.manual_seed(3)
        found = model.generate(**inputs, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=12,
                               logits_processor=sampling_processors(temperature, top_p), pad_token_id=tokenizer.pad_token_id)
        assert torch.equal(found, expected), (temperature, top_p)
