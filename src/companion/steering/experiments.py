"""One set-up call for every steering page: the model, its tokenizer, the expertise table and the evaluation split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from companion.core.corpora import parallel_corpus
from companion.core.models import load_causal_lm, model_identity
from companion.steering.expertise import site_experts
from companion.steering.recording import SITES
from companion.steering.settings import SteeringSettings


@dataclass(frozen=True)
class Setup:
    """What every steering experiment needs: the settings, the model and tokenizer, and the expertise table."""

    settings: SteeringSettings
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    table: pd.DataFrame

    @property
    def languages(self) -> list[str]:
        """The study's languages, in the order given."""
        return list(self.settings.languages)

    def data(self, **extra: Any) -> list[dict[str, Any]]:
        """The data identities a results file records (corpus, languages, seed), plus extra entries."""
        s = self.settings
        found = [{"corpus": s.corpus, "parallel_path": s.parallel_path, "languages": self.languages, "seed": s.seed}]
        return found + ([extra] if extra else [])

    def models(self) -> list[dict[str, str]]:
        """The model identities a results file records."""
        return [model_identity(self.settings.model_name)]

    def summary(self) -> str:
        """One line: the model, its units and layers, the languages and the experts split's size."""
        s = self.settings
        return (f"{s.model_name}: {self.table['unit'].nunique():,} units in {self.table['layer'].nunique()} layers, "
                f"{len(s.languages)} languages, {s.n_find} sentences each")

    def expertise(self, seed: int | None = None, site: str | None = None) -> pd.DataFrame:
        """The expertise table found on the experts split drawn with seed, for units at site (cached on disk)."""
        s = self.settings
        seed, site = s.seed if seed is None else seed, site or s.unit_site
        if (seed, site) == (s.seed, s.unit_site):
            return self.table
        return _tables(self.model, self.tokenizer, s, seed)[site]

    def evaluation(self) -> pd.DataFrame:
        """n_eval aligned sentences per language from the 'eval' split (disjoint from the experts split)."""
        s = self.settings
        return parallel_corpus(self.languages, s.n_eval, "eval", s.seed, s.corpus, s.parallel_path)


def setup(settings: SteeringSettings) -> Setup:
    """Load the model (threads and dtype from the settings) and the expertise table (cached across pages)."""
    s = settings
    torch.set_num_threads(s.threads)
    model, tokenizer = load_causal_lm(s.model_name, getattr(torch, s.dtype), s.device_map)
    return Setup(s, model, tokenizer, _tables(model, tokenizer, s, s.seed)[s.unit_site])


def _tables(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, s: SteeringSettings,
            seed: int) -> dict[str, pd.DataFrame]:
    """The expertise tables of these settings for one experts-split seed at every unit site, by site.

    The settings' units at their site, the site's default units at the other; what is not cached yet is recorded in one
    pass, so the other site's table (the "what decides the result" table needs it) costs no pass of its own.
    """
    patterns = {site: s.units if site == s.unit_site else None for site in SITES}
    return site_experts(model, tokenizer, s.model_name, list(s.languages), s.n_find, seed, patterns, s.corpus,
                        s.parallel_path, s.pooling, s.batch_size, s.skip_special)
