"""The on-disk cache: one root folder, one key function for everything cached under it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def cache_root() -> Path:
    """The companion's cache folder: $COMPANION_CACHE, else the user's cache directory."""
    env = os.environ.get("COMPANION_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "companion"
    base.mkdir(parents=True, exist_ok=True)
    return base



CACHE_NAME = "$COMPANION_CACHE"  # how a path inside the cache folder is written in cache keys and results files


def portable(text: str) -> str:
    """A path inside the cache folder written as $COMPANION_CACHE/..., the same on every machine and cache location
    (a cache key or a results file then does not depend on where the cache lives); any other text as it is."""
    folder = cache_root()
    for root in {str(folder), str(folder.resolve())}:
        if text == root or text.startswith(root + os.sep):
            return CACHE_NAME + text[len(root):]
    return text



def cache_key(**parts: object) -> str:
    """A short stable hash of everything that determines a cached result."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]
