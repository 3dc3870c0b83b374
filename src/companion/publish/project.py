"""Where a project's notebooks, profiles, helper package and outputs live, and what a run did to each notebook."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Project:
    """Where a project's notebooks, profiles, helper package and outputs live."""

    root: Path
    package: str = "companion"

    @property
    def notebooks(self) -> Path:
        """Folder of the parameterized notebooks."""
        return self.root / "notebooks"

    @property
    def profiles(self) -> Path:
        """Folder of the profile YAML files."""
        return self.notebooks / "profiles"

    @property
    def source(self) -> Path:
        """Folder of the helper package whose source the cache hash covers."""
        return self.root / "src" / self.package

    @property
    def generated(self) -> Path:
        """Folder of executed notebooks (inside the book)."""
        return self.root / "book" / "_generated"

    @property
    def results(self) -> Path:
        """Folder of the results JSON files."""
        return self.generated / "results"



@dataclass(frozen=True)
class Outcome:
    """What happened to one notebook in a run."""

    name: str
    status: str  # ran, skipped or failed
    seconds: float
    message: str = ""
