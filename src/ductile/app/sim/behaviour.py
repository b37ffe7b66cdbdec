"""What a simulated plugin does when it runs: :class:`Behaviour` and its compact syntax."""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import attrs

from ductile.domain.errors import DuctileError, UnitError
from ductile.domain.job import Command
from ductile.domain.quantities import format_duration, parse_duration


class BehaviourError(DuctileError):
    """A behaviour (or a ``plugin=behaviour`` assignment) written wrongly."""


class Kind(enum.StrEnum):
    OK = "ok"
    ERROR = "error"
    EXIT78 = "exit78"
    TIMEOUT = "timeout"
    GARBAGE = "garbage"
    SLOW = "slow"
    FLAKY = "flaky"


#: Kinds whose runs can succeed (and then update state and emit events).
SUCCESS_KINDS = frozenset({Kind.OK, Kind.SLOW, Kind.FLAKY})

_EVENT_TYPE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/]*")

_MILLISECOND = timedelta(milliseconds=1)

#: Bodies a ``garbage`` plugin prints: each one is a protocol error (D7).
GARBAGE: tuple[bytes, ...] = (
    b"",
    b"not json\n",
    b'{"status": "ok"',
    b'{"status": "ok"}{"status": "ok"}',
    b"[]",
    b'{"status": NaN}',
    b"\xff\xfe{}",
    b'{"status": "ok", "protocol": 2}',
)

BEHAVIOUR_SYNTAX = """\
A behaviour is a kind with options, separated by colons:
  ok                 succeeds; a poll emits one event of each type its routes listen for
  ok:emit=a.b+c.d    succeeds and emits these event types (ok:emit= emits nothing)
  ok:dedupe=2        events carry the dedupe key "<type>-<count // 2>"
  ok:took=5s         each run takes 5 s of simulated time (default 1s)
  slow:90s           succeeds after 90 s (a timeout when that is over the plugin's timeout)
  flaky:0.2          fails (retryably) with probability 0.2, else succeeds
  error              answers {"status": "error"} (retried); error:fatal adds "retry": false
  exit78             exits 78, EX_CONFIG (never retried)
  timeout            never answers: killed at the plugin's timeout (retried)
  garbage            prints something that is not one JSON response (a protocol error, retried)
Every success adds 1 to the plugin's state counter: state_updates {"count": count + 1}."""

#: A run's length unless a behaviour says otherwise (simulated time).
DEFAULT_DURATION = timedelta(seconds=1)


def _check_duration(value: timedelta, what: str) -> None:
    if value <= timedelta(0) or value % _MILLISECOND:
        raise BehaviourError(f"{what} must be a positive duration in whole milliseconds, not {value}")


@attrs.frozen(kw_only=True)
class Behaviour:
    """What a simulated plugin does when it is run (one command, or all of a plugin's)."""

    kind: Kind = Kind.OK
    #: Simulated time one run takes (``slow``: its defining duration).
    duration: timedelta = DEFAULT_DURATION
    #: ``flaky``: the probability that a run fails.
    rate: float = 0.0
    #: ``error``: answer ``"retry": false``.
    fatal: bool = False
    #: Success kinds: event types emitted by each success; None: a ``poll`` emits
    #: the types the plugin's routes listen for (so routed chains show up by
    #: default), other commands nothing.
    emit: tuple[str, ...] | None = None
    #: Success kinds, when > 0: events carry the dedupe key ``<type>-<count // dedupe>``.
    dedupe: int = 0

    def __attrs_post_init__(self) -> None:
        kind = Kind(self.kind)
        _check_duration(self.duration, f"the duration of '{kind}'")
        if kind is Kind.TIMEOUT and self.duration != DEFAULT_DURATION:
            raise BehaviourError("'timeout' takes the plugin's whole timeout: it has no duration")
        if kind is Kind.FLAKY:
            if not (isinstance(self.rate, int | float) and math.isfinite(self.rate) and 0 <= self.rate <= 1):
                raise BehaviourError(f"the rate of 'flaky' must be a number from 0 to 1, not {self.rate!r}")
        elif self.rate:
            raise BehaviourError(f"only 'flaky' has a failure rate, not '{kind}'")
        if self.fatal and kind is not Kind.ERROR:
            raise BehaviourError(f"only 'error' can be fatal, not '{kind}'")
        if kind not in SUCCESS_KINDS and (self.emit is not None or self.dedupe):
            raise BehaviourError(f"'{kind}' never succeeds, so it emits no events")
        for etype in self.emit or ():
            if not _EVENT_TYPE.fullmatch(etype):
                raise BehaviourError(f"{etype!r} is not an event type (letters, digits, '_', '.', '-', '/')")
        if self.dedupe < 0:
            raise BehaviourError(f"dedupe must be 0 or more, not {self.dedupe}")

    def __str__(self) -> str:
        """The compact text form: ``parse_behaviour(str(b)) == b``."""
        parts = [self.kind.value]
        if self.kind is Kind.SLOW:
            parts.append(format_duration(self.duration))
        elif self.kind is Kind.FLAKY:
            parts.append(repr(float(self.rate)))
        if self.fatal:
            parts.append("fatal")
        if self.emit is not None:
            parts.append("emit=" + "+".join(self.emit))
        if self.dedupe:
            parts.append(f"dedupe={self.dedupe}")
        if self.kind is not Kind.SLOW and self.duration != DEFAULT_DURATION:
            parts.append("took=" + format_duration(self.duration))
        return ":".join(parts)

    def describe(self, auto_emit: Sequence[str] = ()) -> str:
        """A phrase for people: ``fails 20% of runs, else ok (emits counter.ticked)``."""
        emits = tuple(auto_emit) if self.emit is None else self.emit
        tail = f" (emits {', '.join(emits)})" if emits else ""
        took = f", {format_duration(self.duration)} per run" if self.duration != DEFAULT_DURATION else ""
        if self.kind is Kind.OK:
            return f"ok{tail}{took}"
        if self.kind is Kind.SLOW:
            return f"ok after {format_duration(self.duration)}{tail}"
        if self.kind is Kind.FLAKY:
            return f"fails {self.rate:.0%} of runs, else ok{tail}{took}"
        if self.kind is Kind.ERROR:
            return f"always errors ({'not retried' if self.fatal else 'retried'}){took}"
        if self.kind is Kind.EXIT78:
            return f"exits 78 (EX_CONFIG, not retried){took}"
        if self.kind is Kind.TIMEOUT:
            return "never answers (timed out, retried)"
        return f"prints garbage (protocol error, retried){took}"


def _option_duration(text: str, what: str) -> timedelta:
    try:
        return parse_duration(text)
    except UnitError as e:
        raise BehaviourError(f"{what}: {e}") from None


def parse_behaviour(text: str) -> Behaviour:
    """The compact syntax (see :data:`BEHAVIOUR_SYNTAX`) into a :class:`Behaviour`."""
    parts = text.strip().split(":")
    kinds = ", ".join(k.value for k in Kind)
    try:
        kind = Kind(parts[0])
    except ValueError:
        raise BehaviourError(f"unknown behaviour {parts[0]!r} (known: {kinds})") from None
    rest = parts[1:]
    fields: dict[str, Any] = {"kind": kind}
    if kind in (Kind.SLOW, Kind.FLAKY):
        fields.update(_argument(kind, rest.pop(0) if rest else None))
    seen: set[str] = set()
    for option in rest:
        name, _, _ = option.partition("=")
        if name in seen:
            raise BehaviourError(f"option '{name}' is given twice in {text!r}")
        seen.add(name)
        fields.update(_option(kind, option))
    return Behaviour(**fields)


def _argument(kind: Kind, raw: str | None) -> dict[str, Any]:
    """The argument ``slow`` and ``flaky`` take first: a duration, a failure rate."""
    if kind is Kind.SLOW:
        if raw is None:
            raise BehaviourError("'slow' needs a duration: slow:90s")
        return {"duration": _option_duration(raw, "slow")}
    if raw is None:
        raise BehaviourError("'flaky' needs a failure rate from 0 to 1: flaky:0.2")
    try:
        return {"rate": float(raw)}
    except ValueError:
        raise BehaviourError(f"the rate of 'flaky' must be a number from 0 to 1, not {raw!r}") from None


def _option(kind: Kind, option: str) -> dict[str, Any]:
    """One ``name`` or ``name=value`` option into the fields it sets."""
    name, eq, value = option.partition("=")
    if name == "fatal" and not eq:
        return {"fatal": True}
    if name == "emit" and eq:
        emit = tuple(value.split("+")) if value else ()
        if "" in emit:
            raise BehaviourError(f"an empty event type in {option!r}")
        return {"emit": emit}
    if name == "dedupe" and eq:
        if not value.isdigit():
            raise BehaviourError(f"dedupe must be a whole number, not {value!r}")
        return {"dedupe": int(value)}
    if name == "took" and eq:
        if kind is Kind.SLOW:
            raise BehaviourError("'slow' already says how long a run takes")
        return {"duration": _option_duration(value, "took")}
    raise BehaviourError(
        f"unknown option {option!r} of '{kind}' (options: fatal, emit=a+b, dedupe=N, took=DURATION)"
    )


def behaviour_key(plugin: str, command: str | None = None) -> str:
    return plugin if command is None else f"{plugin}.{command}"


def parse_assignment(text: str) -> tuple[str, Behaviour]:
    """``plugin=behaviour`` or ``plugin.command=behaviour`` into (key, behaviour)."""
    key, eq, value = text.partition("=")
    key = key.strip()
    if not eq or not key:
        raise BehaviourError(
            f"{text!r}: write PLUGIN=BEHAVIOUR or PLUGIN.COMMAND=BEHAVIOUR, e.g. counter=flaky:0.2"
        )
    return key, parse_behaviour(value)


def split_key(key: str) -> tuple[str, str | None]:
    """``notify.handle`` -> (notify, handle); a plugin name with dots stays whole."""
    plugin, dot, command = key.rpartition(".")
    if dot and plugin and command in {c.value for c in Command}:
        return plugin, command
    return key, None


def behaviour_for(behaviours: Mapping[str, Behaviour], plugin: str, command: str) -> Behaviour:
    """The behaviour of one command: ``plugin.command``, else ``plugin`` (never for
    ``init``, which only an explicit ``plugin.init`` changes), else ok."""
    found = behaviours.get(behaviour_key(plugin, command))
    if found is None and command != Command.INIT:
        found = behaviours.get(plugin)
    return found if found is not None else _OK


#: The behaviour of a plugin nobody described (frozen, so one value serves every run).
_OK = Behaviour()
