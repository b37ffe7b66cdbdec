"""Write a ductile plugin in Python: protocol v1 (SPEC D7-D10) and v2, standard library only.

A plugin is a program ductile runs once per job: it reads one JSON request on
stdin and writes one JSON response on stdout. This module does the protocol
so the plugin only holds its logic::

    #!/usr/bin/env python3
    from ductile import plugin

    def poll(request: plugin.Request) -> plugin.Response:
        count = request.state.get("count", 0) + request.config_int("step", 1)
        plugin.log.info(f"count is now {count}")
        return plugin.ok(
            state_updates={"count": count},
            events=[plugin.event("counter.ticked", {"count": count}, dedupe_key=f"count-{count}")],
        )

    def health(request: plugin.Request) -> None:
        return None  # None means ok()

    plugin.run({"poll": poll, "health": health})

The same code serves both protocols: the request says which one ductile speaks
(the plugin's manifest decides; a v2 manifest starts with ``manifest_spec:
ductile.plugin``). A v2 request also carries ``payload`` (the job's payload,
for every command but ``handle``) and ``context`` (``ductile_plugin``, and
for a routed job ``ductile_upstream_plugin`` and ``ductile_route_depth``),
read as ``request.payload`` and ``request.context`` (empty under v1); a v2
answer may carry a ``result`` (``ok(result="3 new items")``), which ductile
keeps with the run and copies into the events it routes. Custom commands of
a v2 manifest are handled like the standard ones (``run({"sync": sync})``).

:func:`run` always writes exactly one JSON object on stdout and exits, whatever
the handler does: print() inside a handler goes to stderr (stdout is reserved
for the answer), an uncaught exception becomes a retryable error response
(exit 1, traceback on stderr), :class:`Fail` a chosen error (exit 78 when not
retryable), SIGTERM at the deadline still gets an answer.

No dependency on the rest of ductile: the file imports nothing but the
standard library (Python 3.8 or later). Under ductile any interpreter finds
it: the daemon puts it on every plugin's ``PYTHONPATH`` (ADR 0020). Outside
ductile, or with ``-E``/``-I`` on the ``#!`` line, copy this one file into the plugin's
folder as ``ductile/plugin.py``; ``from ductile import plugin`` then finds it
(the script's folder is first on ``sys.path``). The guide is docs/plugins.md.
"""

# ruff: noqa: UP017  (datetime.UTC is Python 3.11+; this file runs on 3.8+)

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from types import MappingProxyType

# The annotations only; ``typing`` is not imported at run time (start-up cost).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from types import FrameType, TracebackType
    from typing import Any, NoReturn, TextIO, TypeVar, overload

    _T = TypeVar("_T")
    #: A handler: one function for every command, a mapping of command name
    #: to function, or an object with ``poll``/``handle``/``health``/``init`` methods.
    HandlerFunction = Callable[["Request"], "Response | None"]
    Handler = object

__all__ = [
    "COMMANDS",
    "EX_CONFIG",
    "PROTOCOL",
    "PROTOCOLS",
    "ConfigError",
    "Event",
    "Fail",
    "Log",
    "Reply",
    "Request",
    "RequestError",
    "Response",
    "Terminated",
    "error",
    "event",
    "log",
    "ok",
    "parse_request",
    "read",
    "reply",
    "respond",
    "run",
    "token_state",
    "tokens_expired",
]

#: The first protocol version (what a request without one, written by hand, is taken to be).
PROTOCOL = 1
#: Every protocol version this module speaks.
PROTOCOLS = (1, 2)
#: Exit code of a failure that must not be retried (sysexits' EX_CONFIG).
EX_CONFIG = 78
#: The standard commands ductile sends (a v2 manifest may define more).
COMMANDS = ("poll", "handle", "health", "init")
LOG_LEVELS = ("debug", "info", "warn", "error")
#: ductile stops reading stdout beyond this (and fails the job).
STDOUT_LIMIT = 10 * 1024 * 1024
#: ductile refuses responses nested deeper than this.
MAX_DEPTH = 200
#: Longest error message sent (ductile keeps 4000 characters of it).
MAX_ERROR_CHARS = 4000

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

_UTC = timezone.utc


class _Missing:
    """The "no default" marker of the config getters."""

    def __repr__(self) -> str:
        return "<required>"


_MISSING = _Missing()


# ============================================================================ errors


class Fail(Exception):
    """Raise in a handler to answer an error with your own message.

    ``retry=True`` (the default): ductile retries the job with backoff; the
    process exits 0. ``retry=False``: the job is not retried (it goes dead);
    the process exits 78.
    """

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.message = str(message)
        self.retry = bool(retry)


class ConfigError(Fail):
    """The plugin's config is missing a key or has one of the wrong type. Never retried."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry=False)


class RequestError(Fail):
    """The request on stdin is not a valid request (protocol 1 or 2). Never retried."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry=False)


class Terminated(BaseException):
    """SIGTERM arrived (ductile's deadline passed) while :func:`run` was running the handler.

    A :class:`BaseException`, like :class:`KeyboardInterrupt`, so that an
    ``except Exception`` in the handler does not swallow it; ``finally``
    blocks run. :func:`run` still answers (an error) before exiting 143.
    """


# ============================================================================ values


class _Value:
    """Read-only attributes: set once in ``__init__`` through :meth:`_init`."""

    __slots__: tuple[str, ...] = ()

    def _init(self, **fields: object) -> None:
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__ if n != "raw")
        return f"{type(self).__name__}({shown})"


class Event(_Value):
    """The event a ``handle`` job reacts to (the envelope ductile built, D8).

    ``payload`` is what the emitter sent: a JSON object (a ``dict``) for
    plugin events; for a webhook it is the request's JSON body, whatever its
    shape. ``headers`` holds a webhook's request headers (lower-case names),
    empty otherwise. ``raw`` is the envelope as received, for fields this
    module does not know.
    """

    __slots__ = ("dedupe_key", "event_id", "headers", "payload", "raw", "source", "timestamp", "type")

    type: str
    payload: Any
    #: The emitting plugin's name, ``webhook:<path>``, ``cli``, or a schedule's key.
    source: str
    event_id: str
    #: When the event was emitted (UTC), None if the envelope had no valid timestamp.
    timestamp: datetime | None
    dedupe_key: str | None
    headers: Mapping[str, str]
    raw: Mapping[str, Any]

    def __init__(
        self,
        *,
        type: str,
        payload: Any = None,
        source: str = "",
        event_id: str = "",
        timestamp: datetime | None = None,
        dedupe_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        raw: Mapping[str, Any] | None = None,
    ) -> None:
        self._init(
            type=type,
            payload={} if payload is None else payload,
            source=source,
            event_id=event_id,
            timestamp=timestamp,
            dedupe_key=dedupe_key,
            headers=MappingProxyType(dict(headers or {})),
            raw=MappingProxyType(dict(raw or {})),
        )


class Request(_Value):
    """One request from ductile (read it with :func:`read`, or let :func:`run` pass it).

    ``config`` (the operator's settings for this plugin) and ``state`` (what
    the plugin saved last time) are read-only mappings at the top level: the
    way to change state is ``ok(state_updates=...)``.
    """

    __slots__ = (
        "attempt",
        "command",
        "config",
        "context",
        "deadline_at",
        "event",
        "job_id",
        "payload",
        "plugin",
        "protocol",
        "raw",
        "state",
    )

    #: 1 or 2: the protocol ductile speaks with this plugin.
    protocol: int
    #: ``poll``, ``handle``, ``health``, ``init``, or a command of the plugin's v2 manifest.
    command: str
    job_id: str
    config: Mapping[str, Any]
    state: Mapping[str, Any]
    #: The event of a ``handle`` request; None for the other commands.
    event: Event | None
    #: When ductile stops the process (SIGTERM), in UTC. None only for a
    #: hand-written request without one; ductile always sends it.
    deadline_at: datetime | None
    #: The plugin's name (``$DUCTILE_PLUGIN``), '' when run by hand.
    plugin: str
    #: Which run of this job this is, from 1 (``$DUCTILE_ATTEMPT``; 1 when run by hand).
    attempt: int
    #: The request as received.
    raw: Mapping[str, Any]
    #: Protocol 2: the job's payload (a schedule's ``payload``, ``ductile run --payload``) for
    #: every command but ``handle``; empty otherwise.
    payload: Mapping[str, Any]
    #: Protocol 2: ``ductile_plugin`` (this instance's name, an alias's own) and, for a routed
    #: job, ``ductile_upstream_plugin`` and ``ductile_route_depth``; empty under protocol 1.
    context: Mapping[str, Any]

    def __init__(
        self,
        *,
        command: str,
        job_id: str = "",
        config: Mapping[str, Any] | None = None,
        state: Mapping[str, Any] | None = None,
        event: Event | None = None,
        deadline_at: datetime | None = None,
        plugin: str = "",
        attempt: int = 1,
        protocol: int = PROTOCOL,
        raw: Mapping[str, Any] | None = None,
        payload: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        self._init(
            protocol=protocol,
            command=command,
            job_id=job_id,
            config=MappingProxyType(dict(config or {})),
            state=MappingProxyType(dict(state or {})),
            event=event,
            deadline_at=deadline_at,
            plugin=plugin,
            attempt=attempt,
            raw=MappingProxyType(dict(raw or {})),
            payload=MappingProxyType(dict(payload or {})),
            context=MappingProxyType(dict(context or {})),
        )

    def seconds_left(self, now: datetime | None = None) -> float:
        """Seconds until the deadline (negative once it passed; infinite without one)."""
        if self.deadline_at is None:
            return float("inf")
        current = now if now is not None else datetime.now(_UTC)
        return (self.deadline_at - current).total_seconds()

    def require_event(self) -> Event:
        """The event of a ``handle`` request; a :class:`RequestError` when there is none."""
        if self.event is None:
            raise RequestError(f"a '{self.command}' request carries no event")
        return self.event

    # -- typed config getters: a missing key or a wrong type is a ConfigError (exit 78)

    if TYPE_CHECKING:

        @overload
        def config_str(self, key: str) -> str: ...
        @overload
        def config_str(self, key: str, default: _T) -> str | _T: ...

    def config_str(self, key: str, default: object = _MISSING) -> object:
        """``config[key]`` as text. Numbers are refused: quote them in YAML (``"0123"``)."""
        value = self._config(key, default)
        if value is default:
            return value
        if not isinstance(value, str):
            scalar = isinstance(value, (int, float))  # bools too: YAML read `true` or `12345` as a value
            raise self._wrong(key, "text", value, hint="; write it in quotes in the YAML" if scalar else "")
        return value

    if TYPE_CHECKING:

        @overload
        def config_int(self, key: str) -> int: ...
        @overload
        def config_int(self, key: str, default: _T) -> int | _T: ...

    def config_int(self, key: str, default: object = _MISSING) -> object:
        """``config[key]`` as a whole number; text of digits (e.g. from ``${PORT}``) is accepted."""
        value = self._config(key, default)
        if value is default:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            text = value.strip()
            if text.lstrip("+-").isdigit() and text.isascii() and len(text) <= 100:
                return int(text)
        raise self._wrong(key, "a whole number", value)

    if TYPE_CHECKING:

        @overload
        def config_float(self, key: str) -> float: ...
        @overload
        def config_float(self, key: str, default: _T) -> float | _T: ...

    def config_float(self, key: str, default: object = _MISSING) -> object:
        """``config[key]`` as a number; text of a finite number is accepted."""
        value = self._config(key, default)
        if value is default:
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                pass
            else:
                if number - number == 0:  # finite: not inf, not nan
                    return number
        raise self._wrong(key, "a number", value)

    if TYPE_CHECKING:

        @overload
        def config_bool(self, key: str) -> bool: ...
        @overload
        def config_bool(self, key: str, default: _T) -> bool | _T: ...

    def config_bool(self, key: str, default: object = _MISSING) -> object:
        """``config[key]`` as true/false; the text true/false/yes/no/on/off/1/0 is accepted."""
        value = self._config(key, default)
        if value is default or isinstance(value, bool):
            return value
        if isinstance(value, str):
            word = value.strip().lower()
            if word in ("true", "yes", "on", "1"):
                return True
            if word in ("false", "no", "off", "0"):
                return False
        raise self._wrong(key, "true or false", value)

    def _config(self, key: str, default: object) -> object:
        value = self.config.get(key)
        if value is not None:
            return value
        if default is not _MISSING:
            return default
        where = f"plugins.{self.plugin}.config" if self.plugin else "the plugin's config"
        raise ConfigError(f"config key '{key}' is missing: set it under {where} in the ductile config")

    def _wrong(self, key: str, expected: str, value: object, *, hint: str = "") -> ConfigError:
        # The value itself is never shown: config holds secrets, and errors are logged.
        return ConfigError(f"config key '{key}' must be {expected}, not {_json_kind(value)}{hint}")


class Response(_Value):
    """An answer, built with :func:`ok` or :func:`error`."""

    __slots__ = ("error", "events", "logs", "result", "retry", "state_updates", "status")

    #: ``ok`` or ``error``.
    status: str
    error: str | None
    retry: bool
    events: tuple[dict[str, Any], ...]
    state_updates: dict[str, Any]
    logs: tuple[dict[str, str], ...]
    #: What the run produced, as text (kept with the run; protocol 2 copies it into the events).
    result: str | None

    def __init__(
        self,
        *,
        status: str,
        error: str | None = None,
        retry: bool = True,
        events: tuple[dict[str, Any], ...] = (),
        state_updates: dict[str, Any] | None = None,
        logs: tuple[dict[str, str], ...] = (),
        result: str | None = None,
    ) -> None:
        if status not in ("ok", "error"):
            raise ValueError(f"status must be 'ok' or 'error', not {status!r}")
        self._init(
            status=status,
            error=error,
            retry=bool(retry),
            events=tuple(events),
            state_updates=dict(state_updates or {}),
            logs=tuple(logs),
            result=result,
        )

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def exit_code(self) -> int:
        """0, or 78 for an error that must not be retried."""
        return EXIT_OK if self.ok or self.retry else EX_CONFIG

    def to_json(self, protocol: int = PROTOCOL) -> dict[str, Any]:
        """The response object as written to stdout in ``protocol`` (empty fields left out)."""
        body: dict[str, Any] = {"protocol": protocol, "status": self.status}
        if not self.ok:
            body["error"] = self.error or ""
            body["retry"] = self.retry
        if self.result is not None:
            body["result"] = self.result
        if self.events:
            body["events"] = [dict(e) for e in self.events]
        if self.state_updates:
            body["state_updates"] = dict(self.state_updates)
        if self.logs:
            body["logs"] = [dict(line) for line in self.logs]
        return body

    def _with_logs_first(self, lines: Iterable[dict[str, str]]) -> Response:
        extra = tuple(lines)
        if not extra:
            return self
        return Response(
            status=self.status,
            error=self.error,
            retry=self.retry,
            events=self.events,
            state_updates=self.state_updates,
            logs=extra + self.logs,
            result=self.result,
        )


class Reply(_Value):
    """What :func:`respond` produced: the bytes for stdout and the exit code."""

    __slots__ = ("body", "exit_code", "response")

    #: The JSON object written (a fresh dict).
    response: dict[str, Any]
    #: Its UTF-8 encoding, one line.
    body: bytes
    exit_code: int

    def __init__(self, *, response: dict[str, Any], body: bytes, exit_code: int) -> None:
        self._init(response=response, body=body, exit_code=exit_code)

    @property
    def ok(self) -> bool:
        return self.response.get("status") == "ok" and self.exit_code == EXIT_OK


# ============================================================================ logs


class Log:
    """Log lines collected into the response (stored with the job, logged by ductile).

    Use the module's :data:`log`: ``log.info("fetched 12 items")``. Lines are
    kept in order and sent with the answer, ok or error (also when the
    handler crashes). They are not printed: for free-form diagnostics write to
    stderr, which ductile also keeps (its last 64 KiB) and logs.
    """

    def __init__(self) -> None:
        self._lines: list[dict[str, str]] = []

    def debug(self, message: object) -> None:
        self._add("debug", message)

    def info(self, message: object) -> None:
        self._add("info", message)

    def warn(self, message: object) -> None:
        self._add("warn", message)

    warning = warn

    def error(self, message: object) -> None:
        self._add("error", message)

    @property
    def lines(self) -> list[dict[str, str]]:
        """The lines collected so far (a copy)."""
        return [dict(line) for line in self._lines]

    def clear(self) -> None:
        self._lines.clear()

    def _add(self, level: str, message: object) -> None:
        self._lines.append({"level": level, "message": _clean_text(str(message))})

    def _drain(self) -> list[dict[str, str]]:
        lines, self._lines = self._lines, []
        return lines


#: The log of the running request.
log = Log()


# ============================================================================ building answers


def event(
    type: str, payload: Mapping[str, Any] | None = None, dedupe_key: str | None = None
) -> dict[str, Any]:
    """One event for ``ok(events=[...])``.

    ``payload`` is a JSON object. ``dedupe_key`` (optional) is inherited by
    the ``handle`` jobs the event routes to: while such a job with the same
    key is queued, or succeeded within the dedupe window (24 h by default),
    no second one is made for the same plugin.
    """
    if not isinstance(type, str) or not type:
        raise ValueError(f"an event type must be a non-empty string, not {type!r}")
    body: dict[str, Any] = {"type": type}
    if payload is not None:
        if not isinstance(payload, Mapping):
            raise TypeError(f"event payload must be a mapping (a JSON object), not {_json_kind(payload)}")
        body["payload"] = dict(payload)
    else:
        body["payload"] = {}
    if dedupe_key is not None:
        if not isinstance(dedupe_key, str) or not dedupe_key:
            raise ValueError(f"a dedupe_key must be a non-empty string, not {dedupe_key!r}")
        body["dedupe_key"] = dedupe_key
    return body


_EVENT_KEYS = frozenset({"type", "payload", "dedupe_key"})


def _checked_event(index: int, raw: object) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise TypeError(f"events[{index}] must be a mapping (use event(...)), not {_json_kind(raw)}")
    unknown = sorted(str(k) for k in raw if k not in _EVENT_KEYS)
    if unknown:
        raise ValueError(
            f"events[{index}] has unknown key(s) {', '.join(unknown)}; known: type, payload, dedupe_key"
        )
    return event(raw.get("type"), raw.get("payload"), raw.get("dedupe_key"))  # type: ignore[arg-type]


def _checked_log(index: int, raw: object) -> dict[str, str]:
    if isinstance(raw, str):
        return {"level": "info", "message": _clean_text(raw)}
    if not isinstance(raw, Mapping):
        raise TypeError(
            f"logs[{index}] must be text or {{'level': ..., 'message': ...}}, not {_json_kind(raw)}"
        )
    level = raw.get("level", "info")
    if level not in LOG_LEVELS:
        raise ValueError(f"logs[{index}] level must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
    message = raw.get("message")
    if not isinstance(message, str):
        raise TypeError(f"logs[{index}] message must be text, not {_json_kind(message)}")
    return {"level": level, "message": _clean_text(message)}


def ok(
    events: Iterable[Mapping[str, Any]] = (),
    state_updates: Mapping[str, Any] | None = None,
    logs: Iterable[str | Mapping[str, str]] = (),
    result: str | None = None,
) -> Response:
    """A success.

    ``result`` (text) says what the run produced: ductile keeps it with the run
    (``ductile job``) and, under protocol 2, copies it into each event's
    ``payload.result`` that does not set one.
    ``events`` (made with :func:`event`) are routed to other plugins.
    ``state_updates`` is merged into the plugin's state key by key (a key you
    send replaces the stored one whole; keys you do not send stay as they
    are). ``logs`` are text (info) or ``{"level": "info|warn|error",
    "message": ...}`` (``debug`` too); lines from :data:`log` come before them.
    """
    if isinstance(events, (str, bytes, Mapping)):
        raise TypeError("events must be a list of events (use [event(...)])")
    checked_events = tuple(_checked_event(i, e) for i, e in enumerate(events))
    updates: dict[str, Any] = {}
    if state_updates is not None:
        if not isinstance(state_updates, Mapping):
            raise TypeError(f"state_updates must be a mapping, not {_json_kind(state_updates)}")
        for key in state_updates:
            if not isinstance(key, str):
                raise TypeError(f"state_updates keys must be text, not {key!r}")
        updates = dict(state_updates)
    if isinstance(logs, (str, bytes, Mapping)):
        raise TypeError("logs must be a list of lines")
    checked_logs = tuple(_checked_log(i, line) for i, line in enumerate(logs))
    if result is not None and not isinstance(result, str):
        raise TypeError(f"result must be text, not {_json_kind(result)}")
    return Response(
        status="ok",
        events=checked_events,
        state_updates=updates,
        logs=checked_logs,
        result=None if result is None else _clean_text(result),
    )


def error(message: str, *, retry: bool = True, logs: Iterable[str | Mapping[str, str]] = ()) -> Response:
    """A failure. ``retry=True``: ductile retries with backoff; ``False``: the job goes dead.

    An error answer changes no state and emits no events.
    """
    if isinstance(logs, (str, bytes, Mapping)):
        raise TypeError("logs must be a list of lines")
    text = _clip(_clean_text(str(message)).strip()) or "the plugin reported an error without a message"
    return Response(
        status="error",
        error=text,
        retry=bool(retry),
        logs=tuple(_checked_log(i, line) for i, line in enumerate(logs)),
    )


# ============================================================================ reading requests


def parse_request(
    raw: bytes | str | Mapping[str, Any], *, environ: Mapping[str, str] | None = None
) -> Request:
    """A :class:`Request` from the JSON ductile writes (or a dict of it).

    Fields missing from a hand-written request get defaults (``{}`` config
    and state, no deadline); a field of the wrong type, or another protocol
    version, is a :class:`RequestError`. ``environ`` (default ``os.environ``)
    supplies ``DUCTILE_PLUGIN`` and ``DUCTILE_ATTEMPT``.
    """
    body = _decode_object(raw) if isinstance(raw, (bytes, bytearray, str)) else raw
    if not isinstance(body, Mapping):
        raise RequestError(f"the request must be a JSON object, not {_json_kind(body)}")
    env = os.environ if environ is None else environ
    protocol = _request_protocol(body)
    command = body.get("command")
    if not isinstance(command, str) or not command:
        raise RequestError("the request has no 'command' (poll, handle, health, init or the manifest's own)")
    job_id = _field(body, "job_id", str, "text", "")
    config = _field(body, "config", Mapping, "an object", {})
    state = _field(body, "state", Mapping, "an object", {})
    payload = _field(body, "payload", Mapping, "an object", {})
    context = _field(body, "context", Mapping, "an object", {})
    deadline_text = _field(body, "deadline_at", str, "an ISO-8601 time", None)
    deadline: datetime | None = None
    if deadline_text is not None:
        try:
            deadline = _parse_time(deadline_text)
        except ValueError:
            raise RequestError(
                f"request field 'deadline_at' is not an ISO-8601 time: {deadline_text[:60]!r}"
            ) from None
    raw_event = body.get("event")
    the_event: Event | None = None
    if raw_event is not None:
        the_event = _parse_event(raw_event)
    elif command == "handle":
        raise RequestError("a 'handle' request must carry an 'event'")
    try:
        attempt = max(1, int(env.get("DUCTILE_ATTEMPT", "1")))
    except ValueError:
        attempt = 1
    return Request(
        protocol=protocol,
        command=command,
        job_id=job_id,
        config=config,
        state=state,
        event=the_event,
        deadline_at=deadline,
        plugin=env.get("DUCTILE_PLUGIN", "") or str(context.get("ductile_plugin") or ""),
        attempt=attempt,
        raw=body,
        payload=payload,
        context=context,
    )


def _request_protocol(body: Mapping[str, Any]) -> int:
    """The request's ``protocol`` (1 when a hand-written request leaves it out)."""
    protocol = body.get("protocol", PROTOCOL)
    if protocol is None:
        return PROTOCOL
    if type(protocol) is not int or protocol not in PROTOCOLS:
        speaks = " and ".join(str(p) for p in PROTOCOLS)
        raise RequestError(f"the request speaks protocol {protocol!r}; this module speaks {speaks}")
    return protocol


def _parse_event(raw: object) -> Event:
    if not isinstance(raw, Mapping):
        raise RequestError(f"request field 'event' must be an object, not {_json_kind(raw)}")
    where = "event"
    etype = _field(raw, "type", str, "text", "", where=where)
    source = _field(raw, "source", str, "text", "", where=where)
    event_id = _field(raw, "event_id", str, "text", "", where=where)
    key = _field(raw, "dedupe_key", str, "text", None, where=where)
    headers = _field(raw, "headers", Mapping, "an object", {}, where=where)
    stamp_text = _field(raw, "timestamp", str, "text", None, where=where)
    stamp: datetime | None = None
    if stamp_text is not None:
        try:
            stamp = _parse_time(stamp_text)
        except ValueError:
            stamp = None
    return Event(
        type=etype,
        payload=raw.get("payload"),
        source=source,
        event_id=event_id,
        timestamp=stamp,
        dedupe_key=key,
        headers={str(k): str(v) for k, v in headers.items()},
        raw=raw,
    )


def _field(
    body: Mapping[str, Any], name: str, kind: type, what: str, default: Any, *, where: str = ""
) -> Any:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, kind):
        path = f"{where}.{name}" if where else name
        raise RequestError(f"request field '{path}' must be {what}, not {_json_kind(value)}")
    return value


def _decode_object(raw: bytes | bytearray | str) -> object:
    if isinstance(raw, (bytes, bytearray)):
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as e:
            raise RequestError(f"the request is not valid UTF-8 (byte {e.start})") from None
    else:
        text = raw
    if not text.strip():
        raise RequestError("the request is empty: expected one JSON object on stdin")
    try:
        return json.loads(text)
    except RecursionError:
        raise RequestError("the request is nested too deeply") from None
    except ValueError as e:
        raise RequestError(f"the request is not valid JSON: {e}") from None


_request_cache: list[Request] = []


def read() -> Request:
    """The request: stdin is read and parsed on the first call, later calls return the same one.

    A request that cannot be parsed raises :class:`RequestError`. Under
    :func:`run` this returns the request being handled.
    """
    if not _request_cache:
        _request_cache.append(parse_request(_read_stdin()))
    return _request_cache[0]


def _read_stdin() -> bytes:
    stream = sys.stdin
    if stream is None:
        raise RequestError("no stdin: expected the request as one JSON object")
    buffer = getattr(stream, "buffer", None)
    data = buffer.read() if buffer is not None else stream.read()
    return data if isinstance(data, bytes) else data.encode("utf-8", "surrogateescape")


# ============================================================================ answering


def respond(
    handler: Handler,
    request: bytes | str | Mapping[str, Any] | Request,
    *,
    stderr: TextIO | None = None,
) -> Reply:
    """Run ``handler`` on ``request`` and return the answer; never raises.

    The pure part of :func:`run` (no stdin, no stdout, no exit), also the way
    to test a plugin without ductile::

        reply = respond(poll, {"command": "poll", "config": {"step": 2}})
        assert reply.response["state_updates"] == {"count": 2}

    ``handler`` is a function called for every command, a mapping of
    command name to function, or an object whose ``poll``/``handle``/
    ``health``/``init`` methods are called. A handler returns :func:`ok`,
    :func:`error` or None (which means ``ok()``). Tracebacks go to
    ``stderr`` (default ``sys.stderr``).
    """
    err = stderr if stderr is not None else sys.stderr
    try:
        return _respond(handler, request, err)
    except BaseException as e:  # anything at all, even a signal while answering
        return _last_resort(e)


def _respond(handler: Handler, request: bytes | str | Mapping[str, Any] | Request, err: TextIO) -> Reply:
    log.clear()
    parsed: Request | None = None
    previous = list(_request_cache)
    try:
        parsed = request if isinstance(request, Request) else parse_request(request)
        function = _handler_for(handler, parsed.command)
        _request_cache[:] = [parsed]
        result = function(parsed)
        response = _from_result(result, parsed.command)
        code = response.exit_code
    except Fail as e:
        response = error(e.message, retry=e.retry)
        code = response.exit_code
    except Exception as e:
        _print_traceback(e, err)
        response = error(_describe_exception(e))
        code = EXIT_CRASH
    except KeyboardInterrupt:
        response = error("interrupted (SIGINT) before the plugin answered")
        code = EXIT_SIGINT
    except Terminated:
        response = error(_terminated_message(parsed))
        code = EXIT_SIGTERM
    except SystemExit as e:
        # What the process would have exited with (0-255); a "successful" exit without an answer fails.
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        code = status % 256 or EXIT_CRASH
        response = error(
            f"the plugin called sys.exit({_clip(repr(e.code), 60)}) instead of answering",
            retry=code != EX_CONFIG,
        )
    except BaseException as e:  # GeneratorExit, a library's own BaseException...
        _print_traceback(e, err)
        response = error(_describe_exception(e))
        code = EXIT_CRASH
    finally:
        _request_cache[:] = previous
    return _finish(response, log._drain(), code, parsed.protocol if parsed is not None else PROTOCOL)


def _handler_for(handler: Handler, command: str) -> HandlerFunction:
    if isinstance(handler, type):
        raise TypeError(f"run() needs an instance of {handler.__name__}, not the class itself")
    if isinstance(handler, Mapping):
        found = handler.get(command)
        known = sorted(str(k) for k in handler)
    elif any(callable(getattr(handler, name, None)) for name in (*COMMANDS, command.replace("-", "_"))):
        # A custom command ``sync-all`` is the method ``sync_all``.
        found = getattr(handler, command.replace("-", "_"), None)
        known = [name for name in COMMANDS if callable(getattr(handler, name, None))]
    elif callable(handler):
        return handler
    else:
        raise TypeError(
            f"a handler must be a function, a mapping of command to function or an object with "
            f"poll/handle/health/init methods, not {type(handler).__name__}"
        )
    if not callable(found):
        handles = ", ".join(known) or "nothing"
        raise Fail(f"this plugin has no '{command}' handler (it handles: {handles})", retry=False)
    return found  # type: ignore[no-any-return]


def _from_result(result: object, command: str) -> Response:
    if result is None:
        return ok()
    if isinstance(result, Response):
        return result
    raise TypeError(
        f"the {command} handler returned {type(result).__name__}; return ok(...), error(...) or None"
    )


def _finish(
    response: Response, collected: list[dict[str, str]], code: int, protocol: int = PROTOCOL
) -> Reply:
    full = response._with_logs_first(collected)
    try:
        body = _encode(full.to_json(protocol))
    except Exception as e:
        # What the handler returned cannot be sent: say so instead (keeping the logs).
        failed = error(f"the plugin's response could not be sent: {_describe_exception(e, where=False)}")
        full = failed._with_logs_first(list(full.logs))
        body = _encode(full.to_json(protocol))
        code = EXIT_CRASH
    if len(body) > STDOUT_LIMIT:
        full = error(
            f"the plugin's response is {len(body):,} bytes, over ductile's {STDOUT_LIMIT:,}-byte stdout limit"
        )
        body = _encode(full.to_json(protocol))
        code = EXIT_CRASH
    return Reply(response=json.loads(body), body=body, exit_code=code)


def _encode(body: dict[str, Any]) -> bytes:
    if _deeper_than(body, MAX_DEPTH):
        raise ValueError(f"the response is nested more than {MAX_DEPTH} levels deep")
    text = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_json_default)
    # strict UTF-8: a lone surrogate (bad text from a decode with errors="surrogateescape") fails here
    return text.encode("utf-8") + b"\n"


def _json_default(value: object) -> object:
    if isinstance(value, Mapping):  # the read-only config/state mappings, and the like
        return dict(value)
    if isinstance(value, (set, frozenset)):
        raise TypeError(f"a {type(value).__name__} is not JSON; send a list")
    raise TypeError(f"a {type(value).__name__} is not JSON")


def _last_resort(e: BaseException) -> Reply:
    code = EXIT_SIGTERM if isinstance(e, Terminated) else EXIT_CRASH
    message = _clip(_clean_text(f"the plugin failed while answering: {_describe_exception(e, where=False)}"))
    body = {"protocol": PROTOCOL, "status": "error", "error": message, "retry": True}
    raw = json.dumps(body, ensure_ascii=True).encode("ascii") + b"\n"
    return Reply(response=body, body=raw, exit_code=code)


def reply(response: Response) -> NoReturn:
    """Write ``response`` (with :data:`log`'s lines) as the one JSON object on stdout, and exit.

    For plugins that call :func:`read` themselves rather than :func:`run`.
    Exits 0, or 78 for an error with ``retry=False``.
    """
    protocol = _request_cache[0].protocol if _request_cache else PROTOCOL
    answer = _finish(response, log._drain(), response.exit_code, protocol)
    _write_stdout(answer.body, None)
    sys.exit(answer.exit_code)


def run(handler: Handler) -> NoReturn:
    """Read the request, call the handler, write exactly one JSON object on stdout, exit.

    While the handler runs, ``sys.stdout`` is ``sys.stderr`` and file
    descriptor 1 points at stderr too (so print(), and programs the handler
    starts, cannot corrupt the answer); stdout stays that way until the
    process exits. The answer goes to the real stdout at the end.

    Exit codes: 0 ok or a retryable error you chose; 78 an error that must
    not be retried (``Fail(..., retry=False)``, a :class:`ConfigError`, an
    unusable request, a command without a handler); 1 an uncaught exception
    (retried; traceback on stderr); 143 SIGTERM (deadline), 130 SIGINT.
    """
    real_stdout = _take_stdout()
    calm, restore = _raise_on_sigterm()
    try:
        try:
            raw = _read_stdin()
        except Terminated as e:
            answer = _last_resort(e)
        except BaseException as e:
            why = f"could not read the request: {_describe_exception(e, where=False)}"
            answer = _finish(error(why), [], EXIT_CRASH)
        else:
            answer = respond(handler, raw)
    finally:
        calm()  # a SIGTERM now must not cut the answer short
    _write_stdout(answer.body, real_stdout)
    restore()
    sys.exit(answer.exit_code)


def _take_stdout() -> int | None:
    """Point fd 1 and ``sys.stdout`` at stderr; return a descriptor of the real stdout."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    try:
        saved = os.dup(1)
    except OSError:
        saved = None
    if saved is not None:
        try:  # noqa: SIM105 - contextlib is not worth its import here
            os.dup2(2, 1)
        except OSError:  # no stderr to point at: leave fd 1 as it is
            pass
    if sys.stderr is not None:
        sys.stdout = sys.stderr
    return saved


def _write_stdout(body: bytes, fd: int | None) -> None:
    if fd is None:
        try:
            sys.stdout.flush()
            fd = sys.stdout.fileno()
        except (AttributeError, OSError, ValueError):
            sys.stdout.write(body.decode("utf-8"))
            sys.stdout.flush()
            return
        owned = False
    else:
        owned = True
    try:
        view = memoryview(body)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    except OSError:  # ductile went away (EPIPE): nothing left to tell
        pass
    finally:
        if owned:
            os.close(fd)


def _raise_on_sigterm() -> tuple[Callable[[], None], Callable[[], None]]:
    """Turn the first SIGTERM into :class:`Terminated`.

    Returns ``calm`` (from now on SIGTERM does nothing: the answer is being
    written) and ``restore`` (the previous handler again).
    """
    fired: list[bool] = []

    def on_term(signum: int, frame: FrameType | None) -> None:
        if not fired:
            fired.append(True)
            raise Terminated("SIGTERM")

    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except (ValueError, OSError):  # not the main thread: leave signals alone
        return (lambda: None), (lambda: None)

    def calm() -> None:
        fired.append(True)

    def restore() -> None:
        try:  # noqa: SIM105 - contextlib is not worth its import here
            signal.signal(signal.SIGTERM, previous)
        except (ValueError, OSError, TypeError):
            pass

    return calm, restore


def _terminated_message(request: Request | None) -> str:
    text = "stopped by SIGTERM before the plugin answered"
    if request is not None and request.deadline_at is not None:
        left = request.seconds_left()
        if left <= 0:
            text += f" ({-left:.1f} s after the deadline)"
        else:
            text += f" ({left:.1f} s before the deadline)"
    return text


def _print_traceback(e: BaseException, err: TextIO) -> None:
    try:
        import traceback  # noqa: PLC0415 - only when something failed

        traceback.print_exception(type(e), e, e.__traceback__, file=err)
        err.flush()
    except Exception:  # noqa: S110 - the answer matters more than the traceback
        pass


def _describe_exception(e: BaseException, *, where: bool = True) -> str:
    """``ValueError: bad input (at run.py:12)``."""
    text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    if where and e.__traceback__ is not None:
        text += f" (at {_location(e.__traceback__)})"
    return _clip(_clean_text(text))


def _location(tb: TracebackType) -> str:
    """Where the plugin's own code was when it failed: ``run.py:12``.

    The deepest frame in a file under the plugin's folder (the folder of the
    script that was started), other than this module; a failure inside a
    library (urllib, json...) is thereby reported at the plugin's line that
    called it. Without such a frame: the deepest frame.
    """
    frames: list[tuple[str, int]] = []
    current: TracebackType | None = tb
    while current is not None:
        frames.append((current.tb_frame.f_code.co_filename, current.tb_lineno))
        current = current.tb_next
    script = sys.argv[0] if sys.argv and sys.argv[0] not in ("", "-c", "-m") else ""
    home = os.path.dirname(os.path.abspath(script)) if script else ""
    this = os.path.abspath(__file__)
    own = [
        (os.path.relpath(os.path.abspath(name), home), line)
        for name, line in frames
        if home and os.path.abspath(name).startswith(home + os.sep) and os.path.abspath(name) != this
    ]
    name, line = own[-1] if own else (os.path.basename(frames[-1][0]), frames[-1][1])
    return f"{name}:{line}"


# ============================================================================ OAuth (D10)


def tokens_expired(
    state: Mapping[str, Any], skew_seconds: float = 60, *, now: datetime | None = None
) -> bool:
    """Must the plugin refresh its OAuth tokens before using them?

    True when ``state`` has no ``access_token``, or no usable ``expires_at``
    (an ISO-8601 time, or seconds since the epoch), or the token expires
    within ``skew_seconds``. Tokens live in the plugin's state; refresh, then
    return every token field at once (see :func:`token_state`).
    """
    token = state.get("access_token")
    if not isinstance(token, str) or not token:
        return True
    expires = state.get("expires_at")
    try:
        if isinstance(expires, str):
            at = _parse_time(expires)
        elif isinstance(expires, (int, float)) and not isinstance(expires, bool):
            at = datetime.fromtimestamp(expires, _UTC)
        else:
            return True
    except (ValueError, OverflowError, OSError):
        return True
    current = now if now is not None else datetime.now(_UTC)
    return at - timedelta(seconds=skew_seconds) <= current


def token_state(
    access_token: str,
    *,
    refresh_token: str | None,
    expires_in: float | None,
    now: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Every token field at once, for ``ok(state_updates=...)``.

    ``expires_at`` is computed from ``expires_in`` (seconds), or null when
    the provider gave none, so an old expiry never outlives its token.
    ``refresh_token=None`` (the provider did not send a new one) leaves the
    stored refresh token as it is; a new one replaces it. ``extra`` fields
    (``scope``, ``token_type``...) are stored alongside.
    """
    if not isinstance(access_token, str) or not access_token:
        raise ValueError("access_token must be a non-empty string")
    fields: dict[str, Any] = {"access_token": access_token}
    if refresh_token is not None:
        fields["refresh_token"] = refresh_token
    if expires_in is None:
        fields["expires_at"] = None
    else:
        current = now if now is not None else datetime.now(_UTC)
        fields["expires_at"] = _iso(current + timedelta(seconds=float(expires_in)))
    fields.update(extra)
    return fields


# ============================================================================ small helpers


def _iso(at: datetime) -> str:
    """``2026-01-01T07:30:00Z``, in UTC, whole seconds."""
    return at.astimezone(_UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str) -> datetime:
    """An aware ISO-8601 time, in UTC (``Z`` and 1-9 fraction digits accepted on any Python)."""
    value = text.strip()
    if value[-1:] in ("Z", "z"):
        value = value[:-1] + "+00:00"
    dot = value.find(".")
    if dot != -1:
        end = dot + 1
        while end < len(value) and value[end].isdigit():
            end += 1
        digits = value[dot + 1 : end]
        if not digits:
            raise ValueError(f"no digits after the dot in {text!r}")
        value = value[:dot] + "." + (digits + "000000")[:6] + value[end:]
    at = datetime.fromisoformat(value)
    if at.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return at.astimezone(_UTC)


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return f"a {type(value).__name__}"


def _clean_text(text: str) -> str:
    """Text that encodes to UTF-8 (lone surrogates replaced)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _clip(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _deeper_than(value: object, limit: int) -> bool:
    """Does ``value`` nest mappings/lists more than ``limit`` levels? (No recursion.)"""
    level: list[object] = [value]
    depth = 1
    while level:
        if depth > limit:
            return True
        below: list[object] = []
        for node in level:
            if isinstance(node, Mapping):
                children: list[object] = list(node.values())
            elif isinstance(node, (list, tuple)):
                children = list(node)
            else:
                continue
            below.extend(c for c in children if isinstance(c, (Mapping, list, tuple)))
        level = below
        depth += 1
    return False
