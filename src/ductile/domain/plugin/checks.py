"""The checks both manifest formats share: one function per kind of value.

Each raises :class:`~ductile.domain.errors.ManifestError` with the key path of
the value at fault, so discovery can name the line; an unknown key gets a
"did you mean".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ductile.domain.errors import ManifestError
from ductile.domain.suggest import did_you_mean

Path = tuple[str | int, ...]

#: A plugin name, as the config's ``plugins`` table accepts it.
PLUGIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
#: A command name of a v2 manifest (custom names allowed).
COMMAND_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
MAX_NAME = 255


def _shown(value: object, limit: int = 60) -> str:
    text = str(value)
    text = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


def unknown_keys(raw: Mapping[Any, object], allowed: Sequence[str], *where: str | int) -> None:
    """Refuse the first key of ``raw`` (in the order written) that is not ``allowed``."""
    unknown = [key for key in raw if key not in allowed]
    if not unknown:
        return
    key = str(unknown[0])
    hint = did_you_mean(key, allowed)
    more = (
        f" (and {len(unknown) - 1} more: {', '.join(_shown(k) for k in unknown[1:4])})"
        if len(unknown) > 1
        else ""
    )
    raise ManifestError(
        f"unknown key '{_shown(key)}'{hint}{more}; allowed here: {', '.join(allowed)}", *where, key
    )


def mapping(raw: object, what: str, *where: str | int) -> Mapping[Any, object]:
    if not isinstance(raw, dict):
        raise ManifestError(f"{what} must be a mapping of keys to values", *where)
    return raw


def version(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise ManifestError("manifest 'version' is missing", "version")
    return value


def entrypoint(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ManifestError("manifest 'entrypoint' is missing", "entrypoint")
    if value.startswith("/"):
        raise ManifestError(f"entrypoint '{value}' must be relative to the plugin directory", "entrypoint")
    if ".." in value.replace("\\", "/").split("/"):
        raise ManifestError(f"entrypoint '{value}' must not contain '..'", "entrypoint")
    if "\x00" in value:
        raise ManifestError("entrypoint contains a NUL byte", "entrypoint")
    return value


def text(value: object, what: str, *where: str | int) -> str:
    """Optional text ('' when absent)."""
    value = value or ""
    if not isinstance(value, str):
        raise ManifestError(f"{what} must be text", *where)
    return value


def flag(value: object, what: str, default: bool | None, *where: str | int) -> bool | None:
    """An optional true/false."""
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ManifestError(f"{what} must be true or false, not {_shown(value)}", *where)
    return value


def names(raw: object, what: str, *where: str | int) -> tuple[str, ...]:
    """An optional list of non-empty names."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
        raise ManifestError(f"'{what}' must be a list of names", *where)
    return tuple(raw)


def config_keys(raw: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The required and the optional config keys."""
    keys = raw or {}
    if not isinstance(keys, dict):
        raise ManifestError(
            "'config_keys' must be a mapping with 'required' and/or 'optional' lists", "config_keys"
        )
    unknown_keys(keys, ("required", "optional"), "config_keys")
    return (
        names(keys.get("required"), "config_keys.required", "config_keys", "required"),
        names(keys.get("optional"), "config_keys.optional", "config_keys", "optional"),
    )


def plugin_name(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ManifestError("manifest 'name' is missing", "name")
    if not PLUGIN_NAME.fullmatch(value) or len(value) > MAX_NAME:
        raise ManifestError(
            f"manifest name '{_shown(value)}' is not a valid plugin name: use letters, digits, '.', '_' "
            "and '-', not starting with '.'",
            "name",
        )
    return value
