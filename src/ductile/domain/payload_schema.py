"""Check a payload against a command's ``input_schema`` (a v2 manifest's JSON Schema).

The subset the ecosystem's manifests use, checked without a dependency:
``type`` (a name or a list of names), ``enum``, ``const``, ``properties``,
``required``, ``additionalProperties`` (a boolean or a schema), ``items``,
``minItems``/``maxItems``, ``minLength``/``maxLength``, ``pattern``,
``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum``, and
``anyOf``/``oneOf``/``allOf``. Any other keyword (``format``, ``$ref``...) is
not checked: a schema is a guard against mistakes at the door, the plugin
still owns its input. Each problem names the JSON path of the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

#: Most problems one check reports (a wrong list of 10,000 items does not make 10,000 lines).
MAX_PROBLEMS = 10


def json_type_of(value: object) -> str:
    """The JSON type name of a decoded JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, Sequence):
        return "array"
    return type(value).__name__


def _is_type(value: object, name: str) -> bool:
    actual = json_type_of(value)
    if name == "number":
        return actual in ("integer", "number")
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return actual == name


def problems(value: object, schema: Mapping[str, Any], path: str = "payload") -> list[str]:
    """What is wrong with ``value`` under ``schema``: empty when it conforms."""
    found: list[str] = []
    _check(value, schema, path, found)
    return found[:MAX_PROBLEMS]


def _check(value: object, schema: Mapping[str, Any], path: str, found: list[str]) -> None:
    if len(found) >= MAX_PROBLEMS:
        return
    if not _check_type(value, schema, path, found):
        return
    if "enum" in schema and isinstance(schema["enum"], list) and value not in schema["enum"]:
        found.append(f"{path}: {value!r} is not one of {schema['enum']!r}")
    if "const" in schema and value != schema["const"]:
        found.append(f"{path}: must be {schema['const']!r}")
    _check_combinations(value, schema, path, found)
    if isinstance(value, Mapping):
        _check_object(value, schema, path, found)
    elif isinstance(value, list):
        _check_array(value, schema, path, found)
    elif isinstance(value, str):
        _check_string(value, schema, path, found)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _check_number(value, schema, path, found)


def _check_type(value: object, schema: Mapping[str, Any], path: str, found: list[str]) -> bool:
    wanted = schema.get("type")
    if wanted is None:
        return True
    listed = wanted if isinstance(wanted, list) else []
    names = [wanted] if isinstance(wanted, str) else [n for n in listed if isinstance(n, str)]
    if not names or any(_is_type(value, n) for n in names):
        return True
    found.append(f"{path}: must be {' or '.join(names)}, not {json_type_of(value)}")
    return False


def _check_combinations(value: object, schema: Mapping[str, Any], path: str, found: list[str]) -> None:
    for sub in _schemas(schema, "allOf"):
        _check(value, sub, path, found)
    for word, exactly_one in (("anyOf", False), ("oneOf", True)):
        options = _schemas(schema, word)
        if not options:
            continue
        passing = sum(1 for s in options if not problems(value, s, path))
        if passing == 0 or (exactly_one and passing > 1):
            how = "exactly one" if exactly_one else "at least one"
            found.append(f"{path}: must match {how} of the {len(options)} schemas of {word}")


def _schemas(schema: Mapping[str, Any], word: str) -> list[Mapping[str, Any]]:
    """The subschemas listed under ``word`` (anything else there is ignored)."""
    listed = schema.get(word)
    return [s for s in listed if isinstance(s, Mapping)] if isinstance(listed, list) else []


def _check_object(value: Mapping[str, Any], schema: Mapping[str, Any], path: str, found: list[str]) -> None:
    properties = schema.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    required = schema.get("required")
    for name in required if isinstance(required, list) else ():
        if isinstance(name, str) and name not in value:
            found.append(f"{path}.{name}: is required")
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        sub = properties.get(key)
        if isinstance(sub, Mapping):
            _check(item, sub, f"{path}.{key}", found)
        elif extra is False:
            found.append(
                f"{path}.{key}: is not allowed here (known: {', '.join(sorted(properties)) or 'none'})"
            )
        elif isinstance(extra, Mapping):
            _check(item, extra, f"{path}.{key}", found)


def _check_array(value: list[Any], schema: Mapping[str, Any], path: str, found: list[str]) -> None:
    _bounds(len(value), schema, ("minItems", "maxItems"), f"{path}: has {len(value)} items", found)
    items = schema.get("items")
    if isinstance(items, Mapping):
        for i, item in enumerate(value):
            _check(item, items, f"{path}[{i}]", found)


def _check_string(value: str, schema: Mapping[str, Any], path: str, found: list[str]) -> None:
    _bounds(len(value), schema, ("minLength", "maxLength"), f"{path}: has {len(value)} characters", found)
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        try:
            matched = re.search(pattern, value) is not None
        except re.error:
            return  # a broken pattern is the manifest's problem; discovery reports manifests
        if not matched:
            found.append(f"{path}: does not match the pattern {pattern!r}")


def _check_number(value: float, schema: Mapping[str, Any], path: str, found: list[str]) -> None:
    _bounds(value, schema, ("minimum", "maximum"), f"{path}: {value!r}", found)
    low, high = _bound(schema, "exclusiveMinimum"), _bound(schema, "exclusiveMaximum")
    if low is not None and value <= low:
        found.append(f"{path}: {value!r} must be more than {low!r}")
    if high is not None and value >= high:
        found.append(f"{path}: {value!r} must be less than {high!r}")


def _bounds(
    size: float, schema: Mapping[str, Any], words: tuple[str, str], what: str, found: list[str]
) -> None:
    """``what`` breaks the minimum or the maximum the schema's ``words`` name."""
    low, high = _bound(schema, words[0]), _bound(schema, words[1])
    if low is not None and size < low:
        found.append(f"{what}, under the {words[0]} {low!r}")
    if high is not None and size > high:
        found.append(f"{what}, over the {words[1]} {high!r}")


def _bound(schema: Mapping[str, Any], word: str) -> float | None:
    bound = schema.get(word)
    return bound if isinstance(bound, int | float) and not isinstance(bound, bool) else None
