"""Force units at inference: a context manager whose hooks overwrite the chosen units and are always removed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pandas as pd
import torch
from torch import nn

from companion.core.errors import UserError
from companion.core.forward import removing
from companion.steering.recording import hook_name

STATISTICS = ("on_p50", "off_p50", "off_mean", "all_p50")



def _forcing_hook(index: torch.Tensor, values: torch.Tensor, positions: str) -> Callable:
    """A pre-hook that overwrites the chosen input features with fixed values."""

    def hook(module: nn.Module, args: tuple) -> tuple:
        hidden = args[0].clone()
        forced = values.to(device=hidden.device, dtype=hidden.dtype)
        if positions == "all":
            hidden[..., index] = forced
        else:
            hidden[..., -1, index] = forced
        return (hidden, *args[1:])

    return hook



@contextmanager
def intervene(model: nn.Module, experts: pd.DataFrame, value: str = "on_p50",
              positions: str = "all") -> Iterator[list[str]]:
    """Force the experts' units to a statistic of the table while the block runs; yields the hook names.

    positions='all' forces every token; 'last' only the last position of each forward call (with left
    padding, each sentence's last token; during generation, each new token). Hooks are removed on exit,
    also when the body raises.
    """
    if value not in STATISTICS:
        raise UserError(f"unknown statistic '{value}'; use one of {', '.join(STATISTICS)}")
    if positions not in ("all", "last"):
        raise UserError(f"unknown positions '{positions}'; use 'all' or 'last'")
    modules = dict(model.named_modules())
    with removing([]) as handles:
        for name, group in experts.groupby("module", sort=False):
            index = torch.tensor(group["index"].to_numpy(), dtype=torch.long)
            values = torch.tensor(group[value].to_numpy(), dtype=torch.float32)
            handles.append(modules[name].register_forward_pre_hook(_forcing_hook(index, values, positions)))
        yield [hook_name(name) for name in experts["module"].unique()]
