"""What can be sent as JSON: one check, naming the key path of the first problem.

Every value ductile serialises (a job's payload, a plugin's config and state,
an event, the request on a plugin's stdin) must survive
``json.dumps(..., ensure_ascii=False, allow_nan=False).encode("utf-8")``. A
Python string can hold a lone UTF-16 surrogate (``"\\ud83d"``: from a JSON or
YAML escape, or from an environment variable that was not valid UTF-8) that
parses fine and then fails every encode, so a value that gets in once fails
every later use of it: every tick of a schedule, every job of a plugin.

So each boundary where such a value enters (the config reader, the intake of a
job asked for by hand, a plugin's response) checks it once with
:func:`json_problem`, and refuses it with a message naming where the problem
is (``payload.items[2].name``). Inside, values are trusted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

#: How deep a value may nest (objects and arrays): as a plugin's response may (protocol.MAX_DEPTH).
MAX_DEPTH = 200

_SURROGATE = re.compile("[\ud800-\udfff]")
_SIMPLE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")

#: A key path: object keys and array indexes.
JsonPath = tuple[str | int, ...]


def describe_problem(found: tuple[JsonPath, str], root: str) -> str:
    """One line for a :func:`json_problem` answer: ``payload.items[2] holds ...``."""
    path, message = found
    return f"{format_path(path, root)} {message}"


def has_surrogate(text: str) -> bool:
    """Does ``text`` hold a UTF-16 surrogate (which no UTF-8 encoder accepts)?"""
    return not text.isascii() and _SURROGATE.search(text) is not None


def join_pairs(text: str) -> str | None:
    """``text`` with each escaped surrogate *pair* joined into the character it encodes
    (``"\\ud83d\\ude00"`` -> 😀, as JSON reads it); None when a surrogate is left alone."""
    if not has_surrogate(text):
        return text
    try:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    except UnicodeDecodeError:
        return None


def format_path(path: JsonPath, root: str = "") -> str:
    """``root.a.b[2]['odd key']``: simple keys dotted, others quoted (ASCII-escaped) in brackets."""
    out = root
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
        elif _SIMPLE_KEY.fullmatch(step):
            out += f".{step}" if out else step
        else:
            out += "[" + ascii(step)[:60] + "]"
    return out or "the value"


#: Why a string holding a surrogate is refused.
SURROGATE_PROBLEM = (
    "holds a lone surrogate escape (like \\ud83d), which is not text and cannot be sent as JSON"
)


def _scalar_problem(value: object) -> str | None:
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, str):
        return SURROGATE_PROBLEM if has_surrogate(value) else None
    if isinstance(value, float):
        return None if math.isfinite(value) else "is infinity or not-a-number, which JSON cannot carry"
    return f"is a {type(value).__name__}, which JSON cannot carry"


def json_problem(value: object, *, max_depth: int = MAX_DEPTH) -> tuple[JsonPath, str] | None:
    """The first thing in ``value`` that JSON (strict, UTF-8) cannot carry, with its key path; None if none.

    The message is a predicate on the path: ``f"{format_path(path)} {message}"``
    reads "payload.items[2] holds a lone surrogate escape ...".

    Refused: a string holding a surrogate, a non-finite float, a key that is not
    a string, a type JSON does not have, nesting deeper than ``max_depth``.
    Objects are any mapping, arrays a list or tuple. Iterative: no recursion
    limit to hit.
    """
    stack: list[tuple[JsonPath, object]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, Mapping):
            children: list[tuple[JsonPath, object]] = []
            for key, child in item.items():
                if not isinstance(key, str):
                    return path, f"has a key that is not text ({ascii(key)[:40]}); JSON keys are strings"
                if has_surrogate(key):
                    return path, "has a key that " + SURROGATE_PROBLEM
                children.append(((*path, key), child))
        elif isinstance(item, list | tuple):
            children = [((*path, index), child) for index, child in enumerate(item)]
        else:
            problem = _scalar_problem(item)
            if problem is not None:
                return path, problem
            continue
        if len(path) >= max_depth:
            return path, f"nests more than {max_depth} levels deep"
        stack.extend(reversed(children))
    return None
