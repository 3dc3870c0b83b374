"""The results file each notebook writes: metrics and parameters here, provenance added by the runner."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from companion.core.cache import portable
from companion.core.files import staged_file

RESULTS_ENV = "COMPANION_RESULTS"


def to_jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays, tuples and paths into plain JSON types."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def portable_paths(value: Any) -> Any:
    """The JSON value with every path inside the cache folder written as $COMPANION_CACHE/... (core.cache.portable)."""
    if isinstance(value, dict):
        return {k: portable_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable_paths(v) for v in value]
    return portable(value) if isinstance(value, str) else value


def write_json_atomic(path: Path, payload: Any) -> Path:
    """Write JSON to a temporary file beside path, then rename it into place."""
    with staged_file(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        json.dump(to_jsonable(payload), handle, indent=1, ensure_ascii=False)
    return path


def record(metrics: dict[str, Any], *, models: list[dict[str, str]] | None = None,
           data: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Hand a notebook's metrics (and the model/data identities it used) to the runner.

    Under `companion run` this writes the file the runner turns into book/_generated/results/<name>.json;
    run interactively it writes nothing and returns the payload.
    """
    payload = portable_paths({"metrics": to_jsonable(metrics), "models": models or [], "data": data or []})
    target = os.environ.get(RESULTS_ENV)
    if target:
        write_json_atomic(Path(target), payload)
    return payload
