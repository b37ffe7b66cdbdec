"""Plugin protocol v1 (D7): the request we write, the response we accept.

:func:`parse_response` turns *any* byte string into either a
:class:`Response` or a :class:`ProtocolError` with a specific ``kind``;
no other exception escapes it (a property test holds it to that).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

import attrs

from ductile.domain.errors import ProtocolError
from ductile.domain.jsonvalue import format_path, json_problem

PROTOCOL_VERSION = 1
SUPPORTED_PROTOCOLS = frozenset({PROTOCOL_VERSION})
LOG_LEVELS = ("info", "warn", "error")

_JSON_WS = " \t\r\n"
_JSON_WS_BYTES = _JSON_WS.encode()
#: Deepest nesting of objects/arrays accepted in a response. Far beyond any
#: real document, far below the interpreter's recursion limit, so whatever is
#: accepted here can be re-encoded anywhere (state, a child's request).
MAX_DEPTH = 200


@attrs.frozen(kw_only=True)
class EmittedEvent:
    """An event as a plugin reported it, before the core wraps it (D8)."""

    type: str
    payload: dict[str, Any] = attrs.field(factory=dict)
    dedupe_key: str | None = None


@attrs.frozen(kw_only=True)
class LogLine:
    level: Literal["info", "warn", "error"]
    message: str


@attrs.frozen(kw_only=True)
class Response:
    status: Literal["ok", "error"]
    error: str | None = None
    retry: bool = True
    events: tuple[EmittedEvent, ...] = ()
    state_updates: dict[str, Any] = attrs.field(factory=dict)
    logs: tuple[LogLine, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def iso_utc(at: datetime) -> str:
    """``2026-11-23T07:30:00Z`` (milliseconds kept when present)."""
    at = at.astimezone(UTC)
    if at.microsecond:
        return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


#: ``json.dumps`` with these options builds a new encoder per call; these are built once.
_COMPACT = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_STRICT = json.JSONEncoder(ensure_ascii=False, allow_nan=False)


def build_request(
    *,
    job_id: str,
    command: str,
    config: dict[str, Any],
    state: dict[str, Any],
    deadline_at: datetime,
    event: dict[str, Any] | None = None,
) -> bytes:
    """The one JSON object written to the plugin's stdin."""
    body: dict[str, Any] = {
        "protocol": PROTOCOL_VERSION,
        "job_id": job_id,
        "command": command,
        "config": config,
        "state": state,
        "deadline_at": iso_utc(deadline_at),
    }
    if command == "handle":
        body["event"] = event if event is not None else {}
    return _COMPACT.encode(body).encode()


def _refuse_constant(name: str) -> Any:
    raise ProtocolError("non_finite", f"response contains {name}, which is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def decode_json_object(raw: bytes, *, what: str = "response") -> dict[str, Any]:
    """Exactly one JSON object in ``raw`` (surrounding whitespace allowed)."""
    if not raw.strip(_JSON_WS_BYTES):
        raise ProtocolError("empty", f"{what} is empty: expected one JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError("encoding", f"{what} is not valid UTF-8 (byte {e.start})") from None
    start = len(text) - len(text.lstrip(_JSON_WS))
    try:
        value, end = _DECODER.raw_decode(text, start)
    except ProtocolError:
        raise
    except RecursionError:
        raise ProtocolError("too_deep", f"{what} is nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, and int-digit limits
        raise ProtocolError("not_json", f"{what} is not valid JSON: {e}") from None
    if text[end:].strip(_JSON_WS):
        raise ProtocolError(
            "trailing_data",
            f"{what} has data after the first JSON value (at character {end}): expected exactly one object",
        )
    if not isinstance(value, dict):
        raise ProtocolError("not_object", f"{what} is a JSON {_json_type(value)}, not an object")
    if _deeper_than(value, MAX_DEPTH):
        # A document the decoder just managed may still blow the stack later,
        # re-encoded a few frames deeper (a child's request wraps the payload).
        raise ProtocolError("too_deep", f"{what} is nested more than {MAX_DEPTH} levels deep")
    try:
        _STRICT.encode(value).encode("utf-8")
    except UnicodeEncodeError:
        found = json_problem(value)
        where = f" at {format_path(found[0])}" if found is not None and found[0] else ""
        raise ProtocolError("encoding", f"{what} contains a lone surrogate escape{where}") from None
    except RecursionError:
        raise ProtocolError("too_deep", f"{what} is nested too deeply") from None
    except ValueError:  # a number like 1e400 decodes to infinity
        raise ProtocolError(
            "non_finite", f"{what} contains a number too large for a float (it would be infinity)"
        ) from None
    return value


def _deeper_than(value: object, limit: int) -> bool:
    """Does ``value`` nest objects/arrays more than ``limit`` levels? (No recursion.)"""
    level: list[Any] = [value]
    depth = 1
    while level:
        if depth > limit:
            return True
        below: list[Any] = []
        for node in level:
            children = node.values() if isinstance(node, dict) else node
            below += [c for c in children if isinstance(c, dict | list)]
        level = below
        depth += 1
    return False


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _bad(field: str, expected: str, value: object) -> ProtocolError:
    return ProtocolError("bad_field", f"response field '{field}' must be {expected}, not {_json_type(value)}")


def _optional_str(body: dict[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad(field, "a string", value)
    return value


def _event(index: int, raw: object) -> EmittedEvent:
    where = f"events[{index}]"
    if not isinstance(raw, dict):
        raise _bad(where, "an object", raw)
    etype = raw.get("type")
    if not isinstance(etype, str) or not etype:
        raise ProtocolError("bad_field", f"response field '{where}.type' must be a non-empty string")
    payload = raw.get("payload")
    if payload is None:
        payload = {}
    elif not isinstance(payload, dict):
        raise _bad(f"{where}.payload", "an object", payload)
    key = raw.get("dedupe_key")
    if key is not None and (not isinstance(key, str) or not key):
        raise ProtocolError("bad_field", f"response field '{where}.dedupe_key' must be a non-empty string")
    return EmittedEvent(type=etype, payload=payload, dedupe_key=key)


def _log(index: int, raw: object) -> LogLine:
    where = f"logs[{index}]"
    if not isinstance(raw, dict):
        raise _bad(where, "an object", raw)
    level = raw.get("level", "info")
    if level not in LOG_LEVELS:
        raise ProtocolError(
            "bad_field", f"response field '{where}.level' must be one of {', '.join(LOG_LEVELS)}"
        )
    message = raw.get("message")
    if not isinstance(message, str):
        raise _bad(f"{where}.message", "a string", message)
    return LogLine(level=level, message=message)


def parse_response(raw: bytes) -> Response:
    """Validate a plugin's stdout. Raises :class:`ProtocolError` on any bad shape."""
    body = decode_json_object(raw)
    if "protocol" in body and body["protocol"] is not None:
        version = body["protocol"]
        # ``type() is int``: no bool, no 1.0, and no unhashable list in a set lookup.
        if type(version) is not int or version not in SUPPORTED_PROTOCOLS:
            shown = repr(version)[:40] if isinstance(version, int | float | str) else _json_type(version)
            raise ProtocolError(
                "protocol_mismatch",
                f"response speaks protocol {shown}; this core speaks {PROTOCOL_VERSION}",
            )
    status = body.get("status")
    if status not in ("ok", "error"):
        raise ProtocolError("bad_field", 'response field \'status\' must be "ok" or "error"')
    error = _optional_str(body, "error")
    retry = body.get("retry")
    if retry is None:
        retry = True
    elif not isinstance(retry, bool):
        raise _bad("retry", "true or false", retry)
    raw_events = body.get("events")
    if raw_events is None:
        raw_events = []
    elif not isinstance(raw_events, list):
        raise _bad("events", "an array", raw_events)
    updates = body.get("state_updates")
    if updates is None:
        updates = {}
    elif not isinstance(updates, dict):
        raise _bad("state_updates", "an object", updates)
    raw_logs = body.get("logs")
    if raw_logs is None:
        raw_logs = []
    elif not isinstance(raw_logs, list):
        raise _bad("logs", "an array", raw_logs)
    return Response(
        status=status,
        error=error,
        retry=retry,
        events=tuple(_event(i, e) for i, e in enumerate(raw_events)),
        state_updates=updates,
        logs=tuple(_log(i, item) for i, item in enumerate(raw_logs)),
    )
