"""Deterministic simulation: the real engine on fakes, driven by one seed.

A :class:`Simulation` runs the very :class:`~ductile.app.engine.Engine` the
daemon runs — ``start`` (crash recovery), ``tick``, ``dispatch_one``,
``enqueue``, ``reload`` — on a :class:`~ductile.fakes.FakeClock`, a
:class:`~ductile.fakes.ScriptedSpawner` whose plugins follow
:class:`Behaviour` values, and an :class:`~ductile.fakes.InMemoryStore` or a
real :class:`~ductile.adapters.sqlite.SqliteStore` in a temporary
directory. There is no thread of its own and no real sleep: a simulated week
takes as long as the work done in it.

Everything random comes from ONE ``random.Random(seed)``: the engine's draws
(jitter, backoff), job ids, the plugins' outcomes, arrival instants, faults.
The same seed gives the same run, line for line (see :attr:`SimulationResult.trace_hash`).

Faults: every call the engine makes on the Store and the Spawner goes through
a proxy that numbers it and can raise :class:`SimulatedCrash` before or after
forwarding it (at the k-th call, or with a seeded probability per call). A
crash throws the engine away, keeps the store (the InMemoryStore object as
is; SQLite closed and reopened from its file) and starts a new engine on it —
``start()`` runs crash recovery exactly as after ``kill -9``.

The same proxies feed a :class:`Monitor` that keeps an independent ledger of
every job and checks the invariants I1-I8 (each a function below, citing the
SPEC) after every port call and every step. A failing invariant raises
:class:`InvariantError`, whose message holds the one command that replays it.

Run one seed of the canonical scenario::

    python -m ductile.app.simulation --seed 1234 --scenario sweep

``ductile simulate`` runs an operator's own config through the same machinery
and prints what would happen (see :func:`simulate_config` and the renderers
at the end of this module).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import gc
import hashlib
import heapq
import itertools
import json
import logging
import math
import random
import re
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, Literal, TypeVar

import attrs

from ductile.app.engine import Engine, EnqueueRefusedError
from ductile.domain.breaker import Breaker, BreakerPolicy, BreakerStatus
from ductile.domain.config import (
    KILL_GRACE,
    Config,
    Endpoint,
    PluginConfig,
    ServiceConfig,
    Timeouts,
    WebhooksConfig,
)
from ductile.domain.errors import DuctileError, UnitError
from ductile.domain.job import (
    TERMINAL,
    TRANSIENT,
    TRANSITIONS,
    Actor,
    Command,
    Job,
    JobStatus,
    SubmittedBy,
    Transition,
)
from ductile.domain.outcome import SpawnOutcome
from ductile.domain.plugin import Discovery, Manifest, Plugin, Refusal, missing_config_keys
from ductile.domain.protocol import EmittedEvent
from ductile.domain.quantities import format_duration, parse_duration
from ductile.domain.retry import MAX_BACKOFF, RetryPolicy
from ductile.domain.routing import Route, child_job_id, event_id_for
from ductile.domain.schedule import PlannedRun, Schedule
from ductile.domain.settle import SettleContext
from ductile.fakes import FakeClock, FakeInbox, InMemoryStore, ScriptedSpawner
from ductile.fakes.indexed_store import IndexedMemoryStore
from ductile.ports.spawner import OnStart, ProcessHandle, SpawnRequest
from ductile.ports.store import Committed, EnqueueResult, FireResult, Guard, InitRecord, RunningJob, Store

T = TypeVar("T")

#: Where a simulation starts unless told: a Friday before Europe's spring-forward
#: weekend, so a two-day run crosses a DST change in Europe/Berlin.
DEFAULT_START = datetime(2026, 3, 27, 0, 0, tzinfo=UTC)
#: A run's length unless a behaviour says otherwise (simulated time).
DEFAULT_DURATION = timedelta(seconds=1)
#: The root of the simulated plugins' directories and the scheme of their executables.
SIM_ROOT = "/sim"
SIM_SCHEME = "sim://"
#: The commands of a simulated plugin's manifest (plus ``init`` when a behaviour names it).
SIM_COMMANDS = frozenset({Command.POLL.value, Command.HANDLE.value, Command.HEALTH.value})
#: Legal moves of the job machine as (from, to) pairs of a transition log.
LEGAL_MOVES = frozenset((src, dst) for (src, _), dst in TRANSITIONS.items())
#: What uuid.UUID(version=4) does to an int: the variant (RFC 4122) and the version bits.
_V4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_V4_SET = (0x8000 << 48) | (4 << 76)
#: How many trace lines an InvariantError quotes.
TRACE_TAIL = 12
#: A loop that makes no progress this many times in a row is stuck (an engine bug).
STALL_LIMIT = 1000


# =========================================================================== behaviours


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
_MICROSECOND = timedelta(microseconds=1)

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
    if kind is Kind.SLOW:
        if not rest:
            raise BehaviourError("'slow' needs a duration: slow:90s")
        fields["duration"] = _option_duration(rest.pop(0), "slow")
    elif kind is Kind.FLAKY:
        if not rest:
            raise BehaviourError("'flaky' needs a failure rate from 0 to 1: flaky:0.2")
        raw = rest.pop(0)
        try:
            fields["rate"] = float(raw)
        except ValueError:
            raise BehaviourError(f"the rate of 'flaky' must be a number from 0 to 1, not {raw!r}") from None
    seen: set[str] = set()
    for option in rest:
        name, eq, value = option.partition("=")
        if name in seen:
            raise BehaviourError(f"option '{name}' is given twice in {text!r}")
        seen.add(name)
        if name == "fatal" and not eq:
            fields["fatal"] = True
        elif name == "emit" and eq:
            fields["emit"] = tuple(value.split("+")) if value else ()
            if "" in fields["emit"]:
                raise BehaviourError(f"an empty event type in {option!r}")
        elif name == "dedupe" and eq:
            if not value.isdigit():
                raise BehaviourError(f"dedupe must be a whole number, not {value!r}")
            fields["dedupe"] = int(value)
        elif name == "took" and eq:
            if kind is Kind.SLOW:
                raise BehaviourError("'slow' already says how long a run takes")
            fields["duration"] = _option_duration(value, "took")
        else:
            raise BehaviourError(
                f"unknown option {option!r} of '{kind}' (options: fatal, emit=a+b, dedupe=N, took=DURATION)"
            )
    return Behaviour(**fields)


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


# =========================================================================== the catalog


def sim_manifest(name: str, *, init: bool = False) -> Manifest:
    commands = SIM_COMMANDS | ({Command.INIT.value} if init else set())
    return Manifest(
        name=name,
        version="0.0.0+sim",
        protocol=1,
        entrypoint="sim",
        description="a simulated plugin",
        commands=frozenset(commands),
    )


class SimCatalog:
    """The Catalog port without a filesystem: every plugin the config names.

    Each gets the manifest in ``manifests`` (read from a real plugins
    directory by ``ductile simulate``) or :func:`sim_manifest` (commands poll,
    handle, health, and init when a ``<name>.init`` behaviour exists), the
    directory ``/sim/<name>`` and the executable ``sim://<name>``. A name in
    ``refusals`` is refused with that reason; a disabled plugin is listed as
    disabled; missing required config keys refuse a plugin, as on disk.
    """

    def __init__(
        self,
        behaviours: Mapping[str, Behaviour] | None = None,
        *,
        manifests: Mapping[str, Manifest] | None = None,
        refusals: Mapping[str, str] | None = None,
    ) -> None:
        self.behaviours = dict(behaviours or {})
        self.manifests = dict(manifests or {})
        self.refusals = dict(refusals or {})

    def manifest(self, name: str) -> Manifest:
        found = self.manifests.get(name)
        if found is not None:
            return found
        return sim_manifest(name, init=behaviour_key(name, Command.INIT) in self.behaviours)

    def discover(self, config: Config) -> Discovery:
        plugins: dict[str, Plugin] = {}
        refused: list[Refusal] = []
        disabled: list[str] = []
        for name in sorted(set(config.plugins) | set(self.manifests) | set(self.refusals)):
            directory = f"{SIM_ROOT}/{name}"
            if not config.plugin(name).enabled:
                disabled.append(name)
                continue
            if name in self.refusals:
                refused.append(Refusal(name=name, directory=directory, reason=self.refusals[name]))
                continue
            manifest = self.manifest(name)
            missing = missing_config_keys(manifest, config.plugin(name).config)
            if missing:
                reason = f"missing required config keys: {', '.join(missing)}"
                refused.append(Refusal(name=name, directory=directory, reason=reason))
                continue
            plugins[name] = Plugin(manifest=manifest, directory=directory, executable=SIM_SCHEME + name)
        return Discovery(plugins=plugins, refused=tuple(refused), disabled=tuple(disabled))

    def verify(self, plugin: Plugin) -> str | None:
        return None


# =========================================================================== faults, arrivals, reloads

CrashPoint = Literal["before", "after"]
CRASH_POINTS: tuple[CrashPoint, ...] = ("before", "after")


class SimulatedCrash(BaseException):
    """The process died at a port call. A BaseException, so no ``except Exception``
    in the engine can swallow it: like ``kill -9``, everything just stops."""

    def __init__(self, call: int, name: str, point: CrashPoint) -> None:
        super().__init__(f"simulated crash {point} call {call} ({name})")
        self.call = call
        self.name = name
        self.point = point


@attrs.frozen(kw_only=True)
class Faults:
    """What goes wrong, and until when."""

    #: Crash at this port call (1-based, counted over the whole run, every engine).
    crash_at: int | None = None
    crash_point: CrashPoint = "before"
    #: Or crash at each port call with this probability (the point drawn too).
    crash_rate: float = attrs.field(
        default=0.0, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )
    #: No more crashes after this many.
    max_crashes: int = attrs.field(default=3, validator=attrs.validators.ge(0))
    #: The restart comes up to this long after a crash (drawn; 0: at once).
    downtime: timedelta = timedelta(0)
    #: Faults stop this long after the start (None: at the end of the run).
    until: timedelta | None = None
    #: No crash within this long after the start or the previous crash (spreads them out).
    spacing: timedelta = timedelta(0)

    @property
    def any(self) -> bool:
        return (self.crash_at is not None or self.crash_rate > 0) and self.max_crashes > 0


@attrs.frozen(kw_only=True)
class Arrivals:
    """Work from outside the scheduler, at seeded random instants (a Poisson stream each)."""

    #: Webhook deliveries per simulated day, spread over the config's endpoints.
    webhooks_per_day: float = attrs.field(default=0.0, validator=attrs.validators.ge(0.0))
    #: ``ductile run <plugin>`` polls per simulated day, over the scheduled plugins.
    cli_per_day: float = attrs.field(default=0.0, validator=attrs.validators.ge(0.0))
    #: Share of webhook deliveries that carry a dedupe key (``dedupe_header``).
    keyed: float = attrs.field(default=0.5, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)])
    #: Share of keyed deliveries that reuse an earlier key (a redelivery).
    redeliver: float = attrs.field(
        default=0.3, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )


@attrs.frozen(kw_only=True)
class Reload:
    """A configuration change mid-run: one of ``choices`` (label, config), drawn, at
    ``at`` after the start (drawn within the middle 80 % of the run when None)."""

    choices: tuple[tuple[str, Config], ...]
    at: timedelta | None = None


# =========================================================================== errors


class InvariantError(DuctileError):
    """An invariant failed: the message says which, where, and how to replay it."""

    def __init__(
        self, code: str, detail: str, *, at: datetime, replay: str, trace: Sequence[str] = ()
    ) -> None:
        self.code = code
        self.detail = detail
        self.at = at
        self.replay = replay
        lines = [f"invariant {code} violated at {_stamp(at)}: {detail}", f"replay: {replay}"]
        if trace:
            lines.append("last steps:")
            lines += [f"  {line}" for line in trace[-TRACE_TAIL:]]
        super().__init__("\n".join(lines))


INVARIANTS: dict[str, str] = {
    "I1": "acknowledged work is never lost",
    "I2": "one state per job, legal moves only, one job running at a time",
    "I3": "attempts count runs; dead only for a reason",
    "I4": "state and routed children follow exactly the successes",
    "I5": "deduplication drops exactly what D1 says",
    "I6": "duplicate executions only after crashes",
    "I7": "the circuit breaker and the poll guard hold back the scheduler",
    "I8": "once faults stop, every job ends in bounded time",
}


# =========================================================================== small helpers


#: The last stamp made (a step notes many lines at one instant).
_last_stamp: list[Any] = [None, ""]


def _stamp(at: datetime) -> str:
    """``2026-03-27T00:00:04.250Z``: the trace's time format."""
    if _last_stamp[0] == at:
        return str(_last_stamp[1])
    utc = at if at.tzinfo is UTC else at.astimezone(UTC)
    text = utc.isoformat(timespec="milliseconds")[:-6] + "Z"  # without its "+00:00"
    _last_stamp[:] = [at, text]
    return text


def _ref(job_id: str) -> str:
    return job_id[:8]


def _identity(job: Job) -> tuple[str, str, str] | None:
    return None if job.dedupe_key is None else (job.plugin, job.command, job.dedupe_key)


def _blocks(job: Job, *, now: datetime, ttl: timedelta) -> bool:
    """Does an existing job of the same identity make a new enqueue redundant (D1)?
    Written out here from the SPEC, not taken from the domain."""
    if job.status is JobStatus.QUEUED:
        return True
    return (
        job.status is JobStatus.SUCCEEDED and job.completed_at is not None and job.completed_at >= now - ttl
    )


def backoff_bound(policy: RetryPolicy, attempt: int) -> timedelta:
    """The longest wait after attempt ``attempt`` failed (D3: base * 2^(n-1) + U(0, base),
    the exponential part capped at :data:`~ductile.domain.retry.MAX_BACKOFF`)."""
    base = policy.backoff_base
    if not base:
        return timedelta(0)
    cap = MAX_BACKOFF // _MICROSECOND
    if attempt - 1 >= cap.bit_length():
        exponential = MAX_BACKOFF
    else:  # integer microseconds: base * 2**(n-1) as a timedelta overflows for large n
        exponential = timedelta(microseconds=min((base // _MICROSECOND) << (attempt - 1), cap))
    return exponential + base


# =========================================================================== invariants
#
# Each returns the list of problems it found (empty: it holds). The Monitor
# calls them with its ledger, which is built only from what the ports
# returned, never from the engine's own bookkeeping.


def check_acknowledged(
    acked: Mapping[str, str], present: Collection[str], deleted: Collection[str]
) -> list[str]:
    """I1 — D1 (at-least-once: never silently dropped), D11 (202 only after a durable
    commit), D19 (only retention deletes): every job whose creation the store
    acknowledged — an enqueue's answer, a scheduled firing, a routed child — exists,
    unless retention deleted it after it ended. ``acked`` maps job id -> who got the answer."""
    return [
        f"job {job_id} ({who}) was acknowledged but is not in the store"
        for job_id, who in acked.items()
        if job_id not in present and job_id not in deleted
    ]


def check_history(job: Job, log: Sequence[Transition]) -> list[str]:
    """I2 — D2: a job has exactly one state; its transition log starts with its
    creation (→ queued), each entry moves from the state the previous one reached,
    only along the table's moves (``TRANSITIONS``), and ends in the row's state. The
    row never rests in ``failed`` or ``timed_out``; terminal rows carry ``completed_at``."""
    problems: list[str] = []
    where = f"job {job.id} ({job.plugin}.{job.command})"
    if not log:
        return [f"{where} has no transition log"]
    first = log[0]
    if first.from_status is not None or first.to_status is not JobStatus.QUEUED:
        problems.append(
            f"{where}: the log starts with {first.from_status}->{first.to_status}, not creation->queued"
        )
    for before, entry in itertools.pairwise(log):
        if entry.from_status is not before.to_status:
            problems.append(
                f"{where}: '{entry.from_status}->{entry.to_status}' follows a move to '{before.to_status}'"
            )
        elif (entry.from_status, entry.to_status) not in LEGAL_MOVES:
            problems.append(f"{where}: illegal move {entry.from_status}->{entry.to_status} ({entry.reason})")
        if entry.at < before.at:
            problems.append(f"{where}: the log goes back in time at {entry.from_status}->{entry.to_status}")
    if log[-1].to_status is not job.status:
        problems.append(f"{where}: the row says '{job.status}', the log ends in '{log[-1].to_status}'")
    if job.status in TRANSIENT:
        problems.append(f"{where} rests in the transient state '{job.status}'")
    if job.status in TERMINAL and job.completed_at is None:
        problems.append(f"{where} is {job.status} without completed_at")
    return problems


def check_single_runner(running: Collection[str], *, between_steps: bool) -> list[str]:
    """I2 — D14 (one lane: one job at a time) and D6 (a finished step leaves nothing
    running): at most one job is ``running`` at any port call, none between steps."""
    limit = 0 if between_steps else 1
    if len(running) > limit:
        when = "between steps" if between_steps else "at once"
        return [f"{len(running)} jobs running {when}: {', '.join(sorted(running))}"]
    return []


def check_attempts(job: Job, log: Sequence[Transition]) -> list[str]:
    """I3 — D2/D3/D6: ``attempt`` counts runs: it is 1 + the re-queues in the log,
    never more than ``max_attempts``; every claim is one attempt. A job is ``dead``
    only when its attempts are exhausted, when the last one was not retryable (exit
    78, ``"retry": false``, or the core did not run it: NotRun), or when it was
    cancelled while queued (D13)."""
    problems: list[str] = []
    where = f"job {job.id} ({job.plugin}.{job.command})"
    requeues = claims = 0
    for t in log:
        if t.to_status is JobStatus.QUEUED:
            if t.from_status is not None:
                requeues += 1
        elif t.to_status is JobStatus.RUNNING:
            claims += 1
    if job.attempt != 1 + requeues:
        problems.append(f"{where}: attempt {job.attempt} after {requeues} re-queue(s)")
    if job.attempt > job.max_attempts:
        problems.append(f"{where}: attempt {job.attempt} exceeds max_attempts {job.max_attempts}")
    cancelled = bool(log) and log[-1].from_status is JobStatus.QUEUED and log[-1].to_status is JobStatus.DEAD
    expected_claims = job.attempt - 1 if job.status is JobStatus.QUEUED or cancelled else job.attempt
    if claims != expected_claims:
        problems.append(f"{where}: {claims} claim(s) for attempt {job.attempt} in state {job.status}")
    if job.status is JobStatus.DEAD and not cancelled:
        reason = log[-1].reason if log else ""
        if job.attempt < job.max_attempts and not reason.startswith("not retryable"):
            problems.append(
                f"{where} is dead at attempt {job.attempt} of {job.max_attempts} "
                f"though retryable and not cancelled ({reason!r})"
            )
    return problems


@attrs.frozen
class Expectation:
    """What a simulated run produced, as the plugin knows it: the model's input."""

    #: ``ok`` (a valid success), ``retryable`` or ``fatal`` (a failure the SPEC retries or not).
    verdict: Literal["ok", "retryable", "fatal"]
    events: tuple[EmittedEvent, ...] = ()
    behaviour: str = ""


def check_settlement(before: Job, committed: Committed, expectation: Expectation | None) -> list[str]:
    """I3 — D3/D4/D7: the outcome decides the next state. A run the plugin ended
    well succeeds; a retryable failure (error, timeout, protocol error) is re-queued
    while attempts remain, else dead; a non-retryable one (exit 78, ``"retry":
    false``) is dead at once. A run that never spawned (NotRun) never succeeds."""
    final = committed.settlement.job
    where = f"job {before.id} ({before.plugin}.{before.command}) attempt {before.attempt}"
    if expectation is None:
        if final.status is JobStatus.SUCCEEDED:
            return [f"{where} succeeded without ever running"]
        return []
    if expectation.verdict == "ok":
        wanted = JobStatus.SUCCEEDED
    elif expectation.verdict == "fatal":
        wanted = JobStatus.DEAD
    else:
        wanted = JobStatus.QUEUED if before.attempt < before.max_attempts else JobStatus.DEAD
    if final.status is not wanted:
        return [
            f"{where}: the plugin's run was '{expectation.verdict}' ({expectation.behaviour}), "
            f"so the job should be {wanted}, but it is {final.status} ({final.last_error})"
        ]
    return []


def check_state(plugin: str, state: Mapping[str, Any], succeeded: int) -> list[str]:
    """I4 — D9 (completion and state merge commit together): a simulated plugin adds
    1 to ``count`` on each success, so its stored count equals the number of its
    jobs that succeeded — never a lost update, never a merge without a success."""
    count = state.get("count", 0)
    if count != succeeded:
        return [f"plugin {plugin}: state count is {count!r}, but {succeeded} of its jobs succeeded"]
    return []


def check_children(
    parent: Job, committed: Committed, ctx: SettleContext, expectation: Expectation | None
) -> list[str]:
    """I4 — D8/D15/D9: children exist only for a succeeded parent, committed with it;
    each emitted event (exactly the ones the plugin printed) yields one ``handle``
    child per distinct matching route to a loaded target, with the event envelope as
    payload, the event's dedupe key, and the target's retry limit."""
    s = committed.settlement
    where = f"job {parent.id} ({parent.plugin}.{parent.command})"
    problems: list[str] = []
    if len(committed.children) != len(s.children):
        problems.append(f"{where}: {len(s.children)} children but {len(committed.children)} enqueue results")
    if not s.succeeded:
        if s.children or s.events:
            problems.append(f"{where} ended {s.job.status} but routed {len(s.children)} children")
        return problems
    if expectation is not None:
        emitted = [(e.type, e.dedupe_key) for e in expectation.events]
        wrapped = [(e.type, e.dedupe_key) for e in s.events]
        if emitted != wrapped:
            problems.append(f"{where}: the plugin emitted {emitted}, the core wrapped {wrapped}")
    expected: list[tuple[str, str, str]] = []
    for envelope in s.events:
        seen: set[tuple[str, str]] = set()
        for route in ctx.routes:
            if route.source != parent.plugin or route.event_type != envelope.type:
                continue
            if (route.target, route.command) in seen:
                continue
            seen.add((route.target, route.command))
            if route.target in ctx.targets:
                expected.append((envelope.event_id, route.target, route.command))
    actual = [(c.source_event_id or "", c.plugin, c.command) for c in s.children]
    if actual != expected:
        problems.append(f"{where}: children {actual}, expected one per event and matching route: {expected}")
    envelopes = {e.event_id: e for e in s.events}
    for child in s.children:
        found = envelopes.get(child.source_event_id or "")
        if child.parent_job_id != parent.id or found is None:
            problems.append(f"{where}: child {child.id} does not point back at it and its event")
            continue
        if child.payload != found.to_json() or child.dedupe_key != found.dedupe_key:
            problems.append(f"{where}: child {child.id} does not carry its event envelope and dedupe key")
        if child.submitted_by is not SubmittedBy.ROUTE or child.command != Command.HANDLE:
            problems.append(
                f"{where}: child {child.id} is {child.submitted_by} {child.command}, not a routed handle"
            )
        target = ctx.targets.get(child.plugin)
        if target is not None and child.max_attempts != target.max_attempts:
            problems.append(
                f"{where}: child {child.id} has max_attempts {child.max_attempts}, not {target.max_attempts}"
            )
        if child.id != child_job_id(parent.id, found.event_id, child.plugin, child.command):
            problems.append(f"{where}: child {child.id} does not have its derived id")
    return problems


def check_dedupe(
    job: Job, result: EnqueueResult, others: Sequence[Job], *, now: datetime, ttl: timedelta
) -> list[str]:
    """I5 — D1: identity is (plugin, command, dedupe_key). An enqueue is performed
    unless a job of the same identity is still queued or succeeded within the TTL
    (at that moment); then the caller gets that job's id. ``others``: the jobs of the
    same identity just before the call (retention-deleted ones excluded: the store
    cannot know them any more). Child replays (same parent, event, target) return
    the existing child."""
    where = f"{job.plugin}.{job.command} key={job.dedupe_key!r}"
    if result.created:
        blockers = [o for o in others if o.id != job.id and _blocks(o, now=now, ttl=ttl)]
        if blockers:
            b = blockers[0]
            return [f"{where}: job {job.id} was created although job {b.id} ({b.status}) blocks it"]
        return []
    if result.job_id == job.id:  # the same job again (a replayed child or an id already stored)
        return []
    match = next((o for o in others if o.id == result.job_id), None)
    if match is None:
        return [f"{where}: dropped as a duplicate of job {result.job_id}, which does not share its identity"]
    if not _blocks(match, now=now, ttl=ttl):
        return [
            f"{where}: dropped as a duplicate of job {match.id}, which is {match.status}: it does not block"
        ]
    return []


def check_executions(
    runs: Mapping[tuple[str, int], int], unsettled: Collection[tuple[str, int]], crashes: int
) -> list[str]:
    """I6 — D1/D6: each attempt of a job runs its plugin at most once (recovery makes
    a re-run a new attempt), and a run whose result was lost — spawned, but never
    settled — happens only when the process died: at most one per crash.
    ``runs``: (job id, attempt) -> how often it was spawned; ``unsettled``: the
    spawned attempts whose settlement never committed."""
    problems = [
        f"job {job} attempt {attempt} ran {n} times" for (job, attempt), n in sorted(runs.items()) if n > 1
    ]
    if len(unsettled) > crashes:
        lost = sorted(unsettled)[:5]
        problems.append(f"{len(unsettled)} runs were never settled after {crashes} crash(es): {lost}")
    return problems


def check_fire(
    guard: Guard | None,
    before: Breaker | None,
    outstanding: int,
    result: FireResult,
    *,
    now: datetime,
) -> list[str]:
    """I7 — D3 (while a breaker is open the scheduler enqueues nothing for the pair;
    after ``reset_after`` one probe goes, then half-open admits no other) and D21
    (no new poll while ``max_outstanding_polls`` are queued or running). Checked
    against the breaker row and the outstanding count just before the firing."""
    created = [r for r in result.jobs if r.created]
    if guard is None:
        return [f"an unguarded firing was blocked ({result.blocked})"] if result.blocked else []
    where = f"{guard.plugin}.{guard.command}"
    closed_for = None
    if before is not None and guard.breaker is not None:
        reset = guard.breaker.reset_after
        if (
            before.status is BreakerStatus.OPEN
            and before.opened_at is not None
            and now < before.opened_at + reset
        ):
            closed_for = f"open since {_stamp(before.opened_at)}"
        elif (
            before.status is BreakerStatus.HALF_OPEN
            and before.probe_at is not None
            and now < before.probe_at + reset
        ):
            closed_for = f"half-open, probe sent at {_stamp(before.probe_at)}"
    full = guard.max_outstanding is not None and outstanding >= guard.max_outstanding
    problems: list[str] = []
    if created and closed_for:
        problems.append(f"{where}: a scheduled job was enqueued while the breaker was {closed_for}")
    if created and full:
        problems.append(f"{where}: a poll was enqueued with {outstanding} already outstanding (D21)")
    if result.blocked == "breaker_open" and not closed_for:
        problems.append(f"{where}: blocked as 'breaker open', but the breaker admits a run")
    if result.blocked == "poll_guard" and not full:
        problems.append(f"{where}: blocked by the poll guard with only {outstanding} outstanding")
    return problems


def check_breaker_after_run(
    job: Job, succeeded: bool, before: Breaker | None, after: Breaker | None, policy: BreakerPolicy
) -> list[str]:
    """I7 — D3: the breaker of (plugin, command) counts consecutive failed or timed-out
    runs of scheduler-originated jobs: a success closes it, a failure adds one and
    opens it at ``threshold`` (a failed half-open probe re-opens it)."""
    where = f"breaker {job.plugin}.{job.command} after job {job.id}"
    if succeeded:
        if after is not None and (after.status is not BreakerStatus.CLOSED or after.failures):
            return [
                f"{where} succeeded: expected closed, found {after.status} with {after.failures} failures"
            ]
        return []
    failures = (before.failures if before is not None else 0) + 1
    status_before = before.status if before is not None else BreakerStatus.CLOSED
    if after is None or after.failures != failures:
        return [
            f"{where} failed: expected {failures} failures, found {after.failures if after else 'no breaker'}"
        ]
    should_open = status_before is not BreakerStatus.CLOSED or failures >= policy.threshold
    if should_open and after.status is not BreakerStatus.OPEN:
        return [
            f"{where} failed ({failures} in a row, was {status_before}): expected open, found {after.status}"
        ]
    if not should_open and after.status is not BreakerStatus.CLOSED:
        return [f"{where}: opened after {failures} failures (threshold {policy.threshold})"]
    return []


def check_liveness(pending: Mapping[str, tuple[Job, datetime]], now: datetime) -> list[str]:
    """I8 — D1/D3/D4/D14: once faults stop, a job that is not terminal ends within
    its remaining attempts x (timeout + 5 s kill grace + the longest backoff) plus
    the runs queued ahead of it (one lane, FIFO). ``pending`` maps id -> (job as
    last seen, deadline); every one still non-terminal must be before its deadline."""
    return [
        f"job {job.id} ({job.plugin}.{job.command}, {job.status}, attempt {job.attempt}/{job.max_attempts}) "
        f"is not finished at its deadline {_stamp(deadline)}"
        for job, deadline in pending.values()
        if job.status not in TERMINAL and now > deadline
    ]


# =========================================================================== the ledger


@attrs.frozen(kw_only=True)
class RunNote:
    """One run (attempt) of a job, as observed."""

    attempt: int
    started_at: datetime | None
    finished_at: datetime
    duration: float
    #: succeeded, failed, timed out, interrupted, not run
    result: str
    error: str | None
    status_after: JobStatus


@attrs.define(eq=False)
class JobTrack:
    """Everything the monitor knows about one job."""

    job: Job
    log: list[Transition]
    deleted: bool = False
    spawns: dict[int, int] = attrs.Factory(dict)
    expected: dict[int, Expectation] = attrs.Factory(dict)
    settled: set[int] = attrs.Factory(set)
    plan: PlannedRun | None = None
    children: list[str] = attrs.Factory(list)
    waits: list[float] = attrs.Factory(list)
    runs: list[RunNote] = attrs.Factory(list)


@attrs.frozen(kw_only=True)
class SimEvent:
    """Something notable for the report: a breaker opening, a skipped run, a crash..."""

    at: datetime
    kind: str
    plugin: str | None
    detail: str


class _Violation(BaseException):
    """Carries an :class:`InvariantError` out of the engine: raised inside a port
    call, a plain Exception could be caught (and retried forever) by the engine's
    own error handling. Public methods turn it back into the InvariantError."""

    def __init__(self, error: InvariantError) -> None:
        super().__init__(str(error))
        self.error = error


# =========================================================================== the monitor


class Monitor:
    """The ledger of every job, built from what the ports returned, and the checks.

    The proxies report each call after it returned; the monitor then reads the
    touched jobs from the store (directly, unobserved: those reads are not
    port calls of the engine and never crash) and checks the invariants on
    them. Checks that need the world *before* a call (dedupe, breaker) use the
    ledger, which still holds it.
    """

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.jobs: dict[str, JobTrack] = {}
        self.by_identity: dict[tuple[str, str, str], list[str]] = {}
        self.running: set[str] = set()
        self.outstanding: dict[tuple[str, str], int] = {}
        self.succeeded: dict[str, int] = {}
        self.terminal: list[tuple[datetime, int, str]] = []
        self.acked: dict[str, str] = {}
        self.deleted: set[str] = set()
        self.spawn_calls: set[tuple[str, int]] = set()
        self.spawns: dict[tuple[str, int], int] = {}
        self.unsettled: set[tuple[str, int]] = set()
        self.settled: set[tuple[str, int]] = set()
        self.events: list[SimEvent] = []
        #: I8: job id -> deadline, while draining.
        self.deadlines: dict[str, datetime] = {}
        self.checks = 0
        self._order = 0

    @property
    def store(self) -> Store:
        return self.sim.inner

    # ------------------------------------------------------------- plumbing
    def require(self, code: str, problems: Sequence[str]) -> None:
        self.checks += 1
        if problems:
            detail = problems[0] if len(problems) == 1 else f"{problems[0]} (and {len(problems) - 1} more)"
            raise _Violation(self.sim.violation(code, detail))

    def event(self, kind: str, plugin: str | None, detail: str) -> None:
        self.events.append(SimEvent(at=self.sim.clock.now(), kind=kind, plugin=plugin, detail=detail))

    def ack(self, job_id: str, who: str) -> None:
        self.acked.setdefault(job_id, who)

    def _status(self, track: JobTrack, old: Job | None, new: Job) -> None:
        before = old.status if old is not None else None
        after = new.status
        if before is after:
            return
        key = (new.plugin, new.command)
        if before in (JobStatus.QUEUED, JobStatus.RUNNING):
            self.outstanding[key] -= 1
        if after in (JobStatus.QUEUED, JobStatus.RUNNING):
            self.outstanding[key] = self.outstanding.get(key, 0) + 1
        if before is JobStatus.RUNNING:
            self.running.discard(new.id)
        if after is JobStatus.RUNNING:
            self.running.add(new.id)
        if after in TERMINAL:
            if before in TERMINAL:
                self.require("I2", [f"job {new.id} left the terminal state {before} for {after}"])
            assert new.completed_at is not None  # check_history reports it otherwise
            self._order += 1
            heapq.heappush(self.terminal, (new.completed_at, self._order, new.id))
            if after is JobStatus.SUCCEEDED and new.command != Command.INIT:
                self.succeeded[new.plugin] = self.succeeded.get(new.plugin, 0) + 1

    async def refresh(self, job_id: str, *, new: bool = False) -> JobTrack:
        """Read one job and its log from the store, update the ledger, check it."""
        job = await self.store.get_job(job_id)
        track = self.jobs.get(job_id)
        if job is None:
            if track is not None and track.deleted:
                return track
            self.require("I1", [f"job {job_id} is not in the store"])
            raise AssertionError("unreachable")  # pragma: no cover
        log = await self.store.transitions(job_id)
        if track is None:
            if not new:
                self.require("I2", [f"job {job_id} ({job.plugin}.{job.command}) appeared unannounced"])
            track = JobTrack(job=job, log=log)
            self.jobs[job_id] = track
            identity = _identity(job)
            if identity is not None:
                self.by_identity.setdefault(identity, []).append(job_id)
            self._status(track, None, job)
        else:
            old = track.job
            track.job, track.log = job, log
            if old.status is not job.status:
                self._status(track, old, job)
        self.require("I2", check_history(job, log))
        self.require("I3", check_attempts(job, log))
        self.require("I2", check_single_runner(self.running, between_steps=False))
        return track

    def _same_identity(self, job: Job, pending: Mapping[str, Job]) -> list[Job]:
        identity = _identity(job)
        if identity is None:
            return []
        known = [self.jobs[i].job for i in self.by_identity.get(identity, ()) if not self.jobs[i].deleted]
        return known + [p for p in pending.values() if _identity(p) == identity]

    def _check_insert(
        self, job: Job, result: EnqueueResult, pending: dict[str, Job], *, now: datetime, ttl: timedelta
    ) -> None:
        if _identity(job) is None:
            if not result.created and result.job_id != job.id:
                self.require(
                    "I5", [f"{job.plugin}.{job.command} without a dedupe key was dropped as a duplicate"]
                )
        else:
            self.require("I5", check_dedupe(job, result, self._same_identity(job, pending), now=now, ttl=ttl))
        if result.created:
            pending[job.id] = job
        elif result.job_id not in self.jobs and result.job_id not in pending:
            self.require(
                "I1", [f"an enqueue answered with job {result.job_id}, which the store never created"]
            )

    # ------------------------------------------------------------- observations
    async def on_enqueue(self, job: Job, result: EnqueueResult, *, now: datetime, ttl: timedelta) -> None:
        self._check_insert(job, result, {}, now=now, ttl=ttl)
        if result.created:
            await self.refresh(result.job_id, new=True)
        key = f" key={job.dedupe_key}" if job.dedupe_key is not None else ""
        outcome = "new" if result.created else f"dup of {_ref(result.job_id)}"
        self.sim.note(
            f"enqueue {job.submitted_by} {job.plugin}.{job.command} {_ref(job.id)}{key} -> {outcome}"
        )

    async def on_claim(self, job: Job | None) -> None:
        if job is None:
            return
        track = self.jobs.get(job.id)
        if track is None:
            self.require("I2", [f"claimed job {job.id} was never created"])
            raise AssertionError("unreachable")  # pragma: no cover
        queued = track.job
        ready = track.log[-1].at if track.log else queued.created_at
        if queued.next_retry_at is not None:
            ready = max(ready, queued.next_retry_at)
        if queued.status is not JobStatus.QUEUED:
            self.require("I2", [f"job {job.id} was claimed while {queued.status}"])
        if (
            queued.next_retry_at is not None
            and job.started_at is not None
            and job.started_at < queued.next_retry_at
        ):
            self.require(
                "I3", [f"job {job.id} was claimed before its retry time {_stamp(queued.next_retry_at)}"]
            )
        track = await self.refresh(job.id)
        if job.started_at is not None:
            track.waits.append(max(0.0, (job.started_at - ready).total_seconds()))
        self.sim.note(f"claim {_ref(job.id)} {job.plugin}.{job.command} {job.attempt}/{job.max_attempts}")

    def on_spawn_call(self, request: SpawnRequest) -> None:
        job_id = request.env.get("DUCTILE_JOB_ID", "")
        attempt = int(request.env.get("DUCTILE_ATTEMPT", "0"))
        self.spawn_calls.add((job_id, attempt))

    def on_spawned(self, job_id: str, attempt: int, expectation: Expectation) -> None:
        key = (job_id, attempt)
        self.spawns[key] = self.spawns.get(key, 0) + 1
        self.unsettled.add(key)
        track = self.jobs.get(job_id)
        if track is not None:
            track.spawns[attempt] = track.spawns.get(attempt, 0) + 1
            track.expected[attempt] = expectation
        self.require("I6", check_executions({key: self.spawns[key]}, (), self.sim.crashes))

    async def breaker_before_settle(self, job_id: str) -> Breaker | None:
        track = self.jobs.get(job_id)
        if track is None or track.job.submitted_by is not SubmittedBy.SCHEDULER:
            return None
        return await self.store.get_breaker(track.job.plugin, track.job.command)

    async def on_settle(
        self,
        job_id: str,
        ctx: SettleContext,
        ttl: timedelta,
        committed: Committed,
        breaker_before: Breaker | None,
    ) -> None:
        track = self.jobs.get(job_id)
        if track is None:
            self.require("I2", [f"settled job {job_id} was never created"])
            raise AssertionError("unreachable")  # pragma: no cover
        before = track.job
        s = committed.settlement
        attempt = before.attempt
        expectation = track.expected.get(attempt)
        self.require("I3", check_settlement(before, committed, expectation))
        self.require("I4", check_children(before, committed, ctx, expectation))
        pending: dict[str, Job] = {}
        for child, result in zip(s.children, committed.children, strict=False):
            self._check_insert(child, result, pending, now=ctx.now, ttl=ttl)
        track = await self.refresh(job_id)
        self.settled.add((job_id, attempt))
        self.unsettled.discard((job_id, attempt))
        track.settled.add(attempt)
        spawned = (job_id, attempt) in self.spawn_calls
        if s.succeeded:
            result_text = "succeeded"
        elif s.run.timed_out:
            result_text = "timed out"
        elif not spawned:
            result_text = "not run"
        else:
            result_text = "failed"
        track.runs.append(
            RunNote(
                attempt=attempt,
                started_at=before.started_at,
                finished_at=s.run.finished_at,
                duration=s.run.duration,
                result=result_text,
                error=s.run.error,
                status_after=s.job.status,
            )
        )
        status = s.job.status.value
        if s.job.status is JobStatus.QUEUED and s.job.next_retry_at is not None:
            status += f" retry {_stamp(s.job.next_retry_at)}"
        elif s.job.status is JobStatus.DEAD:
            status += f": {s.run.error or s.job.last_error}"
        self.sim.note(f"settle {_ref(job_id)} {result_text} -> {status}")
        for child, result in zip(s.children, committed.children, strict=False):
            if result.created:
                await self.refresh(child.id, new=True)
            track.children.append(result.job_id)
            fate = "new" if result.created else f"dup of {_ref(result.job_id)}"
            self.sim.note(f"  route {_ref(job_id)} -> {child.plugin}.{child.command} {_ref(child.id)} {fate}")
        state = await self.store.get_state(before.plugin)
        self.require("I4", check_state(before.plugin, state, self.succeeded.get(before.plugin, 0)))
        if before.submitted_by is SubmittedBy.SCHEDULER and spawned:
            after = await self.store.get_breaker(before.plugin, before.command)
            self.require(
                "I7", check_breaker_after_run(before, s.succeeded, breaker_before, after, ctx.breaker)
            )
            was_open = breaker_before is not None and breaker_before.status is not BreakerStatus.CLOSED
            is_open = after is not None and after.status is not BreakerStatus.CLOSED
            if is_open and not was_open and after is not None:
                self.event(
                    "breaker_open", before.plugin, f"circuit breaker opened after {after.failures} failures"
                )
            elif was_open and not is_open:
                self.event("breaker_closed", before.plugin, "circuit breaker closed by a success")
            elif (
                was_open
                and is_open
                and breaker_before is not None
                and breaker_before.status is BreakerStatus.HALF_OPEN
            ):
                self.event("breaker_open", before.plugin, "circuit breaker re-opened: the probe failed")

    def ack_settle(self, committed: Committed) -> None:
        for result in committed.children:
            self.ack(result.job_id, "route")

    async def on_recover(self, settlements: Sequence[Any]) -> None:
        for s in settlements:
            track = await self.refresh(s.job.id)
            track.runs.append(
                RunNote(
                    attempt=s.run.attempt,
                    started_at=s.run.started_at,
                    finished_at=s.run.finished_at,
                    duration=s.run.duration,
                    result="interrupted",
                    error=s.run.error,
                    status_after=s.job.status,
                )
            )
            self.sim.note(f"recover {_ref(s.job.id)} -> {s.job.status} attempt {s.job.attempt}")

    async def on_cancel(self, plugin: str, ids: Sequence[str], before: Sequence[str]) -> None:
        if sorted(ids) != sorted(before):
            self.require(
                "I3", [f"cancelling {plugin}: moved {sorted(ids)}, but its queued jobs were {sorted(before)}"]
            )
        for job_id in ids:
            await self.refresh(job_id)
        if ids:
            self.event("cancelled", plugin, f"{len(ids)} queued job(s) cancelled")
        self.sim.note(f"cancel {plugin}: {' '.join(_ref(i) for i in ids) or '-'}")

    def queued_of(self, plugin: str) -> list[str]:
        return [
            i
            for i, t in self.jobs.items()
            if t.job.plugin == plugin and t.job.status is JobStatus.QUEUED and not t.deleted
        ]

    async def on_delete(self, before: datetime, count: int) -> None:
        doomed: list[str] = []
        while self.terminal and self.terminal[0][0] < before:
            _, _, job_id = heapq.heappop(self.terminal)
            track = self.jobs[job_id]
            if not track.deleted:
                doomed.append(job_id)
        problems = []
        for job_id in doomed:
            self.jobs[job_id].deleted = True
            self.deleted.add(job_id)
            if await self.store.get_job(job_id) is not None:
                problems.append(f"retention kept job {job_id}, finished before {_stamp(before)}")
        if count != len(doomed):
            problems.append(
                f"retention deleted {count} job(s); {len(doomed)} finished before {_stamp(before)}"
            )
        self.require("I1", problems)
        if count:
            self.sim.note(f"retention deleted {count}")

    async def on_fire(
        self,
        due: PlannedRun,
        *,
        jobs: Sequence[Job],
        guard: Guard | None,
        breaker_before: Breaker | None,
        outstanding: int,
        result: FireResult,
        now: datetime,
        ttl: timedelta,
    ) -> None:
        if not result.fired:
            self.sim.note(f"fire {due.key} stale")
            return
        self.require("I7", check_fire(guard, breaker_before, outstanding, result, now=now))
        pending: dict[str, Job] = {}
        for job, r in zip(jobs, result.jobs, strict=False):
            self._check_insert(job, r, pending, now=now, ttl=ttl)
        created = []
        for job, r in zip(jobs, result.jobs, strict=False):
            if r.created:
                track = await self.refresh(job.id, new=True)
                track.plan = due
                created.append(f"{job.plugin}.{job.command} {_ref(job.id)}")
        if result.blocked == "breaker_open":
            what = "skipped: circuit breaker open"
            self.event("skipped_breaker", due.key, "scheduled run skipped: circuit breaker open")
        elif result.blocked == "poll_guard":
            what = "skipped: a poll is still outstanding"
            self.event(
                "skipped_poll_guard",
                due.key,
                "scheduled run skipped: the previous poll is still queued or running",
            )
        elif not jobs:
            schedule = self.sim.config.plugin(due.key).schedule
            if schedule is not None and schedule.emit is None:
                what = "missed (catch_up: skip)"
                self.event(
                    "missed", due.key, f"missed run at {_stamp(due.planned_at)} skipped (catch_up: skip)"
                )
            else:
                what = "no routed target"
        else:
            what = ", ".join(created) or "duplicate"
        probing = breaker_before is not None and breaker_before.status is BreakerStatus.OPEN
        if guard is not None and guard.breaker is not None and probing and created:
            self.event("breaker_probe", due.key, "circuit breaker half-open: one probe run admitted")
        self.sim.note(f"fire {due.key} planned {_stamp(due.planned_at)} -> {what}")

    def ack_fire(self, result: FireResult) -> None:
        for r in result.jobs:
            self.ack(r.job_id, "scheduler")

    def on_put_planned(self, run: PlannedRun) -> None:
        offset = run.offset.total_seconds()
        snapped = " snapped" if run.snapped else ""
        self.sim.note(
            f"plan {run.key} {_stamp(run.planned_at)} nominal {_stamp(run.nominal_at)} {offset:+.3f}s"
            f"{snapped}"
        )

    def on_put_init(self, record: InitRecord) -> None:
        if not record.ok:
            self.event("unhealthy", record.plugin, f"init failed, plugin unhealthy: {record.error}")
        self.sim.note(f"init {record.plugin} {'ok' if record.ok else 'failed'}")

    # ------------------------------------------------------------- step-level checks
    def after_step(self) -> None:
        """Between steps nothing runs, and lost runs stay within the crashes."""
        self.require("I2", check_single_runner(self.running, between_steps=True))
        self.require("I6", check_executions({}, self.unsettled, self.sim.crashes))
        if self.deadlines:
            pending = {i: (self.jobs[i].job, d) for i, d in self.deadlines.items()}
            self.require("I8", check_liveness(pending, self.sim.clock.now()))

    async def full_check(self) -> None:
        """Everything against the store: nothing lost, nothing unannounced, nothing changed
        behind the ledger's back, states and lost runs as they should be."""
        stored = await self.store.list_jobs(limit=10**9)
        present = {j.id for j in stored}
        unknown = sorted(present - set(self.jobs))
        if unknown:
            self.require(
                "I2", [f"{len(unknown)} job(s) in the store were never reported created: {unknown[:3]}"]
            )
        self.require("I1", check_acknowledged(self.acked, present, self.deleted))
        problems: list[str] = []
        for job_id, track in self.jobs.items():
            if track.deleted:
                if job_id in present:
                    problems.append(f"job {job_id} was deleted by retention but is still there")
                continue
            if job_id not in present:
                problems.append(
                    f"job {job_id} ({track.job.plugin}.{track.job.command}, {track.job.status}) is lost"
                )
                continue
            job = await self.store.get_job(job_id)
            if job != track.job:
                problems.append(f"job {job_id} changed without the store reporting it: {track.job} -> {job}")
        self.require("I1", problems)
        running = [j.id for j in stored if j.status is JobStatus.RUNNING]
        self.require("I2", check_single_runner(running, between_steps=True))
        for plugin in sorted({t.job.plugin for t in self.jobs.values()}):
            state = await self.store.get_state(plugin)
            self.require("I4", check_state(plugin, state, self.succeeded.get(plugin, 0)))
        unsettled = [k for k in self.spawns if k not in self.settled]
        self.require("I6", check_executions(self.spawns, unsettled, self.sim.crashes))


# =========================================================================== the proxies


class Ports:
    """Numbers every Store and Spawner call the engine makes; crashes on cue."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.calls = 0

    def enter(self, name: str) -> tuple[int, CrashPoint | None]:
        self.calls += 1
        sim = self.sim
        if sim._armed is None and not sim._may_crash:  # what crash_decision would answer, sooner
            return self.calls, None
        point = sim.crash_decision(self.calls)
        if point == "before":
            raise SimulatedCrash(self.calls, name, "before")
        return self.calls, point

    @staticmethod
    def leave(index: int, name: str, point: CrashPoint | None) -> None:
        if point == "after":
            raise SimulatedCrash(index, name, "after")


class ObservedStore:
    """The Store port, forwarded: each call numbered (maybe crashed) and observed."""

    def __init__(self, inner: Store, ports: Ports, monitor: Monitor) -> None:
        self._inner = inner
        self._ports = ports
        self._monitor = monitor

    async def _plain(self, name: str, call: Callable[[], Awaitable[T]]) -> T:
        index, point = self._ports.enter(name)
        result = await call()
        self._ports.leave(index, name, point)
        return result

    # ------------------------------------------------------------- observed writes
    async def enqueue(self, job: Job, *, actor: Actor, now: datetime, dedupe_ttl: timedelta) -> EnqueueResult:
        index, point = self._ports.enter("store.enqueue")
        result = await self._inner.enqueue(job, actor=actor, now=now, dedupe_ttl=dedupe_ttl)
        await self._monitor.on_enqueue(job, result, now=now, ttl=dedupe_ttl)
        self._ports.leave(index, "store.enqueue", point)
        if actor is Actor.API and job.command == Command.INIT:
            self._monitor.ack(result.job_id, "init")
        return result

    async def claim_next(self, now: datetime) -> Job | None:
        index, point = self._ports.enter("store.claim_next")
        job = await self._inner.claim_next(now)
        await self._monitor.on_claim(job)
        self._ports.leave(index, "store.claim_next", point)
        return job

    async def claim(self, job_id: str, now: datetime) -> Job | None:
        index, point = self._ports.enter("store.claim")
        job = await self._inner.claim(job_id, now)
        await self._monitor.on_claim(job)
        self._ports.leave(index, "store.claim", point)
        return job

    async def record_process(self, job_id: str, handle: ProcessHandle) -> None:
        index, point = self._ports.enter("store.record_process")
        await self._inner.record_process(job_id, handle)
        self._ports.leave(index, "store.record_process", point)

    async def settle(
        self, job_id: str, outcome: Any, *, ctx: SettleContext, dedupe_ttl: timedelta
    ) -> Committed:
        index, point = self._ports.enter("store.settle")
        breaker = await self._monitor.breaker_before_settle(job_id)
        committed = await self._inner.settle(job_id, outcome, ctx=ctx, dedupe_ttl=dedupe_ttl)
        await self._monitor.on_settle(job_id, ctx, dedupe_ttl, committed, breaker)
        self._ports.leave(index, "store.settle", point)
        self._monitor.ack_settle(committed)
        return committed

    async def running(self) -> list[RunningJob]:
        return await self._plain("store.running", self._inner.running)

    async def recover(self, now: datetime) -> list[Any]:
        index, point = self._ports.enter("store.recover")
        settlements = await self._inner.recover(now)
        await self._monitor.on_recover(settlements)
        self._ports.leave(index, "store.recover", point)
        return settlements

    async def cancel_queued(self, plugin: str, *, reason: str, now: datetime) -> list[str]:
        index, point = self._ports.enter("store.cancel_queued")
        before = self._monitor.queued_of(plugin)
        ids = await self._inner.cancel_queued(plugin, reason=reason, now=now)
        await self._monitor.on_cancel(plugin, ids, before)
        self._ports.leave(index, "store.cancel_queued", point)
        return ids

    async def delete_finished(self, before: datetime) -> int:
        index, point = self._ports.enter("store.delete_finished")
        count = await self._inner.delete_finished(before)
        await self._monitor.on_delete(before, count)
        self._ports.leave(index, "store.delete_finished", point)
        return count

    async def fire(
        self,
        *,
        due: PlannedRun,
        next_run: PlannedRun,
        jobs: Sequence[Job],
        guard: Guard | None,
        actor: Actor,
        now: datetime,
        dedupe_ttl: timedelta,
    ) -> FireResult:
        index, point = self._ports.enter("store.fire")
        breaker = None
        outstanding = 0
        if guard is not None:
            breaker = await self._inner.get_breaker(guard.plugin, guard.command)
            outstanding = self._monitor.outstanding.get((guard.plugin, guard.command), 0)
        result = await self._inner.fire(
            due=due, next_run=next_run, jobs=jobs, guard=guard, actor=actor, now=now, dedupe_ttl=dedupe_ttl
        )
        await self._monitor.on_fire(
            due,
            jobs=jobs,
            guard=guard,
            breaker_before=breaker,
            outstanding=outstanding,
            result=result,
            now=now,
            ttl=dedupe_ttl,
        )
        if result.fired:
            self._monitor.on_put_planned(next_run)
        self._ports.leave(index, "store.fire", point)
        self._monitor.ack_fire(result)
        return result

    async def put_planned(self, run: PlannedRun) -> None:
        index, point = self._ports.enter("store.put_planned")
        await self._inner.put_planned(run)
        self._monitor.on_put_planned(run)
        self._ports.leave(index, "store.put_planned", point)

    async def put_init(self, record: InitRecord) -> None:
        index, point = self._ports.enter("store.put_init")
        await self._inner.put_init(record)
        self._monitor.on_put_init(record)
        self._ports.leave(index, "store.put_init", point)

    # ------------------------------------------------------------- plain calls
    async def get_job(self, job_id: str) -> Job | None:
        return await self._plain("store.get_job", lambda: self._inner.get_job(job_id))

    async def transitions(self, job_id: str) -> list[Transition]:
        return await self._plain("store.transitions", lambda: self._inner.transitions(job_id))

    async def runs(self, job_id: str) -> list[Any]:
        return await self._plain("store.runs", lambda: self._inner.runs(job_id))

    async def recent_runs(self, *, plugin: str | None = None, limit: int = 50) -> list[Any]:
        return await self._plain(
            "store.recent_runs", lambda: self._inner.recent_runs(plugin=plugin, limit=limit)
        )

    async def list_jobs(
        self, *, statuses: Sequence[JobStatus] | None = None, plugin: str | None = None, limit: int = 100
    ) -> list[Job]:
        return await self._plain(
            "store.list_jobs", lambda: self._inner.list_jobs(statuses=statuses, plugin=plugin, limit=limit)
        )

    async def queue_depth(self) -> int:
        return await self._plain("store.queue_depth", self._inner.queue_depth)

    async def outstanding(self, plugin: str, command: str) -> int:
        return await self._plain("store.outstanding", lambda: self._inner.outstanding(plugin, command))

    async def next_retry_at(self) -> datetime | None:
        return await self._plain("store.next_retry_at", self._inner.next_retry_at)

    async def get_state(self, plugin: str) -> dict[str, Any]:  # once per run: written out, no lambda
        index, point = self._ports.enter("store.get_state")
        state = await self._inner.get_state(plugin)
        self._ports.leave(index, "store.get_state", point)
        return state

    async def get_breaker(self, plugin: str, command: str) -> Breaker | None:
        return await self._plain("store.get_breaker", lambda: self._inner.get_breaker(plugin, command))

    async def breakers(self) -> list[Breaker]:
        return await self._plain("store.breakers", self._inner.breakers)

    async def reset_breakers(self, plugin: str) -> list[Breaker]:
        return await self._plain("store.reset_breakers", lambda: self._inner.reset_breakers(plugin))

    async def planned(self, key: str) -> PlannedRun | None:
        return await self._plain("store.planned", lambda: self._inner.planned(key))

    async def all_planned(self) -> list[PlannedRun]:
        return await self._plain("store.all_planned", self._inner.all_planned)

    async def due(self, start: datetime, end: datetime) -> list[PlannedRun]:  # twice per tick
        index, point = self._ports.enter("store.due")
        runs = await self._inner.due(start, end)
        self._ports.leave(index, "store.due", point)
        return runs

    async def delete_planned(self, key: str) -> None:
        await self._plain("store.delete_planned", lambda: self._inner.delete_planned(key))

    async def get_init(self, plugin: str) -> InitRecord | None:
        return await self._plain("store.get_init", lambda: self._inner.get_init(plugin))

    async def close(self) -> None:
        await self._plain("store.close", self._inner.close)


class ObservedSpawner:
    """The Spawner port, forwarded: each run numbered (maybe crashed) and observed."""

    def __init__(self, inner: ScriptedSpawner, ports: Ports, monitor: Monitor) -> None:
        self._inner = inner
        self._ports = ports
        self._monitor = monitor

    async def run(self, request: SpawnRequest, *, on_start: OnStart | None = None) -> SpawnOutcome:
        index, point = self._ports.enter("spawner.run")
        self._monitor.on_spawn_call(request)
        outcome = await self._inner.run(request, on_start=on_start)
        self._ports.leave(index, "spawner.run", point)
        return outcome

    async def kill_orphan(self, handle: ProcessHandle) -> bool:
        index, point = self._ports.enter("spawner.kill_orphan")
        killed = await self._inner.kill_orphan(handle)
        self._ports.leave(index, "spawner.kill_orphan", point)
        return killed


class _ScriptingCatalog:
    """The simulation's catalog, registering a script for every plugin it loads."""

    def __init__(self, sim: Simulation) -> None:
        self._sim = sim

    def discover(self, config: Config) -> Discovery:
        discovery = self._sim.catalog.discover(config)
        for name, plugin in discovery.plugins.items():
            if plugin.executable not in self._sim.spawner.scripts:
                self._sim.spawner.script(plugin.executable, self._sim.script_for(name))
        return discovery

    def verify(self, plugin: Plugin) -> str | None:
        return self._sim.catalog.verify(plugin)


# =========================================================================== results


@attrs.frozen(kw_only=True)
class JobReport:
    """One job as the simulation saw it, for the timeline."""

    id: str
    plugin: str
    command: str
    submitted_by: SubmittedBy
    status: JobStatus
    attempt: int
    max_attempts: int
    created_at: datetime
    completed_at: datetime | None
    last_error: str | None
    dedupe_key: str | None
    parent_job_id: str | None
    #: ``handle`` jobs: the type of the event they handle.
    event_type: str | None
    #: Scheduler jobs: the planned run that fired them.
    plan: PlannedRun | None
    runs: tuple[RunNote, ...]
    #: Ids of the children its success routed (new or the duplicates they matched).
    children: tuple[str, ...]
    #: Seconds each claim waited after the job became runnable.
    waits: tuple[float, ...]
    deleted: bool


@attrs.frozen(kw_only=True)
class PluginStats:
    plugin: str
    jobs: int
    runs: int
    successes: int
    failures: int
    retries: int
    dead: int
    mean_wait: float | None


@attrs.frozen(kw_only=True)
class SimulationResult:
    seed: int
    store: str
    start: datetime
    #: Where the main phase ended (the ``until`` of :meth:`Simulation.run`).
    end: datetime
    #: When the drain (no faults, no arrivals) left every job finished.
    finished: datetime
    trace: tuple[str, ...] = attrs.field(repr=False)
    trace_hash: str
    jobs: tuple[JobReport, ...] = attrs.field(repr=False)
    events: tuple[SimEvent, ...] = attrs.field(repr=False)
    stats: tuple[PluginStats, ...]
    crashes: int
    checks: int
    calls: int
    config: Config = attrs.field(repr=False)


def plugin_stats(jobs: Sequence[JobReport]) -> tuple[PluginStats, ...]:
    by_plugin: dict[str, list[JobReport]] = {}
    for job in jobs:
        by_plugin.setdefault(job.plugin, []).append(job)
    out = []
    for plugin, own in sorted(by_plugin.items()):
        runs = [r for j in own for r in j.runs]
        waits = [w for j in own for w in j.waits]
        successes = sum(1 for r in runs if r.result == "succeeded")
        out.append(
            PluginStats(
                plugin=plugin,
                jobs=len(own),
                runs=len(runs),
                successes=successes,
                failures=len(runs) - successes,
                retries=sum(1 for r in runs if r.status_after is JobStatus.QUEUED),
                dead=sum(1 for j in own if j.status is JobStatus.DEAD),
                mean_wait=sum(waits) / len(waits) if waits else None,
            )
        )
    return tuple(out)


# =========================================================================== the simulation


@attrs.define(eq=False)
class _Item:
    """Something due at an instant: an arrival or a reload."""

    kind: Literal["webhook", "cli", "reload"]
    data: Any = None


@contextlib.contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """Silence the engine's log while simulating (its lines would be the daemon's)."""
    logger = logging.getLogger("ductile")
    before = logger.disabled
    logger.disabled = enabled or before
    try:
        yield
    finally:
        logger.disabled = before


#: Collector thresholds while a run lasts: a run allocates millions of small objects and keeps most
#: of them (the ledger, the store, the trace), so at the default 700 the young collections keep
#: re-examining survivors; 30 simulated days ran ~20% faster with these. Cycles are still collected.
RUN_GC_THRESHOLD = (100_000, 50, 1000)


@contextlib.contextmanager
def _paced_collector() -> Iterator[None]:
    """Raise the collector's thresholds (never lower them) for a run; restore them after."""
    before = gc.get_threshold()
    gc.set_threshold(*(max(mine, theirs) for mine, theirs in zip(RUN_GC_THRESHOLD, before, strict=False)))
    try:
        yield
    finally:
        gc.set_threshold(*before)


#: ``memory``: the InMemoryStore fake as it is; ``indexed``: the same with indexes
#: (:class:`IndexedMemoryStore`, for long runs); ``sqlite``: the real adapter on a temp file.
StoreKind = Literal["memory", "indexed", "sqlite"]
STORE_KINDS: tuple[StoreKind, ...] = ("memory", "indexed", "sqlite")


class Simulation:
    """The engine on fakes, one seed, faults and invariants. See the module's docs.

    Use :meth:`run` for a whole run, or drive it step by step (``open``,
    ``boot``, ``tick``, ``dispatch``, ``submit``, ``reload``, ``crash``,
    ``advance``, ``check``, ``close``) as the state-machine test does.
    """

    def __init__(
        self,
        config: Config,
        *,
        seed: int,
        behaviours: Mapping[str, Behaviour] | None = None,
        store: StoreKind = "memory",
        faults: Faults = Faults(),
        arrivals: Arrivals = Arrivals(),
        reloads: Sequence[Reload] = (),
        catalog: SimCatalog | None = None,
        start: datetime = DEFAULT_START,
        replay: str | None = None,
        quiet: bool = True,
        memory_store: InMemoryStore | None = None,
    ) -> None:
        """``memory_store``: use this InMemoryStore (a test plants a bug in one)."""
        if store not in STORE_KINDS:
            raise ValueError(f"store must be one of {', '.join(STORE_KINDS)}, not {store!r}")
        if start.tzinfo is None:
            raise ValueError("the simulation's start must be an aware datetime")
        self.config = config
        self.seed = seed
        self.rng = random.Random(seed)
        self.behaviours = dict(behaviours or {})
        self.store_kind: StoreKind = store
        self.faults = faults
        self.arrivals = arrivals
        self.reloads = tuple(reloads)
        self.catalog = catalog if catalog is not None else SimCatalog(self.behaviours)
        self.start = start.astimezone(UTC)
        self.clock = FakeClock(self.start)
        self.spawner = ScriptedSpawner(clock=self.clock)
        self.ports = Ports(self)
        self.monitor = Monitor(self)
        self.replay = replay or f"python -m ductile.app.simulation --seed {seed}"
        self.quiet = quiet
        self.trace: list[str] = []
        self.crashes = 0
        self.engine: Engine | None = None
        if memory_store is not None and store == "sqlite":
            raise ValueError("memory_store goes with store='memory' or 'indexed'")
        self.inner: Store = memory_store or (IndexedMemoryStore() if store == "indexed" else InMemoryStore())
        self._directory: Path | None = None
        self._opened = False
        self._faults_on = True
        self._faults_until: datetime | None = self.start + faults.until if faults.until is not None else None
        self._armed: tuple[int, CrashPoint] | None = None
        self._may_crash = faults.crash_at is not None or bool(faults.crash_rate)
        self._texts: dict[int, tuple[Behaviour, str]] = {}
        self._auto_emit: tuple[tuple[Route, ...], dict[str, tuple[str, ...]]] = (config.routes, {})
        self._forced: list[Behaviour] = []
        self._agenda: list[tuple[datetime, int, _Item]] = []
        self._seq = 0
        self._next_tick = self.start
        self._idle = False
        self._webhooks_sent = 0
        self._keys: list[str] = []
        self._end: datetime | None = None
        self._last_crash = self.start

    # ------------------------------------------------------------- plumbing for the parts
    def note(self, line: str) -> None:
        self.trace.append(f"{_stamp(self.clock.now())} {line}")

    def violation(self, code: str, detail: str) -> InvariantError:
        return InvariantError(
            f"{code} ({INVARIANTS.get(code, '?')})",
            detail,
            at=self.clock.now(),
            replay=self.replay,
            trace=self.trace,
        )

    def new_id(self) -> str:
        """``str(uuid.UUID(int=self.rng.getrandbits(128), version=4))``, bit for bit, without
        the UUID object (one per job)."""
        bits = self.rng.getrandbits(128) & _V4_CLEAR | _V4_SET
        h = f"{bits:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def crash_decision(self, index: int) -> CrashPoint | None:
        if self._armed is not None and self._armed[0] == index:
            point = self._armed[1]
            self._armed = None
            return point
        if not self._may_crash:  # neither crash_at nor crash_rate: nothing below can fire or draw
            return None
        if not self._faults_active():
            return None
        if self.faults.crash_at == index:
            return self.faults.crash_point
        if self.faults.crash_rate and self.rng.random() < self.faults.crash_rate:
            return self.rng.choice(CRASH_POINTS)
        return None

    def _faults_active(self) -> bool:
        if not self._faults_on or self.crashes >= self.faults.max_crashes:
            return False
        now = self.clock.now()
        if self.faults.spacing and now < self._last_crash + self.faults.spacing:
            return False
        return self._faults_until is None or now < self._faults_until

    def script_for(self, plugin: str) -> Callable[[SpawnRequest], SpawnOutcome]:
        def run(request: SpawnRequest) -> SpawnOutcome:
            return self._perform(plugin, request)

        return run

    def auto_emit(self, plugin: str) -> tuple[str, ...]:
        """The event types the plugin's routes listen for (the default of ``ok``)."""
        routes, cache = self._auto_emit
        if routes is not self.config.routes:  # a reload: derive again
            routes, cache = self.config.routes, {}
            self._auto_emit = (routes, cache)
        found = cache.get(plugin)
        if found is None:
            found = cache[plugin] = tuple(sorted({r.event_type for r in routes if r.source == plugin}))
        return found

    def _perform(self, plugin: str, request: SpawnRequest) -> SpawnOutcome:
        body = json.loads(request.stdin)
        command = str(body["command"])
        job_id = str(body["job_id"])
        attempt = int(request.env.get("DUCTILE_ATTEMPT", "0"))
        behaviour = self._forced.pop(0) if self._forced else behaviour_for(self.behaviours, plugin, command)
        state = body.get("state") or {}
        outcome, expectation = self._outcome(plugin, command, behaviour, state, request.timeout)
        self.monitor.on_spawned(job_id, attempt, expectation)
        self.note(f"run {_ref(job_id)} {plugin}.{command} [{expectation.behaviour}] -> {expectation.verdict}")
        return outcome

    def _outcome(
        self, plugin: str, command: str, behaviour: Behaviour, state: Mapping[str, Any], timeout: float
    ) -> tuple[SpawnOutcome, Expectation]:
        took = behaviour.duration.total_seconds()
        kind = behaviour.kind
        known = self._texts.get(id(behaviour))
        if known is None or known[0] is not behaviour:  # str() once per behaviour, not per run
            known = self._texts[id(behaviour)] = (behaviour, str(behaviour))
        text = known[1]
        if kind is Kind.TIMEOUT:
            return SpawnOutcome(timed_out=True, duration=timeout), Expectation("retryable", behaviour=text)
        if kind is Kind.EXIT78:
            outcome = SpawnOutcome(
                exit_code=78, stderr_tail=b"simulated: exit 78 (EX_CONFIG)\n", duration=took
            )
            return outcome, Expectation("fatal", behaviour=text)
        if kind is Kind.GARBAGE:
            outcome = SpawnOutcome(exit_code=0, stdout=self.rng.choice(GARBAGE), duration=took)
            return outcome, Expectation("retryable", behaviour=text)
        failing = kind is Kind.ERROR or (kind is Kind.FLAKY and self.rng.random() < behaviour.rate)
        if failing:
            fatal = kind is Kind.ERROR and behaviour.fatal
            body: dict[str, Any] = {
                "status": "error",
                "error": f"simulated {kind} failure",
                "retry": not fatal,
            }
            outcome = SpawnOutcome(exit_code=0, stdout=json.dumps(body).encode(), duration=took)
            verdict: Literal["ok", "retryable", "fatal"] = "fatal" if fatal else "retryable"
            if took > timeout:
                verdict = "retryable"
            return outcome, Expectation(verdict, behaviour=text)
        body = {"status": "ok"}
        events: tuple[EmittedEvent, ...] = ()
        if command != Command.INIT:
            count = state.get("count", 0)
            count = count + 1 if isinstance(count, int) else 1
            if behaviour.emit is not None:
                types = behaviour.emit
            else:  # by default only polls emit: a handler that re-emitted could loop forever
                types = self.auto_emit(plugin) if command == Command.POLL else ()
            events = tuple(
                EmittedEvent(
                    type=t,
                    payload={"n": count},
                    dedupe_key=f"{t}-{count // behaviour.dedupe}" if behaviour.dedupe else None,
                )
                for t in types
            )
            body["state_updates"] = {"count": count}
            body["events"] = [
                {
                    "type": e.type,
                    "payload": e.payload,
                    **({"dedupe_key": e.dedupe_key} if e.dedupe_key else {}),
                }
                for e in events
            ]
        outcome = SpawnOutcome(exit_code=0, stdout=json.dumps(body).encode(), duration=took)
        if took > timeout:  # the spawner kills it at the deadline: a timeout, whatever it would have said
            return outcome, Expectation("retryable", behaviour=text)
        return outcome, Expectation("ok", events=events, behaviour=text)

    def _new_engine(self) -> Engine:
        return Engine(
            config=self.config,
            store=ObservedStore(self.inner, self.ports, self.monitor),
            spawner=ObservedSpawner(self.spawner, self.ports, self.monitor),
            clock=self.clock,
            inbox=FakeInbox(self.clock),
            catalog=_ScriptingCatalog(self),
            draw=self.rng.random,
            new_id=self.new_id,
            environ={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )

    async def _open_store(self) -> Store:
        if self.store_kind != "sqlite":
            return self.inner
        from ductile.adapters.sqlite import SqliteStore

        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="ductile-sim-"))
        # A simulated kill -9 loses no committed unit in any synchronous mode (PITFALLS);
        # OFF only spares the disk.
        return await SqliteStore.open(self._directory / "ductile.db", synchronous="OFF")

    # ------------------------------------------------------------- steps
    async def _step(
        self, action: Callable[[], Awaitable[None]], *, retry: Callable[[], None] | None = None
    ) -> bool:
        """Run one step; a crash inside it restarts the process. True when it completed."""
        try:
            await action()
        except SimulatedCrash as crash:
            if retry is not None:
                retry()
            await self._restart(crash)
            return False
        self.monitor.after_step()
        return True

    async def _restart(self, crash: SimulatedCrash | None) -> None:
        """kill -9 and start again: a new engine on the same store; ``start()`` recovers."""
        while True:
            self.crashes += 1
            self._last_crash = self.clock.now()
            self.engine = None
            what = f"{crash.point} call {crash.call} ({crash.name})" if crash is not None else "while idle"
            self.note(f"crash {what}")
            self.monitor.event("crash", None, f"simulated crash {what}")
            if self.store_kind == "sqlite":
                await self.inner.close()
                self.inner = await self._open_store()
            if self.faults.downtime and self._faults_active():
                self.clock.advance(self.faults.downtime * self.rng.random())
            self.note("restart")
            try:
                self.engine = self._new_engine()
                await self.engine.start()
            except SimulatedCrash as again:
                crash = again
                continue
            break
        self._next_tick = self.clock.now()
        self._idle = False
        await self.monitor.full_check()
        self.monitor.after_step()

    async def _tick_action(self) -> None:
        assert self.engine is not None
        self._next_tick = await self.engine.tick()

    async def _dispatch_action(self) -> None:
        assert self.engine is not None
        self._idle = not await self.engine.dispatch_one()

    def _push(self, at: datetime, item: _Item) -> None:
        self._seq += 1
        heapq.heappush(self._agenda, (at, self._seq, item))

    async def _apply_next(self) -> None:
        _, _, item = heapq.heappop(self._agenda)
        self._idle = False
        if item.kind == "reload":
            await self._step(lambda: self._reload_action(item))
        else:
            await self._step(lambda: self._arrive(item), retry=lambda: self._push(self.clock.now(), item))

    async def _reload_action(self, item: _Item) -> None:
        if not isinstance(item.data, tuple):
            reload: Reload = item.data
            item.data = reload.choices[self.rng.randrange(len(reload.choices))]
        label, config = item.data
        await self._reload_to(config, label)

    async def _reload_to(self, config: Config, label: str) -> None:
        assert self.engine is not None
        self.config = config  # the operator edited the file first: a restart reads the new one
        self.note(f"reload {label}")
        self.monitor.event("reload", None, f"configuration reloaded: {label}")
        await self.engine.reload(config)

    async def _arrive(self, item: _Item) -> None:
        assert self.engine is not None
        if item.kind == "webhook":
            hooks = self.config.webhooks
            endpoints = hooks.endpoints if hooks is not None else ()
            if item.data is None:
                if not endpoints:
                    self.note("webhook dropped: no endpoint configured")
                    return
                endpoint = endpoints[self.rng.randrange(len(endpoints))]
                key = None
                if self.rng.random() < self.arrivals.keyed:
                    if self._keys and self.rng.random() < self.arrivals.redeliver:
                        key = self._keys[self.rng.randrange(len(self._keys))]
                    else:
                        key = f"delivery-{len(self._keys) + 1}"
                        self._keys.append(key)
                self._webhooks_sent += 1
                item.data = (endpoint.path, key, self._webhooks_sent)
            path, key, number = item.data
            found = next((e for e in endpoints if e.path == path), None)
            if found is None:
                self.note(f"webhook {path} -> 404 (endpoint gone)")
                return
            await self._deliver(found, key, number)
        else:
            if item.data is None:
                names = sorted(n for n, p in self.config.plugins.items() if p.schedule is not None) or sorted(
                    self.config.plugins
                )
                if not names:
                    return
                item.data = names[self.rng.randrange(len(names))]
            try:
                result = await self.engine.enqueue(
                    item.data, command=Command.POLL, submitted_by=SubmittedBy.CLI
                )
            except EnqueueRefusedError as e:
                self.note(f"cli run {item.data} refused: {e}")
                return
            self.monitor.ack(result.job_id, "cli")

    async def _deliver(self, endpoint: Endpoint, key: str | None, number: int) -> None:
        assert self.engine is not None
        now = self.clock.now()
        event: dict[str, Any] = {
            "type": endpoint.event_type,
            "payload": {"delivery": number},
            "headers": {},
            "source": f"webhook:{endpoint.path}",
            "timestamp": _stamp(now),
            "event_id": event_id_for(f"webhook:{self.new_id()}", 0),
        }
        if key is not None:
            event["dedupe_key"] = key
        result = await self.engine.enqueue(
            endpoint.plugin,
            command=Command.HANDLE,
            payload=event,
            dedupe_key=key,
            submitted_by=SubmittedBy.WEBHOOK,
            strict=False,
        )
        self.monitor.ack(result.job_id, "webhook")

    async def _next_retry(self) -> datetime | None:
        return await self.inner.next_retry_at()

    async def _loop(self, end: datetime | None) -> None:
        """Tick when due, apply what arrived, dispatch until idle, jump to the next
        instant anything can happen. ``end`` None: drain until every pending job ended."""
        stall = 0
        while True:
            now = self.clock.now()
            if end is not None and now >= end:
                return
            if end is None and all(
                self.monitor.jobs[i].job.status in TERMINAL for i in self.monitor.deadlines
            ):
                return
            stall += 1
            if stall > STALL_LIMIT:
                raise _Violation(
                    self.violation("I8", f"no progress after {STALL_LIMIT} steps at {_stamp(now)}")
                )
            if now >= self._next_tick:
                await self._step(self._tick_action)
                continue
            if self._agenda and self._agenda[0][0] <= now:
                await self._apply_next()
                continue
            if not self._idle:
                worked = await self._step(self._dispatch_action) and not self._idle
                if worked:
                    stall = 0
                continue
            candidates = [self._next_tick]
            retry_at = await self._next_retry()
            if retry_at is not None:
                candidates.append(retry_at)
            if self._agenda:
                candidates.append(self._agenda[0][0])
            if end is not None:
                candidates.append(end)
            target = min(candidates)
            if target > now:
                self.clock.set(target)
                stall = 0
            self._idle = False

    def _plan_agenda(self, end: datetime) -> None:
        span = end - self.start
        streams = (("webhook", self.arrivals.webhooks_per_day), ("cli", self.arrivals.cli_per_day))
        for kind, per_day in streams:
            if per_day <= 0:
                continue
            at = self.start
            while True:
                at += timedelta(seconds=self.rng.expovariate(per_day / 86400.0))
                if at >= end:
                    break
                self._push(at, _Item(kind=kind))  # type: ignore[arg-type]
        for reload in self.reloads:
            offset = reload.at if reload.at is not None else span * (0.1 + 0.8 * self.rng.random())
            self._push(self.start + offset, _Item(kind="reload", data=reload))

    def _deadlines(self) -> dict[str, datetime]:
        """I8: for each unfinished job, when it must have ended at the latest."""
        stop = self.clock.now()
        pending = [
            t.job for t in self.monitor.jobs.values() if not t.deleted and t.job.status not in TERMINAL
        ]
        grace = KILL_GRACE
        timeouts = [self.config.plugin(name).timeouts for name in self.config.plugins] + [Timeouts()]
        longest = max(max(t.poll, t.handle, t.health, t.init) for t in timeouts)

        def left(job: Job) -> int:
            return job.max_attempts - job.attempt + 1

        def timeout(job: Job) -> timedelta:
            return self.config.plugin(job.plugin).timeouts.for_command(job.command)

        ahead = sum((left(j) * (timeout(j) + grace) for j in pending), timedelta(0))
        out = {}
        for job in pending:
            policy = self.config.plugin(job.plugin).retry
            waits = sum(
                (backoff_bound(policy, n) for n in range(job.attempt, job.max_attempts)), timedelta(0)
            )
            begin = max(stop, job.next_retry_at or stop)
            out[job.id] = begin + ahead + waits + left(job) * (longest + grace)
        return out

    # ------------------------------------------------------------- the public steps
    async def open(self) -> None:
        """Open the store (a fresh one). Call :meth:`boot` next."""
        if self._opened:
            raise RuntimeError("this simulation was already opened")
        self._opened = True
        self.inner = await self._open_store()

    async def boot(self) -> None:
        """The first start: discovery, init, schedules (crashes restart it)."""
        try:
            self.note(f"boot seed {self.seed}")
            with _quiet(self.quiet):
                self.engine = self._new_engine()
                try:
                    await self.engine.start()
                except SimulatedCrash as crash:
                    await self._restart(crash)
                self.monitor.after_step()
                self._next_tick = self.clock.now()
        except _Violation as v:
            raise v.error from None

    async def tick(self) -> None:
        await self._public(lambda: self._step(self._tick_action))

    async def dispatch(self, behaviour: Behaviour | None = None) -> bool:
        """Run the oldest runnable job (the next spawn follows ``behaviour`` if given).
        True when a job was taken (False when idle or a crash cut the step short)."""
        if behaviour is not None:
            self._forced = [behaviour]
        completed = await self._public(lambda: self._step(self._dispatch_action))
        self._forced = []
        return completed and not self._idle

    async def submit(
        self,
        plugin: str,
        *,
        command: str = Command.POLL,
        dedupe_key: str | None = None,
        submitted_by: SubmittedBy = SubmittedBy.CLI,
        strict: bool = False,
    ) -> EnqueueResult | None:
        """An enqueue from outside (webhook, CLI, API); None when refused or cut by a crash."""
        answer: list[EnqueueResult] = []

        async def action() -> None:
            assert self.engine is not None
            try:
                result = await self.engine.enqueue(
                    plugin, command=command, dedupe_key=dedupe_key, submitted_by=submitted_by, strict=strict
                )
            except EnqueueRefusedError as e:
                self.note(f"enqueue {plugin}.{command} refused: {e}")
                return
            self.monitor.ack(result.job_id, submitted_by.value)
            answer.append(result)

        await self._public(lambda: self._step(action))
        return answer[0] if answer else None

    async def reload(self, config: Config, label: str = "reload") -> None:
        await self._public(lambda: self._step(lambda: self._reload_to(config, label)))

    async def crash(self) -> None:
        """kill -9 between steps, and restart."""
        await self._public(lambda: self._restart(None))

    def advance(self, delta: timedelta) -> None:
        """Let simulated time pass (nothing runs meanwhile)."""
        self.clock.advance(delta)
        self._idle = False

    def arm_crash(self, calls_from_now: int, point: CrashPoint) -> None:
        """Crash at the ``calls_from_now``-th port call from now (1: the next one)."""
        self._armed = (self.ports.calls + calls_from_now, point)

    def disarm(self) -> None:
        self._armed = None

    async def drain(self) -> None:
        """Stop faults and arrivals, then run until every unfinished job has ended,
        each before its I8 deadline; then check everything."""
        self._faults_on = False
        self._armed = None
        dropped = len(self._agenda)
        self._agenda = []
        dropped_text = f", {dropped} pending arrival(s) dropped" if dropped else ""
        self.note(f"end of run: faults off{dropped_text}; draining")
        self.monitor.deadlines = self._deadlines()
        await self._public(lambda: self._loop(None))
        self.monitor.deadlines = {}
        await self.check()

    async def check(self) -> None:
        """Every invariant against the whole store, now."""
        await self._public(self.monitor.full_check)

    async def _public(self, action: Callable[[], Awaitable[T]]) -> T:
        try:
            with _quiet(self.quiet):
                return await action()
        except _Violation as v:
            raise v.error from None

    async def close(self) -> None:
        if self.store_kind == "sqlite" and self._opened:
            await self.inner.close()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    async def run(self, until: datetime | timedelta) -> SimulationResult:
        """Simulate from the start to ``until``, then drain without faults or arrivals
        until every job has ended (I8), check everything, and report."""
        end = self.start + until if isinstance(until, timedelta) else until.astimezone(UTC)
        if end <= self.start:
            raise ValueError("a simulation must end after it starts")
        self._end = end
        with _paced_collector():
            await self.open()
            try:
                self._plan_agenda(end)
                await self.boot()
                await self._public(lambda: self._loop(end))
                await self.drain()
            finally:
                await self.close()
            return self.result()

    def result(self) -> SimulationResult:
        jobs = tuple(
            JobReport(
                id=t.job.id,
                plugin=t.job.plugin,
                command=t.job.command,
                submitted_by=t.job.submitted_by,
                status=t.job.status,
                attempt=t.job.attempt,
                max_attempts=t.job.max_attempts,
                created_at=t.job.created_at,
                completed_at=t.job.completed_at,
                last_error=t.job.last_error,
                dedupe_key=t.job.dedupe_key,
                parent_job_id=t.job.parent_job_id,
                event_type=t.job.payload.get("type") if t.job.command == Command.HANDLE else None,
                plan=t.plan,
                runs=tuple(t.runs),
                children=tuple(t.children),
                waits=tuple(t.waits),
                deleted=t.deleted,
            )
            for t in self.monitor.jobs.values()
        )
        digest = hashlib.sha256("\n".join(self.trace).encode()).hexdigest()
        return SimulationResult(
            seed=self.seed,
            store=self.store_kind,
            start=self.start,
            end=self._end or self.clock.now(),
            finished=self.clock.now(),
            trace=tuple(self.trace),
            trace_hash=digest,
            jobs=jobs,
            events=tuple(self.monitor.events),
            stats=plugin_stats(jobs),
            crashes=self.crashes,
            checks=self.monitor.checks,
            calls=self.ports.calls,
            config=self.config,
        )


# =========================================================================== scenarios


@attrs.frozen(kw_only=True)
class Scenario:
    """A named, reproducible simulation setup: replayable from its name and a seed."""

    name: str
    config: Config
    behaviours: Mapping[str, Behaviour]
    faults: Faults
    arrivals: Arrivals
    reloads: tuple[Reload, ...]
    duration: timedelta
    start: datetime = datetime(2026, 3, 28, 0, 0, tzinfo=UTC)

    def replay(self, seed: int, *, store: StoreKind = "memory", days: float | None = None) -> str:
        command = f"python -m ductile.app.simulation --seed {seed} --scenario {self.name}"
        if store != "memory":
            command += f" --store {store}"
        if days is not None:
            command += f" --days {days:g}"
        return command

    def simulation(
        self, seed: int, *, store: StoreKind = "memory", days: float | None = None, **overrides: Any
    ) -> Simulation:
        fields: dict[str, Any] = {
            "behaviours": self.behaviours,
            "faults": self.faults,
            "arrivals": self.arrivals,
            "reloads": self.reloads,
            "start": self.start,
            "replay": self.replay(seed, store=store, days=days),
        }
        fields.update(overrides)
        return Simulation(self.config, seed=seed, store=store, **fields)

    def until(self, days: float | None = None) -> timedelta:
        return self.duration if days is None else timedelta(days=days)


def _every(interval: timedelta, tz: tzinfo, **kw: Any) -> Schedule:
    return Schedule(tz=tz, every=interval, **kw)


def sweep_scenario(days: float = 1.5) -> Scenario:
    """The canonical scenario of the seed sweep.

    A scheduled counter whose events are routed to two handlers (with dedupe
    keys shared by pairs of events), a flaky poller whose slow retries meet the
    poll guard and whose breaker opens, a plugin that exits 78 more often than
    its breaker resets, one that always times out, one that prints garbage;
    a handler with an ``init`` that sometimes fails; webhook-like deliveries
    with redelivered dedupe keys and CLI runs; two reloads (one drawn mutation,
    then back); crashes at random port calls with a few minutes of downtime.
    Starts the day before Europe's spring-forward change.
    """
    from zoneinfo import ZoneInfo

    from ductile.domain.schedule import Window

    berlin = ZoneInfo("Europe/Berlin")
    minute = timedelta(minutes=1)
    plugins = (
        PluginConfig(name="counter", schedule=_every(60 * minute, berlin, jitter=8 * minute)),
        PluginConfig(
            name="flaky",
            schedule=_every(60 * minute, UTC),
            retry=RetryPolicy(max_attempts=3, backoff_base=25 * minute),
            circuit_breaker=BreakerPolicy(threshold=3, reset_after=150 * minute),
        ),
        PluginConfig(
            name="broken",
            schedule=Schedule(tz=berlin, cron="*/20 * * * *"),
            circuit_breaker=BreakerPolicy(threshold=2, reset_after=50 * minute),
        ),
        PluginConfig(
            name="sleepy",
            schedule=_every(180 * minute, berlin, jitter=20 * minute, window=Window.parse("06:00", "22:00")),
            timeouts=Timeouts(poll=timedelta(seconds=60)),
            retry=RetryPolicy(max_attempts=2, backoff_base=minute),
        ),
        PluginConfig(name="garbled", schedule=_every(120 * minute, UTC), retry=RetryPolicy(max_attempts=2)),
        PluginConfig(name="mailer"),
        PluginConfig(
            name="archive",
            config={"bucket": "a"},
            retry=RetryPolicy(max_attempts=3, backoff_base=timedelta(seconds=20)),
        ),
    )
    routes = (
        Route(source="counter", event_type="counter.ticked", target="mailer"),
        Route(source="counter", event_type="counter.ticked", target="archive"),
    )
    config = Config(
        service=ServiceConfig(
            state_dir=f"{SIM_ROOT}/state",
            tick_interval=10 * minute,
            dedupe_ttl=timedelta(hours=1),
            job_log_retention=timedelta(hours=3),
        ),
        plugins_dir=SIM_ROOT,
        plugins={p.name: p for p in plugins},
        routes=routes,
        webhooks=WebhooksConfig(
            endpoints=(
                Endpoint(path="/hook/mail", plugin="mailer", secret="sim", dedupe_header="X-Delivery"),  # noqa: S106
            )
        ),
    )

    def changed(
        *replace: PluginConfig, drop: str | None = None, routes: tuple[Route, ...] | None = None
    ) -> Config:
        new = {n: p for n, p in config.plugins.items() if n != drop}
        new.update({p.name: p for p in replace})
        return attrs.evolve(config, plugins=new, routes=config.routes if routes is None else routes)

    counter, flaky, archive, mailer = (config.plugins[n] for n in ("counter", "flaky", "archive", "mailer"))
    mutations = (
        ("counter every 25m", changed(attrs.evolve(counter, schedule=_every(25 * minute, berlin)))),
        ("flaky disabled", changed(attrs.evolve(flaky, enabled=False))),
        ("archive removed", changed(drop="archive")),
        ("mailer disabled", changed(attrs.evolve(mailer, enabled=False))),
        ("archive config changed", changed(attrs.evolve(archive, config={"bucket": "b"}))),
        (
            "late added",
            changed(
                PluginConfig(name="late", schedule=_every(40 * minute, UTC)),
                routes=(*config.routes, Route(source="late", event_type="late.done", target="mailer")),
            ),
        ),
    )
    behaviours = {
        "counter": parse_behaviour("ok:dedupe=2"),
        "flaky": parse_behaviour("flaky:0.5"),
        "broken": parse_behaviour("exit78"),
        "sleepy": parse_behaviour("slow:90s"),
        "garbled": parse_behaviour("garbage"),
        "mailer": parse_behaviour("flaky:0.1"),
        "archive.handle": parse_behaviour("flaky:0.2:took=5s"),
        "archive.init": parse_behaviour("flaky:0.2"),
        "late": parse_behaviour("ok:emit=late.done"),
    }
    return Scenario(
        name="sweep",
        config=config,
        behaviours=behaviours,
        faults=Faults(crash_rate=0.001, max_crashes=4, downtime=timedelta(minutes=45)),
        arrivals=Arrivals(webhooks_per_day=20, cli_per_day=4, keyed=0.6, redeliver=0.4),
        reloads=(Reload(choices=mutations), Reload(choices=(("back to the original", config),))),
        duration=timedelta(days=days),
    )


def quiet_scenario(days: float = 1.5) -> Scenario:
    """The sweep's config and plugins without faults, arrivals or reloads: a baseline."""
    base = sweep_scenario(days)
    return attrs.evolve(base, name="quiet", faults=Faults(), arrivals=Arrivals(), reloads=())


SCENARIOS: dict[str, Callable[[], Scenario]] = {"sweep": sweep_scenario, "quiet": quiet_scenario}


async def run_scenario(
    name: str, seed: int, *, store: StoreKind = "memory", days: float | None = None
) -> SimulationResult:
    """One seed of a named scenario (raises :class:`InvariantError` with its replay command)."""
    scenario = SCENARIOS[name]()
    return await scenario.simulation(seed, store=store, days=days).run(scenario.until(days))


# =========================================================================== ductile simulate


def dst_changes(tz: tzinfo, start: datetime, end: datetime) -> list[tuple[datetime, timedelta, timedelta]]:
    """UTC-offset changes of ``tz`` in ``[start, end)``: (instant, offset before, offset after),
    to the minute."""
    out: list[tuple[datetime, timedelta, timedelta]] = []
    hour = timedelta(hours=1)

    def offset(at: datetime) -> timedelta:
        return at.astimezone(tz).utcoffset() or timedelta(0)

    at = start.astimezone(UTC)
    before = offset(at)
    while at < end:
        nxt = min(at + hour, end)
        after = offset(nxt)
        if after != before:
            lo, hi = at, nxt
            while hi - lo > timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                if offset(mid) == before:
                    lo = mid
                else:
                    hi = mid
            change = hi.replace(second=0, microsecond=0)
            if offset(change) == before:  # pragma: no cover - offsets change on whole minutes
                change += timedelta(minutes=1)
            out.append((change, before, after))
            before = after
        at = nxt
    return out


def _offset_text(value: timedelta) -> str:
    minutes = int(value.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def disk_catalog(config: Config, behaviours: Mapping[str, Behaviour]) -> tuple[SimCatalog, str | None]:
    """The simulated catalog for an operator's config: the manifests and refusals the
    real plugins directory gives (read only: nothing is executed), or, when there is
    no such directory, every configured plugin with the default simulated manifest."""
    from ductile.app.catalog import FilesystemCatalog

    if not Path(config.plugins_dir).is_dir():
        note = f"plugins_dir {config.plugins_dir} does not exist: every configured plugin is simulated as is"
        return SimCatalog(behaviours), note
    found = FilesystemCatalog().discover(config)
    manifests = {name: plugin.manifest for name, plugin in found.plugins.items()}
    refusals = {r.name: r.reason for r in found.refused}
    return SimCatalog(behaviours, manifests=manifests, refusals=refusals), None


def _behaviours_from_args(
    assignments: Sequence[str], failures: Sequence[str], known: Collection[str]
) -> dict[str, Behaviour]:
    """``--behaviour KEY=B`` and ``--fail PLUGIN=RATE`` (sugar for ``PLUGIN=flaky:RATE``)."""
    out: dict[str, Behaviour] = {}
    given = [(text, "--behaviour") for text in assignments] + [(text, "--fail") for text in failures]
    for text, flag in given:
        if flag == "--fail":
            plugin, eq, rate = text.partition("=")
            if not eq:
                raise BehaviourError(f"--fail {text!r}: write PLUGIN=RATE, e.g. --fail notify=0.3")
            key, behaviour = plugin.strip(), parse_behaviour(f"flaky:{rate.strip()}")
        else:
            key, behaviour = parse_assignment(text)
        plugin, _ = split_key(key)
        if plugin not in known:
            names = ", ".join(sorted(known)) or "none"
            raise BehaviourError(f"{flag} {text!r}: no plugin '{plugin}' in this config (plugins: {names})")
        if key in out:
            raise BehaviourError(f"{flag} {text!r}: '{key}' is given a behaviour twice")
        out[key] = behaviour
    return out


def _crash_faults(days: float) -> Faults:
    """``--check``: a few crashes at random port calls, spread over the run."""
    crashes = max(3, round(2 * days))
    return Faults(
        crash_rate=0.02,
        max_crashes=crashes,
        downtime=timedelta(minutes=2),
        spacing=timedelta(days=days) / (crashes + 1),
    )


async def simulate_cli(ctx: Any, args: argparse.Namespace) -> int:
    """``ductile simulate``: the operator's own config through the simulator."""
    from ductile.app.cli import EXIT_FAILURE, EXIT_OK, UsageError, _load, parse_time

    config = _load(ctx, args)
    if not 0 < args.days <= 366:
        raise UsageError(f"--days must be more than 0 and at most 366, not {args.days:g}")
    if args.webhooks_per_day < 0:
        raise UsageError(f"--webhooks-per-day cannot be negative ({args.webhooks_per_day:g})")
    start = parse_time(args.start, now=ctx.now(), tz=ctx.tz).replace(microsecond=0)
    catalog, note = disk_catalog(config, {})
    known = set(config.plugins) | set(catalog.manifests) | set(catalog.refusals)
    try:
        behaviours = _behaviours_from_args(args.behaviour or (), args.fail or (), known)
    except BehaviourError as e:
        raise UsageError(str(e)) from None
    catalog.behaviours = behaviours
    if note is not None:
        ctx.note(note)
    replay = " ".join(
        [
            "ductile simulate",
            f"--config {config.source}",
            f"--seed {args.seed}",
            f"--start {start.astimezone(UTC).isoformat()}",
            f"--days {args.days:g}",
            *(f"--behaviour {b}" for b in args.behaviour or ()),
            *(f"--fail {f}" for f in args.fail or ()),
            *([f"--webhooks-per-day {args.webhooks_per_day:g}"] if args.webhooks_per_day else []),
            *([f"--store {args.store}"] if args.store != "memory" else []),
            *(["--check"] if args.check else []),
        ]
    )
    sim = Simulation(
        config,
        seed=args.seed,
        behaviours=behaviours,
        store="indexed" if args.store == "memory" else args.store,
        faults=_crash_faults(args.days) if args.check else Faults(),
        arrivals=Arrivals(webhooks_per_day=args.webhooks_per_day),
        catalog=catalog,
        start=start,
        replay=replay,
    )
    try:
        result = await sim.run(timedelta(days=args.days))
    except InvariantError as e:
        ctx.note(str(e))
        return EXIT_FAILURE
    report = build_report(result, catalog, behaviours, days=args.days)
    if args.json:
        ctx.json(report)
    else:
        render_text(ctx, report, show=args.show, tz=ctx.tz)
    return EXIT_OK


def _iso(at: datetime | None) -> str | None:
    if at is None:
        return None
    from ductile.domain.protocol import iso_utc

    return iso_utc(at)


def build_report(
    result: SimulationResult, catalog: SimCatalog, behaviours: Mapping[str, Behaviour], *, days: float
) -> dict[str, Any]:
    """What ``ductile simulate --json`` prints (and the text output is drawn from)."""
    from ductile.app.cli import _zone_name, local_time, schedule_summary

    config = result.config
    discovery = catalog.discover(config)
    routes_of: dict[str, tuple[str, ...]] = {}
    for route in config.routes:
        routes_of.setdefault(route.source, ())
        if route.event_type not in routes_of[route.source]:
            routes_of[route.source] += (route.event_type,)
    plugins = []
    unhealthy = {e.plugin: e.detail for e in result.events if e.kind == "unhealthy"}
    for name in sorted(set(config.plugins) | set(discovery.plugins) | {r.name for r in discovery.refused}):
        settings = config.plugin(name)
        refusal = next((r.reason for r in discovery.refused if r.name == name), None)
        if name in discovery.disabled:
            state, reason = "disabled", None
        elif refusal is not None:
            state, reason = "refused", refusal
        elif name in unhealthy:
            state, reason = "unhealthy", unhealthy[name]
        else:
            state, reason = "loaded", None
        schedule = settings.schedule if settings.enabled else None
        commands = sorted(catalog.manifest(name).commands)
        shown = {c: str(behaviour_for(behaviours, name, c)) for c in commands if c != Command.HEALTH}
        plugins.append(
            {
                "name": name,
                "state": state,
                "reason": reason,
                "schedule": schedule_summary(schedule) if schedule is not None else None,
                "timezone": _zone_name(schedule.tz) if schedule is not None else None,
                "behaviour": shown,
                "described": behaviour_for(behaviours, name, Command.POLL).describe(routes_of.get(name, ())),
            }
        )
    zones = {p.name: p.schedule.tz for p in config.plugins.values() if p.schedule is not None}
    by_id = {j.id: j for j in result.jobs}
    runs = []
    for job in sorted(
        result.jobs, key=lambda j: (j.plan.planned_at if j.plan else j.created_at, j.created_at, j.id)
    ):
        tz = zones.get(job.plugin)
        plan = job.plan
        runs.append(
            {
                "id": job.id,
                "plugin": job.plugin,
                "command": job.command,
                "submitted_by": job.submitted_by.value,
                "status": job.status.value,
                "attempts": len(job.runs),
                "max_attempts": job.max_attempts,
                "created_at": _iso(job.created_at),
                "completed_at": _iso(job.completed_at),
                "planned_at": _iso(plan.planned_at) if plan else None,
                "planned_local": local_time(plan.planned_at, tz) if plan and tz else None,
                "nominal_at": _iso(plan.nominal_at) if plan else None,
                "nominal_local": local_time(plan.nominal_at, tz) if plan and tz else None,
                "offset_seconds": plan.offset.total_seconds() if plan else None,
                "snapped": plan.snapped if plan else None,
                "timezone": _zone_name(tz) if plan and tz else None,
                "event_type": job.event_type,
                "dedupe_key": job.dedupe_key,
                "parent_job_id": job.parent_job_id,
                "children": [c for c in job.children if c in by_id and by_id[c].parent_job_id == job.id],
                "duplicates_of": [
                    c for c in job.children if not (c in by_id and by_id[c].parent_job_id == job.id)
                ],
                "queue_wait_seconds": job.waits[0] if job.waits else None,
                "last_error": job.last_error,
                "runs": [
                    {
                        "attempt": r.attempt,
                        "started_at": _iso(r.started_at),
                        "finished_at": _iso(r.finished_at),
                        "duration_seconds": r.duration,
                        "result": r.result,
                        "error": r.error,
                    }
                    for r in job.runs
                ],
            }
        )
    chains = []
    for route in dict.fromkeys(config.routes):
        children = [
            j
            for j in result.jobs
            if j.parent_job_id is not None
            and j.plugin == route.target
            and j.event_type == route.event_type
            and j.parent_job_id in by_id
            and by_id[j.parent_job_id].plugin == route.source
        ]
        duplicates = sum(
            1
            for parent in result.jobs
            if parent.plugin == route.source
            for c in parent.children
            if c in by_id and by_id[c].plugin == route.target and by_id[c].parent_job_id != parent.id
        )
        chains.append(
            {
                "from": route.source,
                "event_type": route.event_type,
                "to": route.target,
                "children": len(children),
                "duplicates": duplicates,
                "succeeded": sum(1 for j in children if j.status is JobStatus.SUCCEEDED),
                "dead": sum(1 for j in children if j.status is JobStatus.DEAD),
            }
        )
    dst = [
        {
            "timezone": _zone_name(tz),
            "at": _iso(at),
            "from_offset": _offset_text(a),
            "to_offset": _offset_text(b),
        }
        for tz in dict.fromkeys(zones.values())
        for at, a, b in dst_changes(tz, result.start, result.end)
    ]
    return {
        "config": config.source,
        "seed": result.seed,
        "store": "sqlite" if result.store == "sqlite" else "memory",
        "days": days,
        "start": _iso(result.start),
        "end": _iso(result.end),
        "finished": _iso(result.finished),
        "plugins": plugins,
        "runs": runs,
        "events": [
            {"at": _iso(e.at), "kind": e.kind, "plugin": e.plugin, "detail": e.detail} for e in result.events
        ],
        "dst": dst,
        "routes": chains,
        "summary": [
            {
                "plugin": s.plugin,
                "jobs": s.jobs,
                "runs": s.runs,
                "successes": s.successes,
                "failures": s.failures,
                "retries": s.retries,
                "dead": s.dead,
                "mean_wait_seconds": s.mean_wait,
            }
            for s in result.stats
        ],
        "invariants": {"ok": True, "checks": result.checks, "crashes": result.crashes},
        "trace_hash": result.trace_hash,
    }


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def render_text(ctx: Any, report: Mapping[str, Any], *, show: int, tz: tzinfo | None) -> None:
    """The human form of :func:`build_report`."""
    from zoneinfo import ZoneInfo

    from ductile.app.cli import human_duration, local_time, table

    def zone(name: str | None) -> tzinfo | None:
        return ZoneInfo(name) if name else tz

    start, end = _parse_iso(report["start"]), _parse_iso(report["end"])
    ctx.print(f"ductile simulate: {report['config']}")
    store = "in-memory" if report["store"] == "memory" else "SQLite"
    span = f"{local_time(start, tz)} to {local_time(end, tz)}"
    ctx.print(f"  {report['days']:g} day(s) from {span}, seed {report['seed']}, {store} store")
    ctx.print("  nothing real was run: the plugins are simulated and the state directory is not touched")
    ctx.print()
    ctx.print("plugins:")
    rows = [
        [
            p["name"],
            p["state"] if p["reason"] is None else f"{p['state']}: {p['reason']}",
            p["schedule"],
            p["described"],
        ]
        for p in report["plugins"]
    ]
    ctx.print("  " + table(["PLUGIN", "STATE", "SCHEDULE", "BEHAVIOUR"], rows).replace("\n", "\n  "))
    dst_by_zone: dict[str, list[Mapping[str, Any]]] = {}
    for change in report["dst"]:
        dst_by_zone.setdefault(change["timezone"], []).append(change)
    index = {r["id"]: r for r in report["runs"]}
    runs_by_plugin: dict[str, list[Mapping[str, Any]]] = {}
    for run in report["runs"]:
        runs_by_plugin.setdefault(run["plugin"], []).append(run)
    for plugin in report["plugins"]:
        name = plugin["name"]
        jobs = runs_by_plugin.get(name, [])
        if not jobs:
            continue
        ptz = zone(plugin["timezone"])
        ctx.print()
        ctx.print(f"{name}: {plugin['schedule'] or 'no schedule'} ({len(jobs)} job(s))")
        days: dict[str, list[Mapping[str, Any]]] = {}
        for job in jobs:
            at = _parse_iso(job["planned_at"] or job["created_at"])
            day = (at.astimezone(ptz) if ptz is not None else at.astimezone()).strftime("%Y-%m-%d %a")
            days.setdefault(day, []).append(job)
        notes: dict[str, str] = {}
        for change in dst_by_zone.get(plugin["timezone"] or "", []):
            at = _parse_iso(change["at"]).astimezone(ptz)
            notes[at.strftime("%Y-%m-%d %a")] = (
                f"DST: {change['from_offset']} -> {change['to_offset']} at {at:%H:%M}"
            )
        rows = []
        for day, group in days.items():
            attempts = [r for j in group for r in j["runs"]]
            rows.append(
                [
                    day,
                    len(group),
                    len(attempts),
                    sum(1 for r in attempts if r["result"] == "succeeded"),
                    sum(1 for r in attempts if r["result"] != "succeeded"),
                    sum(1 for j in group if j["status"] == "dead"),
                    notes.get(day, ""),
                ]
            )
        ctx.print(
            "  " + table(["DAY", "JOBS", "RUNS", "OK", "FAILED", "DEAD", "NOTE"], rows).replace("\n", "\n  ")
        )
        if show:
            first = jobs[:show]
            rows = []
            for job in first:
                planned = _parse_iso(job["planned_at"] or job["created_at"])
                nominal = _parse_iso(job["nominal_at"]) if job["nominal_at"] else None
                offset = job["offset_seconds"]
                runs_text = f"{job['attempts']} run(s)" if job["attempts"] != 1 else "1 run"
                result = f"{job['status']} ({runs_text})"
                if job["status"] == "dead" and job["last_error"]:
                    result += f": {job['last_error']}"
                routed = sorted({index[i]["plugin"] for i in job["children"] if i in index})
                rows.append(
                    [
                        local_time(planned, ptz),
                        local_time(nominal, ptz)[11:19] if nominal else job["submitted_by"],
                        ("+" if offset > 0 else "") + human_duration(offset) if offset else "-",
                        "yes" if job["snapped"] else "-",
                        result,
                        ", ".join(routed) or "-",
                    ]
                )
            ctx.print(f"  first {len(first)} of {len(jobs)}:")
            header = [
                "PLANNED" if plugin["schedule"] else "CREATED",
                "NOMINAL",
                "JITTER",
                "SNAPPED",
                "RESULT",
                "ROUTED TO",
            ]
            ctx.print("    " + table(header, rows).replace("\n", "\n    "))
    notable = [e for e in report["events"] if e["kind"] not in ("skipped_breaker", "skipped_poll_guard")]
    skipped: dict[tuple[str, str], int] = {}
    for e in report["events"]:
        if e["kind"] in ("skipped_breaker", "skipped_poll_guard"):
            skipped[(e["plugin"], e["kind"])] = skipped.get((e["plugin"], e["kind"]), 0) + 1
    if notable or skipped or report["dst"]:
        ctx.print()
        ctx.print("events:")
        rows = [[local_time(_parse_iso(e["at"]), tz), e["plugin"] or "-", e["detail"]] for e in notable]
        rows += [
            [
                local_time(_parse_iso(c["at"]), zone(c["timezone"])),
                c["timezone"],
                f"DST: {c['from_offset']} -> {c['to_offset']}",
            ]
            for c in report["dst"]
        ]
        rows.sort(key=lambda r: _parse_iso(str(r[0])))
        if rows:
            ctx.print("  " + table(["TIME", "PLUGIN", "WHAT"], rows).replace("\n", "\n  "))
        for (plugin_name, kind), count in sorted(skipped.items()):
            why = (
                "its circuit breaker was open"
                if kind == "skipped_breaker"
                else "a poll was still outstanding"
            )
            ctx.print(f"  {plugin_name}: {count} scheduled run(s) skipped because {why}")
    if report["routes"]:
        ctx.print()
        ctx.print("routes:")
        rows = [
            [r["from"], r["event_type"], r["to"], r["children"], r["duplicates"], r["succeeded"], r["dead"]]
            for r in report["routes"]
        ]
        ctx.print(
            "  "
            + table(["FROM", "EVENT", "TO", "CHILDREN", "DEDUPED", "SUCCEEDED", "DEAD"], rows).replace(
                "\n", "\n  "
            )
        )
    ctx.print()
    ctx.print("summary:")
    rows = [
        [
            s["plugin"],
            s["jobs"],
            s["runs"],
            s["successes"],
            s["failures"],
            s["retries"],
            s["dead"],
            human_duration(s["mean_wait_seconds"]) if s["mean_wait_seconds"] is not None else "-",
        ]
        for s in report["summary"]
    ]
    ctx.print(
        "  "
        + table(
            ["PLUGIN", "JOBS", "RUNS", "SUCCEEDED", "FAILED", "RETRIES", "DEAD", "MEAN WAIT"], rows
        ).replace("\n", "\n  ")
    )
    inv = report["invariants"]
    crashes = f", through {inv['crashes']} simulated crash(es)" if inv["crashes"] else ""
    ctx.print()
    ctx.print(f"invariants: all held ({inv['checks']} checks{crashes}); trace {report['trace_hash'][:16]}")


# =========================================================================== python -m ductile.app.simulation


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ductile.app.simulation",
        description="Run one seed of a simulation scenario and check every invariant "
        "(exit 1 and the replay command when one fails).",
    )
    parser.add_argument("--seed", type=int, required=True, help="the seed (the whole run follows from it)")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="sweep", help="default: sweep")
    parser.add_argument("--store", choices=STORE_KINDS, default="memory", help="default: memory")
    parser.add_argument("--days", type=float, default=None, help="simulated days (default: the scenario's)")
    parser.add_argument("--trace", action="store_true", help="print the whole trace")
    args = parser.parse_args(argv)
    try:
        result = asyncio.run(run_scenario(args.scenario, args.seed, store=args.store, days=args.days))
    except InvariantError as e:
        print(str(e), file=sys.stderr)
        return 1
    if args.trace:
        for line in result.trace:
            print(line)
    ended = sum(1 for j in result.jobs if j.status in TERMINAL)
    print(
        f"seed {args.seed} ({args.scenario}, {args.store}): all invariants held — {len(result.jobs)} jobs "
        f"({ended} ended), {result.crashes} crash(es), {result.calls} port calls, {result.checks} checks, "
        f"trace {result.trace_hash[:16]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
