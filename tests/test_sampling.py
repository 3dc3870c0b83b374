"""The nucleus draw samples exactly transformers' temperature + top-p distribution, without its full sort."""

import pytest
import torch
from transformers import TopPLogitsWarper

from companion.core.decoding import NucleusSampler, draw, sample, sampling_processors

GRID = 50_000  # uniform variates on a regular grid: the share drawn for each token is its probability +- 1 / GRID


def drawn_shares(scores: torch.Tensor, top_p: float, candidates: int) -> torch.Tensor:
    """How often each token of one row is drawn when the uniform variate runs over a fine regular grid."""
    uniform = (torch.arange(GRID, dtype=torch.float64) + 0.5) / GRID
    tokens = draw(scores.expand(GRID, -1), top_p, uniform, candidates)
    return torch.bincount(tokens, minlength=scores.shape[-1]).double() / GRID


def warper_probs(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """transformers' sampling distribution: the top-p warper's kept logits, softmaxed."""
    kept = TopPLogitsWarper(top_p)(None, scores.clone()) if top_p < 1.0 else scores
    return kept.double().softmax(-1)[0]


@pytest.mark.parametrize("scale", [0.5, 3.0, 8.0])  # flat (the warper's fall-back) to peaked (the candidates' path)
@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.95, 1.0])
def test_draws_follow_the_warper_distribution(scale: float, top_p: float) -> None:
    """Every token's share of draws is the probability transformers samples it with; none outside the nucleus."""
    torch.manual_seed(0)
    scores = torch.randn(1, 400) * scale
    expected = warper_probs(scores, top_p)
    found = drawn_shares(scores, top_p, candidates=16)
    assert torch.all(found[expected == 0] == 0), (scale, top_p)
    assert torch.allclose(found, expected, atol=2.0 / GRID), (scale, top_p, (found - expected).abs().max())


def test_the_candidates_path_keeps_the_smallest_set_reaching_top_p() -> None:
    """With three dominant tokens and top_p 0.8 the first two are drawn, in proportion, without the full-sort path."""
    scores = torch.full((1, 300), -20.0)
    scores[0, [3, 7, 11]] = torch.tensor([5.0, 4.0, 3.0])
    found = drawn_shares(scores, 0.8, candidates=8)
    p3, p7 = scores[0, [3, 7]].softmax(-1).tolist()  # p(3) = 0.67 < 0.8: the nucleus needs token 7 too
    assert torch.nonzero(found).flatten().tolist() == [3, 7]
    assert found[3].item() == pytest.approx(p3, abs=1e-4) and found[7].item() == pytest.approx(p7, abs=1e-4)


def test_rows_take_their_own_path() -> None:
    """A flat row (full-vocabulary path) beside a peaked one (candidates' path): each follows its own distribution."""
    torch.manual_seed(1)
    flat, peaked = torch.randn(1, 3_000) * 0.3, torch.randn(1, 3_000) * 10.0
    uniform = torch.tensor([0.25, 0.25], dtype=torch.float64)
    tokens = draw(torch.cat([flat, peaked]), 0.9, uniform, candidates=16)
    assert tokens.tolist() == [draw(flat, 0.9, uniform[:1], 16).item(), draw(peaked, 0.9, uniform[1:], 16).item()]


def test_the_whole_distribution_path_draws_any_number_of_rows_as_one_row_each() -> None:
    """More rows than DRAW_ROWS go through the full-vocabulary path a few at a time: each row's token is the one it
    draws alone."""
    torch.manual_seed(2)
    scores, uniform = torch.randn(40, 500) * 2.0, torch.rand(40, dtype=torch.float64)
    for top_p in (0.9, 1.0):
        together = draw(scores, top_p, uniform, candidates=4)  # 4 candidates never hold 0.9: every row takes that path
        alone = [draw(scores[i:i + 1], top_p, uniform[i:i + 1], candidates=4).item() for i in range(40)]
        assert together.tolist() == alone


def test_blocks_of_rows_share_the_variates_of_a_lone_block() -> None:
    """With blocks, row i of every block draws what row i draws when its block is sampled alone with the same seed."""
    torch.manual_seed(3)
    scores = torch.randn(6, 300)
    together, first, second = NucleusSampler(1.0, 7, blocks=2), NucleusSampler(1.0, 7), NucleusSampler(1.0, 7)
    for _ in range(3):  # successive steps continue each stream
        alone = torch.cat([first(None, scores[:3]), second(None, scores[3:])])
        assert torch.equal(together(None, scores).argmax(-1), alone.argmax(-1))
    shared = torch.zeros(2, 300)  # the same scores in both blocks: the same tokens
    assert torch.equal(*NucleusSampler(1.0, 7, blocks=2)(None, shared).argmax(-1).chunk(2))
    with pytest.raises(ValueError, match="do not split into 4 equal blocks"):
        NucleusSampler(1.0, 7, blocks=4)(None, scores)


def test_generate_is_reproducible_by_seed_and_greedy_for_a_tiny_nucleus() -> None:
    """Through generate(): one seed, one output; another seed, another; top_p near 0 is greedy decoding."""
    from tiny import tiny_causal_lm, tiny_tokenizer

    model, tokenizer = tiny_causal_lm("llama"), tiny_tokenizer()
    inputs = tokenizer(["the cat sat", "a good film"], return_tensors="pt", padding=True, padding_side="left")

    def run(temperature: float, top_p: float, seed: int) -> torch.Tensor:
        return sample(model, inputs, 12, sampling_processors(temperature, top_p, seed), tokenizer.pad_token_id)

    assert torch.equal(run(1.4, 0.9, 3), run(1.4, 0.9, 3))
    assert not torch.equal(run(1.4, 0.9, 3), run(1.4, 0.9, 4))
    greedy = model.generate(**inputs, do_sample=False, max_new_tokens=12, pad_token_id=tokenizer.pad_token_id)
    assert torch.equal(run(0.7, 1e-9, 5), greedy)


def test_temperature_comes_before_the_nucleus() -> None:
    """The processors temper the logits first, as generate(do_sample=True) does: the nucleus of the tempered scores."""
    scores = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    processors = sampling_processors(3.0, 0.5, 0)
    assert isinstance(processors[-1], NucleusSampler)
    tempered = processors[0](None, scores.clone())
    assert torch.equal(tempered, scores / 3.0)
    assert torch.equal(warper_probs(tempered, 0.5) > 0, torch.tensor([True, True, False, False]))


def test_two_notebooks_asking_for_the_same_samples_draw_them_once(tmp_path, monkeypatch) -> None:
    """The data page and the training page start together and both need the training pairs' endings: the second
    waits on the cache entry's lock and reads what the first wrote."""
    import threading
    import time

    from companion.rewards import sampling

    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path))
    calls = []

    def slow_generate(s, prompts):
        calls.append(len(prompts))
        time.sleep(0.5)  # long enough for the other caller to reach the entry while this one draws
        return [[f"{p} ending {i}" for i in range(s.per_prompt)] for p in prompts]

    monkeypatch.setattr(sampling, "_generate", slow_generate)
    settings, prompts, results = sampling.SampleSettings(), ["a film", "the plot"], []
    callers = [threading.Thread(target=lambda: results.append(sampling.sample_continuations(settings, prompts)))
               for _ in range(2)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert calls == [2] and results[0] == results[1] == [["a film ending 0", "a film ending 1"],
                                                         ["the plot ending 0", "the plot ending 1"]]
