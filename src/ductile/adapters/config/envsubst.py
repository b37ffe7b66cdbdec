"""``${VAR}`` substitution in config text values.

Run on string values as they are read (never on the file before parsing), so
a variable's value can never inject YAML structure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ductile.adapters.config.messages import Problem, shorten
from ductile.domain.jsonvalue import has_surrogate

_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def substitute(text: str, env: Mapping[str, str]) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}``; ``$$`` is a literal ``$``.

    One pass, no recursion: a variable's value is never scanned again, so it
    can hold ``${...}`` or YAML syntax and stays plain text. A ``$`` not
    followed by ``{`` or ``$`` is kept as it is. A value that was not valid
    UTF-8 in the environment (Python keeps such bytes as lone surrogates) is
    refused: it could never be sent as JSON.
    """
    if "$" not in text:
        return text
    out: list[str] = []
    pos = 0
    while True:
        dollar = text.find("$", pos)
        if dollar < 0:
            out.append(text[pos:])
            return "".join(out)
        out.append(text[pos:dollar])
        following = text[dollar + 1 : dollar + 2]
        if following == "$":
            out.append("$")
            pos = dollar + 2
        elif following == "{":
            close = text.find("}", dollar + 2)
            if close < 0:
                raise Problem(f"'${{' without a closing '}}' in '{shorten(text)}'; write $$ for a literal $")
            inner = text[dollar + 2 : close]
            name, sep, default = inner.partition(":-")
            if not _VAR_NAME.fullmatch(name):
                raise Problem(
                    f"'${{{shorten(inner)}}}' is not a variable reference: names are letters, digits "
                    "and '_' (e.g. ${API_TOKEN}), optionally with a default (${PORT:-8081}); "
                    "write $$ for a literal $"
                )
            value = env.get(name)
            if sep:
                value = value or default
            elif value is None:
                raise Problem(
                    f"environment variable {name} is not set (set it, or give a default: ${{{name}:-...}})"
                )
            if has_surrogate(value):  # bytes that were not UTF-8, kept by Python as surrogates
                raise Problem(f"environment variable {name} is not valid UTF-8 text")
            out.append(value)
            pos = close + 1
        else:
            out.append("$")
            pos = dollar + 1
