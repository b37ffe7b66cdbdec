""" "Did you mean": the one way every message suggests the name a typo was probably meant to be."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

#: Words longer than this get no suggestion (difflib is quadratic, and nobody mistypes a paragraph).
MAX_WORD = 100


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice ``word`` was most probably meant to be, None when none is close enough."""
    if len(word) > MAX_WORD:
        return None
    found = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return found[0] if found else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'poll'?)"`` for a close choice, else ``""``: appended to a message."""
    match = closest(word, choices)
    return f" (did you mean '{match}'?)" if match is not None else ""
