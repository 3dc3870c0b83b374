"""The one exception type a user can cause, and the hint for a mistyped name."""

from __future__ import annotations

import difflib


class UserError(Exception):
    """A problem the user can fix; the message names the problem and the way out."""



def closest(word: str, choices: list[str] | tuple[str, ...]) -> str | None:
    """The closest choice to a mistyped word, or None when nothing is close."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return match[0] if match else None
