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



def _overwrite(hidden: torch.Tensor, index: torch.Tensor, values: torch.Tensor, positions: str,
               rows: slice) -> torch.Tensor:
    """A copy of hidden with the chosen features of the chosen batch rows set to fixed values, at every position or
    the last one."""
    hidden = hidden.clone()
    forced = values.to(device=hidden.device, dtype=hidden.dtype)
    if positions == "all":
        hidden[rows, ..., index] = forced
    else:
        hidden[rows, ..., -1, index] = forced
    return hidden



def _forcing_hook(index: torch.Tensor, values: torch.Tensor, positions: str, site: str, rows: slice) -> Callable:
    """A hook that overwrites the chosen input features (a pre-hook) or output features (a forward hook)."""

    def pre_hook(module: nn.Module, args: tuple) -> tuple:
        return (_overwrite(args[0], index, values, positions, rows), *args[1:])

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return _overwrite(output, index, values, positions, rows)

    return pre_hook if site == "input" else hook



@contextmanager
def intervene(model: nn.Module, experts: pd.DataFrame, value: str = "on_p50",
              positions: str = "all", rows: slice = slice(None)) -> Iterator[list[str]]:
    """Force the experts' units to a statistic of the table while the block runs; yields the hook names.

    Each unit sits at its table row's site: the input of its module (a pre-hook) or its output (a forward hook, as
    Kojima et al. force linear-layer outputs). positions='all' forces every token; 'last' only the last position of
    each forward call (with left padding, each sentence's last token; during generation, each new token). rows: the
    batch rows forced (all by default; nested blocks force different units in different rows of one batch). Hooks are
    removed on exit, also when the body raises.
    """
    if value not in STATISTICS:
        raise UserError(f"unknown statistic '{value}'; use one of {', '.join(STATISTICS)}")
    if positions not in ("all", "last"):
        raise UserError(f"unknown positions '{positions}'; use 'all' or 'last'")
    modules = dict(model.named_modules())
    experts = experts if "site" in experts.columns else experts.assign(site="input")
    with removing([]) as handles:
        for (name, site), group in experts.groupby(["module", "site"], sort=False):
            index = torch.tensor(group["index"].to_numpy(), dtype=torch.long)
            values = torch.tensor(group[value].to_numpy(), dtype=torch.float32)
            hook = _forcing_hook(index, values, positions, site, rows)
            handles.append(modules[name].register_forward_pre_hook(hook) if site == "input"
                           else modules[name].register_forward_hook(hook))
        yield [hook_name(name, site) for name, site in experts[["module", "site"]].drop_duplicates().itertuples(index=False)]
