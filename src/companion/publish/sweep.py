"""The grid of a run: --sweep KEY=[v1,v2,...] expanded into one task per notebook and grid point."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from companion.core.errors import UserError
from companion.publish import profiles


@dataclass(frozen=True)
class Task:
    """One notebook execution: its notebook, resolved parameters, swept values and output name."""

    notebook: profiles.Notebook
    params: dict[str, Any] = field(hash=False)
    point: dict[str, Any] = field(hash=False)  # the swept values this notebook takes ({} outside a sweep)
    output: str = ""  # NAME, or NAME/KEY=VALUE,... for a grid point: the executed notebook and results file stem
    digest: str = ""  # the up-to-date hash of its inputs
    expected: float | None = None  # seconds its last recorded run took, for the progress estimate

    @property
    def name(self) -> str:
        """The notebook's name."""
        return self.notebook.name


def parse_sweeps(items: list[str]) -> dict[str, list[Any]]:
    """--sweep KEY=[v1,v2,...] items as {key: values}, each value parsed as YAML like --set."""
    sweeps: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = (part.strip() for part in item.partition("="))
        try:
            values = yaml.safe_load(raw) if sep else None
        except yaml.YAMLError:
            values = None
        if not key or not isinstance(values, list) or not values:
            raise UserError(f"--sweep '{item}' must look like KEY=[v1,v2,...], e.g. --sweep seed=[0,1]")
        if key in sweeps:
            raise UserError(f"--sweep {key} is given twice; put all its values in one list, e.g. --sweep {key}=[0,1,2]")
        sweeps[key] = values
    return sweeps


def grid(sweeps: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every point of the product of the sweeps ([{}] without sweeps)."""
    return [dict(zip(sweeps, values)) for values in itertools.product(*sweeps.values())]


def label(point: dict[str, Any]) -> str:
    """A file-safe name for a grid point, e.g. 'seed=0' or 'model_name=bigscience_bloom-7b1,seed=1'."""
    parts = []
    for key, value in point.items():
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        parts.append(f"{key}={re.sub(r'[^A-Za-z0-9._-]+', '_', text)}")
    return ",".join(parts)


def plan(notebooks: list[profiles.Notebook], selected: list[profiles.Notebook], profile: dict[str, Any],
         sets: dict[str, Any], sweeps: dict[str, list[Any]], profile_name: str) -> list[Task]:
    """One task per selected notebook and grid point of the sweep keys it declares, or of `variant` when a swept variant
    sets one of its parameters (a notebook without them runs once)."""
    clash = sorted(set(sets) & set(sweeps))
    if clash:
        raise UserError(f"'{clash[0]}' is both --set and --sweep; keep one (a sweep over one value is --set)")
    # a swept variant is a grid dimension of every notebook that some swept variant sets a parameter of
    varied = {nb.name for nb in selected for name in sweeps.get(profiles.VARIANT, []) if profiles.touches(profile, name, nb)}
    tasks: dict[str, Task] = {}
    for point in grid(sweeps):
        resolved = profiles.resolve(notebooks, selected, profile, {**sets, **point}, profile_name)
        for nb in selected:
            own = {key: value for key, value in point.items() if key in nb.defaults
                   or (key == profiles.VARIANT and nb.name in varied)}
            output = f"{nb.name}/{label(own)}" if own else nb.name
            previous = tasks.get(output)
            if previous is not None and previous.point != own:
                raise UserError(f"--sweep values {previous.point} and {own} give the same file name {output}; "
                                "make the values differ in letters or digits")
            tasks[output] = Task(nb, resolved[nb.name], own, output)
    return list(tasks.values())
