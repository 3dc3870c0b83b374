"""Sampled decoding for both papers: temperature and top-p as transformers applies them, drawn without its costs.

transformers' top-p warper sorts the whole vocabulary at every step and its sampler draws one exponential variate per
vocabulary entry (262,144 for Gemma 3): on a CPU those two took more than half of a sampling run. Here a logits
processor draws each row's token itself, by inverting the cumulative distribution of the nucleus at one uniform
variate, and hands generate() a score row where that token alone is finite, so greedy decoding emits it.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedModel, TemperatureLogitsWarper, TopPLogitsWarper


def _invert(cdf: torch.Tensor, uniform: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """Per row, the first position whose cumulative mass exceeds uniform x the row's total (at most `last`, the last
    position with mass, should rounding put the target at the total)."""
    target = (uniform * cdf[:, -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).minimum(last)


DRAW_ROWS = 16  # rows drawn from their whole distribution at once: 24 bytes per row and vocabulary entry (100 MB for
                # 16 rows of Gemma 3's 262,144), not a batch's worth


def draw(scores: torch.Tensor, top_p: float, uniform: torch.Tensor, candidates: int = 1024) -> torch.Tensor:
    """One token per row of scores (logits), drawn from the top-p nucleus at the given uniform variates in [0, 1).

    The nucleus is the set transformers' TopPLogitsWarper keeps: a token is in it when the probability of the tokens
    ranked above it is below top_p. Rows whose `candidates` largest logits already hold top_p are drawn from those
    (a partial sort); the other rows (and top_p >= 1, the whole distribution) from the warper's own filtering.
    """
    tokens = torch.empty(scores.shape[0], dtype=torch.long, device=scores.device)
    covered = torch.zeros_like(tokens, dtype=torch.bool)
    if top_p < 1.0:  # the whole distribution (top_p 1) has no candidates' path
        top, index = scores.topk(min(candidates, scores.shape[-1]), dim=-1)
        probs = (top - scores.logsumexp(-1, keepdim=True)).exp()
        covered = probs.sum(-1) >= top_p
        p = probs[covered]
        kept = (p.cumsum(-1) - p) < top_p
        cdf = torch.where(kept, p, torch.zeros_like(p)).double().cumsum(-1)
        pick = _invert(cdf, uniform[covered], kept.sum(-1) - 1)
        tokens[covered] = index[covered].gather(-1, pick.unsqueeze(-1)).squeeze(-1)
    for rows in (~covered).nonzero().squeeze(-1).split(DRAW_ROWS):
        filtered = TopPLogitsWarper(top_p)(None, scores[rows]) if top_p < 1.0 else scores[rows]
        cdf = filtered.double().softmax(-1).cumsum(-1)
        tokens[rows] = _invert(cdf, uniform[rows], cdf.argmax(-1))  # argmax: the last token with mass
    return tokens


class NucleusSampler(LogitsProcessor):
    """Draws each row's next token from the top-p nucleus (seeded) and returns scores where only it is finite."""

    def __init__(self, top_p: float, seed: int, candidates: int = 1024, blocks: int = 1) -> None:
        """top_p in (0, 1] (1: the whole distribution); seed: the stream of uniform variates, one per row and step;
        blocks: the rows form this many equal blocks that share one stream (row i of every block draws the variates
        row i of a lone block would)."""
        self.top_p, self.candidates, self.blocks = top_p, candidates, blocks
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Scores that are -inf everywhere but at the drawn token of each row."""
        rows, rest = divmod(scores.shape[0], self.blocks)
        if rest:
            raise ValueError(f"{scores.shape[0]} rows do not split into {self.blocks} equal blocks")
        uniform = torch.rand(rows, generator=self.generator, dtype=torch.float64).repeat(self.blocks).to(scores.device)
        tokens = draw(scores, self.top_p, uniform, self.candidates)
        return torch.full_like(scores, -torch.inf).scatter(-1, tokens.unsqueeze(-1), 0.0)


def sampling_processors(temperature: float, top_p: float, seed: int, blocks: int = 1) -> LogitsProcessorList:
    """Temperature, then the nucleus draw: transformers' own order for do_sample=True, for generate(do_sample=False);
    blocks: equal blocks of rows that share the variates (NucleusSampler)."""
    first = [TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []
    return LogitsProcessorList([*first, NucleusSampler(top_p, seed, blocks=blocks)])


def sample(model: PreTrainedModel, inputs: dict[str, torch.Tensor], max_new_tokens: int, processors: LogitsProcessorList,
           pad_token_id: int | None) -> torch.Tensor:
    """Sampled continuations (prompt ids included, as generate() returns them) drawn by sampling_processors' list;
    successive calls with one list continue its stream of variates."""
    with torch.inference_mode():
        return model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=pad_token_id,
                              logits_processor=processors)
