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
