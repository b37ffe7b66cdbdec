"""The plugin protocol, v1 (D7) and v2: the request we write, the response we accept.

A plugin's manifest says which protocol it speaks; :func:`build_request`
writes that protocol's request (a v1 request is byte for byte what it always
was) and :func:`parse_response` reads the answer under the same protocol.
What v2 adds (``docs/plugins.md`` shows both side by side):

* the request carries ``payload`` (the job's payload, for every command but
  ``handle``, left out when empty) and ``context`` (``ductile_plugin``, and
  for a routed job ``ductile_upstream_plugin`` and ``ductile_route_depth``);
* the response may carry ``result`` (text), kept with the run and copied into
  each emitted event's ``payload.result`` unless the plugin set one; its
  ``protocol`` field, if any, is ignored.

Both protocols accept the log levels ``debug``, ``info``, ``warn`` and
``error``; any other level text is kept as ``info`` with the original level
noted in front of the message, never a protocol error.

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

#: The first protocol: a plugin whose manifest says ``protocol: 1`` gets exactly its request.
PROTOCOL_VERSION = 1
PROTOCOL_V1 = PROTOCOL_VERSION
#: The protocol of the upstream ecosystem's manifest v2 (``manifest_spec: ductile.plugin``).
PROTOCOL_V2 = 2
SUPPORTED_PROTOCOLS = frozenset({PROTOCOL_V1, PROTOCOL_V2})
LOG_LEVELS = ("debug", "info", "warn", "error")
#: Longest ``result`` kept with a run (the events get it whole).
MAX_RESULT_CHARS = 16_000

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
    level: Literal["debug", "info", "warn", "error"]
    message: str


@attrs.frozen(kw_only=True)
class Response:
    status: Literal["ok", "error"]
    error: str | None = None
    retry: bool = True
    events: tuple[EmittedEvent, ...] = ()
    state_updates: dict[str, Any] = attrs.field(factory=dict)
    logs: tuple[LogLine, ...] = ()
    #: What the run produced, in a word or a page (text; v2 copies it into emitted events).
    result: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def iso_utc(at: datetime) -> str:
    """``2026-11-23T07:30:00Z`` (milliseconds kept when present)."""
    if at.tzinfo is not UTC:
        at = at.astimezone(UTC)
    if at.year < 1000:  # strftime's %Y does not pad these to four digits; isoformat does
        if at.microsecond:
            return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
        return at.strftime("%Y-%m-%dT%H:%M:%SZ")
    # The same text as the strftime form above, a third of its cost (the simulation writes
    # this at every run): isoformat truncates to milliseconds as ``// 1000`` does.
    return at.isoformat(timespec="milliseconds" if at.microsecond else "seconds")[:-6] + "Z"


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
    protocol: int = PROTOCOL_V1,
    payload: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
) -> bytes:
    """The one JSON object written to the plugin's stdin, in the plugin's ``protocol``.

    v1: ``protocol, job_id, command, config, state, [event], deadline_at``
    (``payload`` and ``context`` are not sent). v2 adds ``payload`` (for
    every command but ``handle``, when not empty) and ``context`` before
    ``event``.
    """
    body: dict[str, Any] = {
        "protocol": protocol,
        "job_id": job_id,
        "command": command,
        "config": config,
        "state": state,
    }
    if protocol == PROTOCOL_V2:
        if payload and command != "handle":
            body["payload"] = payload
        body["context"] = context if context is not None else {}
    if command == "handle":
        body["event"] = event if event is not None else {}
    body["deadline_at"] = iso_utc(deadline_at)
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
    """One log line. A level that is text but not one of :data:`LOG_LEVELS` (after lower-casing)
    is kept as ``info``, the original level noted in front of the message."""
    where = f"logs[{index}]"
    if not isinstance(raw, dict):
        raise _bad(where, "an object", raw)
    level = raw.get("level", "info")
    if level is None:
        level = "info"
    if not isinstance(level, str):
        raise _bad(f"{where}.level", "text (debug, info, warn or error)", level)
    message = raw.get("message")
    if not isinstance(message, str):
        raise _bad(f"{where}.message", "a string", message)
    known = level.strip().lower()
    if known in LOG_LEVELS:
        return LogLine(level=known, message=message)  # type: ignore[arg-type]
    return LogLine(level="info", message=f"[level {level[:40]!r}] {message}")


def _list(body: dict[str, Any], field: str) -> list[Any]:
    value = body.get(field)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(field, "an array", value)
    return value


def _check_echo(body: dict[str, Any], protocol: int) -> None:
    """A v1 response may echo ``"protocol": 1``; anything else there is a mismatch. v2 ignores it."""
    if protocol != PROTOCOL_V1 or body.get("protocol") is None:
        return
    version = body["protocol"]
    # ``type() is int``: no bool, no 1.0.
    if type(version) is not int or version != protocol:
        shown = repr(version)[:40] if isinstance(version, int | float | str) else _json_type(version)
        raise ProtocolError(
            "protocol_mismatch", f"response speaks protocol {shown}; its manifest says protocol {protocol}"
        )


def _result(body: dict[str, Any], protocol: int) -> str | None:
    """``result``: text or absent. A v2 response with anything else there is a protocol error;
    a v1 response's ill-typed ``result`` is ignored like any field v1 does not know."""
    value = body.get("result")
    if value is None or isinstance(value, str):
        return value
    if protocol == PROTOCOL_V1:
        return None
    raise _bad("result", "a string", value)


def _with_result(event: EmittedEvent, result: str) -> EmittedEvent:
    if "result" in event.payload:
        return event
    return attrs.evolve(event, payload={**event.payload, "result": result})


def parse_response(raw: bytes, *, protocol: int = PROTOCOL_V1) -> Response:
    """Validate a plugin's stdout, read under the plugin's ``protocol``.

    Raises :class:`ProtocolError` on any bad shape.
    """
    body = decode_json_object(raw)
    _check_echo(body, protocol)
    status = body.get("status")
    if status not in ("ok", "error"):
        raise ProtocolError("bad_field", 'response field \'status\' must be "ok" or "error"')
    error = _optional_str(body, "error")
    retry = body.get("retry")
    if retry is None:
        retry = True
    elif not isinstance(retry, bool):
        raise _bad("retry", "true or false", retry)
    raw_events = _list(body, "events")
    updates = body.get("state_updates")
    if updates is None:
        updates = {}
    elif not isinstance(updates, dict):
        raise _bad("state_updates", "an object", updates)
    raw_logs = _list(body, "logs")
    result = _result(body, protocol)
    events = tuple(_event(i, e) for i, e in enumerate(raw_events))
    if result is not None and protocol == PROTOCOL_V2:
        events = tuple(_with_result(e, result) for e in events)
    return Response(
        status=status,
        error=error,
        retry=retry,
        events=events,
        state_updates=updates,
        logs=tuple(_log(i, item) for i, item in enumerate(raw_logs)),
        result=result,
    )
