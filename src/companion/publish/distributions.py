"""The installed distributions: versions, required dependencies and the top-level modules each provides.

Scanning every distribution's metadata takes a few hundred milliseconds, so the scan is kept on disk, keyed by
the names and modification times of the metadata folders on sys.path (a reinstall or upgrade changes both).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from companion.core.cache import cache_root
from companion.core.files import staged_file


@dataclass(frozen=True)
class Environment:
    """Installed distributions (canonical names) with their versions, required dependencies and top-level modules."""

    versions: dict[str, str]
    requires: dict[str, list[str]]
    modules: dict[str, list[str]]  # top-level module -> distributions providing it

    def closure(self, names: set[str]) -> set[str]:
        """The given distributions and, transitively, those they require (extras not included)."""
        seen: set[str] = set()
        pending = [name for name in names if name in self.versions]
        while pending:
            name = pending.pop()
            if name not in seen:
                seen.add(name)
                pending += self.requires.get(name, [])
        return seen

    def providers(self, modules: set[str]) -> set[str]:
        """Distributions that provide any of the given top-level modules."""
        return {dist for module in modules for dist in self.modules.get(module, [])}


def _signature() -> str:
    """A hash of the metadata folders on sys.path: their names (name-version) and modification times."""
    entries = []
    for folder in dict.fromkeys(sys.path):
        try:
            with os.scandir(folder or ".") as listing:
                entries += [f"{entry.path}:{entry.stat().st_mtime_ns}" for entry in listing
                            if entry.name.endswith((".dist-info", ".egg-info"))]
        except OSError:
            continue
    return hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()[:20]


def _required(dist: metadata.Distribution, installed: set[str]) -> list[str]:
    """Installed distributions that dist requires on this platform, leaving out optional extras."""
    found = set()
    for line in dist.requires or []:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name in installed:
            found.add(name)
    return sorted(found)


def _scan() -> Environment:
    """Read every installed distribution's metadata (the first one found on sys.path wins, as for imports)."""
    dists: dict[str, metadata.Distribution] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            dists.setdefault(canonicalize_name(name), dist)
    modules: dict[str, set[str]] = {}
    for module, providers in metadata.packages_distributions().items():
        modules.setdefault(module, set()).update(canonicalize_name(p) for p in providers)
    return Environment(
        versions={name: dist.version for name, dist in sorted(dists.items())},
        requires={name: _required(dist, set(dists)) for name, dist in sorted(dists.items())},
        modules={module: sorted(p for p in providers if p in dists) for module, providers in sorted(modules.items())},
    )


def environment() -> Environment:
    """The installed distributions, from the on-disk scan when the metadata folders have not changed."""
    stored = cache_root() / "environments" / f"{_signature()}.json"
    try:
        return Environment(**json.loads(stored.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        pass
    scanned = _scan()
    with staged_file(stored) as tmp:
        Path(tmp).write_text(json.dumps(scanned.__dict__), encoding="utf-8")
    return scanned
