"""A run-now form generated from a command's ``input_schema``, and the payload read back from it.

Only a flat object schema becomes fields: each top-level property of type
string, integer, number or boolean (or with an ``enum``) is one labelled input,
required ones marked. Anything else (nested objects, arrays, combinators) gets
the JSON payload box instead. The payload is checked against the schema by the
one intake path either way: the form only spares typing JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ductile.app.api.errors import ApiError

SIMPLE = ("string", "integer", "number", "boolean")
PREFIX = "field."


def fields(schema: Mapping[str, Any] | None) -> list[dict[str, Any]] | None:
    """The form's fields for ``schema``; None when it is not a flat object of simple values."""
    if not schema or schema.get("type") != "object" or not isinstance(schema.get("properties"), Mapping):
        return None
    required = set(schema.get("required") or ())
    out = []
    for name, prop in schema["properties"].items():
        if not isinstance(prop, Mapping):
            return None
        kind = prop.get("type")
        enum = prop.get("enum")
        if kind not in SIMPLE and not isinstance(enum, list):
            return None
        out.append(
            {
                "name": name,
                "type": kind if kind in SIMPLE else "string",
                "enum": [str(v) for v in enum] if isinstance(enum, list) else None,
                "required": name in required,
                "description": str(prop.get("description", "")),
            }
        )
    return out


def _value(field: Mapping[str, Any], text: str) -> Any:
    kind = field["type"]
    if kind == "integer":
        try:
            return int(text)
        except ValueError:
            raise ApiError(422, "invalid payload", f"{field['name']}: expected a whole number") from None
    if kind == "number":
        try:
            return float(text)
        except ValueError:
            raise ApiError(422, "invalid payload", f"{field['name']}: expected a number") from None
    return text


def payload(form: Mapping[str, str], spec: list[dict[str, Any]]) -> dict[str, Any]:
    """The payload the form's fields describe (an empty optional field is left out)."""
    out: dict[str, Any] = {}
    for field in spec:
        key = PREFIX + field["name"]
        if field["type"] == "boolean":
            out[field["name"]] = form.get(key) == "on"
            continue
        text = form.get(key, "")
        if text == "" and not field["required"]:
            continue
        out[field["name"]] = _value(field, text)
    return out
