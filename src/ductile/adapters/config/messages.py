"""The wording of config errors: key paths, echoed values, "did you mean", "also" lines.

A problem found while reading is a :class:`Problem` (a message and a key path
relative to where it was found); :func:`config_error` turns every problem of
one read into one :class:`~ductile.domain.errors.ConfigError`, the first in
file order leading and the others listed after it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ductile.domain.errors import ConfigError
from ductile.domain.suggest import did_you_mean

#: How many further problems a ConfigError lists after the first one.
MAX_LISTED_PROBLEMS = 10
#: Echoed values are cut to this length in messages.
_SHOWN = 60

#: A key path in the document: mapping keys and list indexes.
KeyPath = tuple[str | int, ...]
#: A (line, column) in the file, the line 1-based.
Position = tuple[int, int]

_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def format_path(path: KeyPath) -> str:
    """``plugins.a.retry[0]``; keys that are not simple names in brackets and quotes."""
    out = ""
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
        elif _SIMPLE_KEY.fullmatch(step):
            out += f".{step}" if out else step
        else:
            quoted = step.replace("\\", "\\\\").replace('"', '\\"')
            out += f'["{shorten(quoted)}"]'
    return out


def shorten(text: str, limit: int = _SHOWN) -> str:
    """``text`` for a message: escaped if it holds control characters, cut to ``limit``."""
    text = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(value: object) -> str:
    """What a plain value is, for "expected X, got Y" (echoing it, shortened)."""
    if value is None:
        return "empty (null)"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, int | float):
        return f"a number ({shorten(repr(value))})"
    if isinstance(value, str):
        return f"the text '{shorten(value)}'"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__  # pragma: no cover - the tree holds nothing else


def kind(value: object) -> str:
    """Like :func:`describe`, without echoing the value (for secrets)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return describe(value) if not isinstance(value, str) else "text"


class Problem(Exception):
    """A problem found by a hook; ``subpath`` is relative to where the hook was called."""

    def __init__(self, message: str, *subpath: str | int) -> None:
        super().__init__(message)
        self.message = message
        self.subpath: KeyPath = subpath


def _nearest(path: KeyPath, lines: Mapping[KeyPath, Position]) -> Position | None:
    for end in range(len(path), -1, -1):
        pos = lines.get(path[:end])
        if pos is not None:
            return pos
    return None


def _shorten_message(message: str, limit: int = 400) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


def unknown_key(key: str, allowed: list[str]) -> str:
    """The message for a key the schema does not have: a "did you mean" and every allowed key."""
    shown = shorten(key)
    return f"unknown key '{shown}'{did_you_mean(key, allowed)}; allowed here: {', '.join(allowed)}"


def config_error(found: list[tuple[KeyPath, str]], lines: Mapping[KeyPath, Position]) -> ConfigError:
    """All problems found, in file order: the first one leads, the others follow as "also" lines."""
    ranked = sorted(
        ((_nearest(path, lines), path, message) for path, message in found),
        key=lambda item: (item[0] or (1 << 30, 0), format_path(item[1])),
    )
    pos, path, message = ranked[0]
    line = pos[0] if pos is not None else None
    message = _shorten_message(message)
    rest = ranked[1:]
    if rest:
        shown = [
            f"  also {format_path(p) or '<config>'}{f' (line {n[0]})' if n is not None else ''}: "
            f"{_shorten_message(m)}"
            for n, p, m in rest[:MAX_LISTED_PROBLEMS]
        ]
        if len(rest) > MAX_LISTED_PROBLEMS:
            shown.append(f"  ... and {len(rest) - MAX_LISTED_PROBLEMS} more")
        message = "\n".join([message, *shown])
    return ConfigError(message, path=format_path(path), line=line)
