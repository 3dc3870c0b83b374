"""Strict reading of a results file: a missing, renamed or malformed key is one UserError naming the file and key."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from companion.core.errors import UserError, closest
from companion.publish.verdicts import Estimate


class Fields:
    """One mapping inside a results file, read so that every problem names the file and the key's full path."""

    def __init__(self, data: Any, file: str, path: str = "") -> None:
        """Wrap `data` (found at `path` in `file`); it must be a mapping."""
        if not isinstance(data, dict):
            raise UserError(f"{file}: '{path or '(top level)'}' should be a mapping, found {type(data).__name__}; "
                            f"{_remedy(file)}")
        self.data, self.file, self.path = data, file, path

    @classmethod
    def load(cls, path: Path) -> Fields:
        """The top level of a results JSON file."""
        try:
            return cls(json.loads(path.read_text(encoding="utf-8")), path.name)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"{path.name}: cannot read the results file ({exc}); {_remedy(path.name)}") from exc

    def _where(self, key: str) -> str:
        """The full dotted path of a key."""
        return f"{self.path}.{key}" if self.path else key

    def _problem(self, key: str, what: str) -> UserError:
        """The one-line error for a key."""
        return UserError(f"{self.file}: key '{self._where(key)}' {what}; {_remedy(self.file)}")

    def raw(self, key: str) -> Any:
        """The value of a key as stored (missing: an error that suggests the closest existing key)."""
        if key not in self.data:
            hint = closest(key, sorted(self.data))
            found = f"did you mean '{hint}'?" if hint else f"found {', '.join(sorted(self.data)) or 'no keys'}"
            raise self._problem(key, f"is missing ({found})")
        return self.data[key]

    def child(self, key: str) -> Fields:
        """A nested mapping."""
        value = self.raw(key)
        if not isinstance(value, dict):
            raise self._problem(key, f"should be a mapping, found {type(value).__name__}")
        return Fields(value, self.file, self._where(key))

    def children(self, key: str) -> list[Fields]:
        """A non-empty list of mappings."""
        items = self.raw(key)
        if not isinstance(items, list) or not items:
            raise self._problem(key, "should be a non-empty list of mappings")
        return [Fields(item, self.file, f"{self._where(key)}[{i}]") for i, item in enumerate(items)]

    def number(self, key: str) -> float | None:
        """A number (None where the notebook recorded a non-finite value as null)."""
        value = self.raw(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._problem(key, f"should be a number, found {value!r}")
        return float(value)

    def text(self, key: str) -> str:
        """A string."""
        value = self.raw(key)
        if not isinstance(value, str):
            raise self._problem(key, f"should be a string, found {value!r}")
        return value

    def integer(self, key: str) -> int:
        """An integer."""
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._problem(key, f"should be an integer, found {value!r}")
        return value

    def count(self, key: str) -> str:
        """A count for the reader: an integer, the length of a list (e.g. the seeds themselves), or one per name."""
        value = self.raw(key)
        if isinstance(value, list):
            return str(len(value))
        if isinstance(value, dict) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value.values()):
            return ", ".join(f"{name} {n}" for name, n in value.items())
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._problem(key, f"should be an integer, a list or a mapping of names to integers, found {value!r}")
        return str(value)

    def strings(self, key: str) -> list[str]:
        """A non-empty list of strings."""
        value = self.raw(key)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise self._problem(key, f"should be a non-empty list of strings, found {value!r}")
        return value

    def interval(self, key: str) -> tuple[float | None, float | None]:
        """A [low, high] pair (null, or a null bound: then the row gets no verdict, e.g. no OOD set on a user's file)."""
        value = self.raw(key)
        if value is None:
            return None, None
        ok = isinstance(value, list) and len(value) == 2 and all(
            b is None or (isinstance(b, (int, float)) and not isinstance(b, bool)) for b in value)
        if not ok:
            raise self._problem(key, f"should be a [low, high] pair of numbers, found {value!r}")
        low, high = (None if b is None else float(b) for b in value)
        if low is not None and high is not None and not math.isnan(low) and not math.isnan(high) and low > high:
            raise self._problem(key, f"has its low bound above its high bound ({low} > {high})")
        return low, high

    def estimate(self, key: str, interval_key: str | None = None) -> Estimate:
        """A number with its interval, stored as `key` and `key_ci` (or `interval_key`)."""
        return Estimate(self.number(key), *self.interval(interval_key or f"{key}_ci"))


def _remedy(file: str) -> str:
    """The way out shared by every results-file error."""
    name = file.removesuffix(".json")
    return f"re-run the notebook with this version of the code (companion run --only {name} --force)"
