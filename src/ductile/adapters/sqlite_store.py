"""SqliteStore: the Store port on SQLite (stdlib ``sqlite3``), durable and shareable.

Behaviour is that of :class:`ductile.fakes.memory_store.InMemoryStore`: every
unit reads the rows as they are inside its transaction and calls the same
domain functions (``settle``, ``recover``, ``find_duplicate``, ``admit``,
``reset``, ``poll_guard_allows``, ``apply``, ``creation``) to decide.

Threads and transactions
------------------------
* **One writer thread** owns the only write connection of this store. Every
  write method submits a *unit* (a function of the connection) to its queue
  and awaits an asyncio future, resolved with ``loop.call_soon_threadsafe``.
  The writer takes **all** pending units at once (up to :data:`MAX_BATCH`),
  runs them in **one** ``BEGIN IMMEDIATE`` transaction, each inside its own
  ``SAVEPOINT`` (a unit that raises is rolled back alone and its caller alone
  gets the exception), commits once, and only then resolves the futures:
  a write is acknowledged only once it is durable. That is group commit:
  concurrent writers (webhooks, the dispatcher, the scheduler) share one
  fsync, so ``synchronous=FULL`` costs little under load (ADR 0010).
* **Sync level per unit.** A unit is *durable* (the default) or *relaxed*.
  Only the claims (``claim_next``, ``claim``) and ``record_process`` are
  relaxed: losing them to a power cut is harmless (the job is simply still
  queued, or running without a process record, and no process survives a
  power cut anyway). A batch of relaxed units only commits at
  ``synchronous=NORMAL`` (no fsync); a batch with any durable unit commits at
  the store's level (``FULL``), and in WAL mode that fsync also covers every
  relaxed commit before it. ``PRAGMA synchronous`` is switched between
  transactions only, never inside one. A process kill loses no commit at any
  level; only power loss can, and only relaxed ones (ADR 0010).
* **One reader thread** owns a second, ``query_only`` connection. WAL readers
  never block the writer nor wait for its fsync, and running reads on a
  thread keeps a rare busy wait (WAL recovery, a checkpoint) off the event
  loop. Every read is one statement, so each sees one committed snapshot;
  a read issued after a write was acknowledged sees that write.
* Connections use ``isolation_level=None`` (no implicit transactions), WAL,
  ``busy_timeout``, ``foreign_keys=ON``. Another process (the CLI) may write
  to the same file at the same time: ``BEGIN IMMEDIATE`` waits up to
  ``busy_timeout`` for the write lock; a lock that outlasts it fails the
  unit with :class:`StoreBusyError`, it never hangs.
* Connections never cross ``fork()``: a store used in a forked child raises
  :class:`StoreError` instead of touching the parent's connections.

Every state change of a job is a compare-and-set on its expected status with
the row count checked; a miss raises :class:`~ductile.ports.store.StaleJobError`
and rolls the unit back. The SQL the store runs is in module constants
(``SQL_*``), so the query-plan test checks the real statements.
"""

# All SQL here is assembled from module constants (column lists, placeholders);
# every value goes through a "?" parameter, so S608 does not apply.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Final, TypeVar

import attrs

from ductile.adapters.sqlite_schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Migration,
    MigrationError,
    SchemaVersionError,
    StoreError,
    migrate,
    refuse_newer,
)
from ductile.domain import breaker as br
from ductile.domain.dedupe import find_duplicate
from ductile.domain.job import Actor, Job, JobEvent, JobStatus, SubmittedBy, Transition, apply, creation
from ductile.domain.outcome import Outcome
from ductile.domain.protocol import LogLine
from ductile.domain.recovery import recover as recover_job
from ductile.domain.schedule import PlannedRun, poll_guard_allows
from ductile.domain.settle import RunRecord, SettleContext, Settlement, settle
from ductile.domain.state import serialize_state
from ductile.ports.spawner import ProcessHandle
from ductile.ports.store import (
    Committed,
    EnqueueResult,
    FireResult,
    Guard,
    InitRecord,
    RunningJob,
    RunView,
    StaleJobError,
)

__all__ = [
    "SCHEMA_VERSION",
    "MigrationError",
    "SchemaVersionError",
    "SqliteStore",
    "StoreBusyError",
    "StoreClosedError",
    "StoreError",
    "WriterStats",
]

T = TypeVar("T")
Unit = Callable[[sqlite3.Connection], T]


class StoreBusyError(StoreError):
    """The database stayed locked by another connection for longer than ``busy_timeout``."""


class StoreClosedError(StoreError):
    """The store was used before :meth:`SqliteStore.open` finished or after :meth:`SqliteStore.close`."""


#: Most units committed in one transaction.
MAX_BATCH: Final = 256
SYNCHRONOUS_MODES: Final = ("OFF", "NORMAL", "FULL", "EXTRA")


def relaxed_level(level: str) -> str:
    """The ``synchronous`` level of a batch of relaxed units on a store opened at ``level``:
    never stronger than NORMAL (no fsync at commit in WAL mode), never weaker than the store's own."""
    return "NORMAL" if SYNCHRONOUS_MODES.index(level) > SYNCHRONOUS_MODES.index("NORMAL") else level


# --------------------------------------------------------------------------- SQL

_JOB_FIELDS = (
    "id",
    "plugin",
    "command",
    "payload",
    "status",
    "attempt",
    "max_attempts",
    "submitted_by",
    "dedupe_key",
    "created_at",
    "started_at",
    "completed_at",
    "next_retry_at",
    "last_error",
    "parent_job_id",
    "source_event_id",
)
_JOB_COLS = ", ".join(_JOB_FIELDS)
_JOB_COLS_J = ", ".join(f"j.{c}" for c in _JOB_FIELDS)
_TRANSITION_COLS = "job_id, from_status, to_status, reason, actor, at"
_RUN_COLS = (
    "job_id, attempt, started_at, finished_at, duration, exit_code, signal, timed_out, "
    "error, stderr_tail, stdout_head, logs"
)
_BREAKER_COLS = "plugin, command, status, failures, opened_at, probe_at"
_PLANNED_COLS = "key, fingerprint, nominal_at, planned_at, offset_us, snapped"
_INIT_COLS = "plugin, fingerprint, ok, error, at"
_TERMINAL_SQL = "('succeeded', 'dead')"


def _marks(n: int) -> str:
    return ", ".join("?" * n)


SQL_INSERT_JOB: Final = f"INSERT INTO jobs ({_JOB_COLS}) VALUES ({_marks(len(_JOB_FIELDS))})"
SQL_GET_JOB: Final = f"SELECT {_JOB_COLS} FROM jobs WHERE id = ?"
SQL_JOB_EXISTS: Final = "SELECT 1 FROM jobs WHERE id = ?"
SQL_JOB_STATUS: Final = "SELECT status FROM jobs WHERE id = ?"
#: D8: the child a (parent, source event, target plugin, command) already made.
SQL_CHILD_LOOKUP: Final = (
    "SELECT id FROM jobs WHERE parent_job_id = ? AND source_event_id = ? AND plugin = ? AND command = ?"
)
#: D1: jobs of one identity that may block a new enqueue (``blocks`` decides), oldest first.
SQL_DEDUPE_CANDIDATES: Final = (
    f"SELECT {_JOB_COLS} FROM jobs WHERE plugin = ? AND command = ? AND dedupe_key = ? "
    "AND status IN ('queued', 'succeeded') ORDER BY seq"
)
#: The oldest due queued job moved to running in one statement (FIFO: created_at, then insertion).
SQL_CLAIM: Final = (
    "UPDATE jobs SET status = 'running', started_at = ?, completed_at = NULL, next_retry_at = NULL "
    "WHERE status = 'queued' AND seq = (SELECT seq FROM jobs WHERE status = 'queued' "
    "AND (next_retry_at IS NULL OR next_retry_at <= ?) ORDER BY created_at, seq LIMIT 1) "
    f"RETURNING {_JOB_COLS}"
)
#: One given queued job moved to running (``init`` runs at once, outside FIFO and retry times).
SQL_CLAIM_ONE: Final = (
    "UPDATE jobs SET status = 'running', started_at = ?, completed_at = NULL, next_retry_at = NULL "
    f"WHERE id = ? AND status = 'queued' RETURNING {_JOB_COLS}"
)
#: Compare-and-set of a job's mutable fields on its expected status.
SQL_UPDATE_JOB: Final = (
    "UPDATE jobs SET status = ?, attempt = ?, started_at = ?, completed_at = ?, next_retry_at = ?, "
    "last_error = ? WHERE id = ? AND status = ?"
)
SQL_INSERT_TRANSITION: Final = f"INSERT INTO transitions ({_TRANSITION_COLS}) VALUES ({_marks(6)})"
SQL_TRANSITIONS: Final = f"SELECT {_TRANSITION_COLS} FROM transitions WHERE job_id = ? ORDER BY seq"
SQL_INSERT_RUN: Final = f"INSERT INTO runs ({_RUN_COLS}, plugin) VALUES ({_marks(13)})"
SQL_RUNS: Final = f"SELECT {_RUN_COLS} FROM runs WHERE job_id = ? ORDER BY seq"
_RUN_COLS_R = ", ".join(f"r.{c.strip()}" for c in _RUN_COLS.split(","))
#: ``ductile logs``: the newest runs, of all plugins or of one, each with its job.
SQL_RECENT_RUNS: Final = (
    f"SELECT {_RUN_COLS_R}, {_JOB_COLS_J} FROM runs r JOIN jobs j ON j.id = r.job_id "
    "ORDER BY r.finished_at DESC, r.seq DESC LIMIT ?"
)
SQL_RECENT_RUNS_OF_PLUGIN: Final = (
    f"SELECT {_RUN_COLS_R}, {_JOB_COLS_J} FROM runs r JOIN jobs j ON j.id = r.job_id "
    "WHERE r.plugin = ? ORDER BY r.finished_at DESC, r.seq DESC LIMIT ?"
)
SQL_PUT_PROCESS: Final = (
    "INSERT INTO processes (job_id, pid, pgid, start_time) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (job_id) DO UPDATE SET pid = excluded.pid, pgid = excluded.pgid, "
    "start_time = excluded.start_time"
)
SQL_DELETE_PROCESS: Final = "DELETE FROM processes WHERE job_id = ?"
SQL_RUNNING: Final = (
    f"SELECT {_JOB_COLS_J}, p.pid, p.pgid, p.start_time FROM jobs AS j "
    "LEFT JOIN processes AS p ON p.job_id = j.id WHERE j.status = 'running' ORDER BY j.created_at, j.seq"
)
SQL_RUNNING_JOBS: Final = f"SELECT {_JOB_COLS} FROM jobs WHERE status = 'running' ORDER BY created_at, seq"
SQL_QUEUED_OF_PLUGIN: Final = (
    f"SELECT {_JOB_COLS} FROM jobs WHERE plugin = ? AND status = 'queued' ORDER BY created_at, seq"
)
SQL_QUEUE_DEPTH: Final = "SELECT COUNT(*) FROM jobs WHERE status = 'queued'"
SQL_OUTSTANDING: Final = (
    "SELECT COUNT(*) FROM jobs WHERE plugin = ? AND command = ? AND status IN ('queued', 'running')"
)
SQL_NEXT_RETRY_AT: Final = (
    "SELECT MIN(next_retry_at) FROM jobs WHERE status = 'queued' AND next_retry_at IS NOT NULL"
)
_FINISHED_BEFORE = f"SELECT id FROM jobs WHERE status IN {_TERMINAL_SQL} AND completed_at < ?"
SQL_RETENTION_TRANSITIONS: Final = f"DELETE FROM transitions WHERE job_id IN ({_FINISHED_BEFORE})"
SQL_RETENTION_RUNS: Final = f"DELETE FROM runs WHERE job_id IN ({_FINISHED_BEFORE})"
SQL_RETENTION_PROCESSES: Final = f"DELETE FROM processes WHERE job_id IN ({_FINISHED_BEFORE})"
SQL_RETENTION_JOBS: Final = f"DELETE FROM jobs WHERE status IN {_TERMINAL_SQL} AND completed_at < ?"
SQL_GET_STATE: Final = "SELECT state FROM plugin_state WHERE plugin = ?"
SQL_PUT_STATE: Final = (
    "INSERT INTO plugin_state (plugin, state) VALUES (?, ?) "
    "ON CONFLICT (plugin) DO UPDATE SET state = excluded.state"
)
SQL_GET_BREAKER: Final = f"SELECT {_BREAKER_COLS} FROM breakers WHERE plugin = ? AND command = ?"
SQL_BREAKERS: Final = f"SELECT {_BREAKER_COLS} FROM breakers ORDER BY plugin, command"
SQL_BREAKERS_OF_PLUGIN: Final = f"SELECT {_BREAKER_COLS} FROM breakers WHERE plugin = ? ORDER BY command"
SQL_PUT_BREAKER: Final = (
    f"INSERT INTO breakers ({_BREAKER_COLS}) VALUES ({_marks(6)}) "
    "ON CONFLICT (plugin, command) DO UPDATE SET status = excluded.status, "
    "failures = excluded.failures, opened_at = excluded.opened_at, probe_at = excluded.probe_at"
)
SQL_GET_PLANNED: Final = f"SELECT {_PLANNED_COLS} FROM planned WHERE key = ?"
SQL_ALL_PLANNED: Final = f"SELECT {_PLANNED_COLS} FROM planned ORDER BY planned_at, key"
SQL_DUE: Final = (
    f"SELECT {_PLANNED_COLS} FROM planned WHERE planned_at >= ? AND planned_at < ? ORDER BY planned_at, key"
)
SQL_PUT_PLANNED: Final = (
    f"INSERT INTO planned ({_PLANNED_COLS}) VALUES ({_marks(6)}) "
    "ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, "
    "nominal_at = excluded.nominal_at, planned_at = excluded.planned_at, "
    "offset_us = excluded.offset_us, snapped = excluded.snapped"
)
#: Compare-and-set of a planned run: replaced only if it is still exactly the one that fired.
SQL_REPLACE_PLANNED: Final = (
    "UPDATE planned SET fingerprint = ?, nominal_at = ?, planned_at = ?, offset_us = ?, snapped = ? "
    "WHERE key = ? AND fingerprint = ? AND nominal_at = ? AND planned_at = ? AND offset_us = ? "
    "AND snapped = ?"
)
SQL_DELETE_PLANNED: Final = "DELETE FROM planned WHERE key = ?"
SQL_GET_INIT: Final = f"SELECT {_INIT_COLS} FROM inits WHERE plugin = ?"
SQL_PUT_INIT: Final = (
    f"INSERT INTO inits ({_INIT_COLS}) VALUES ({_marks(5)}) "
    "ON CONFLICT (plugin) DO UPDATE SET fingerprint = excluded.fingerprint, ok = excluded.ok, "
    "error = excluded.error, at = excluded.at"
)


def sql_list_jobs(*, statuses: int | None, plugin: bool) -> str:
    """The ``list_jobs`` statement for ``statuses`` status parameters (None: any) and a plugin filter."""
    where: list[str] = []
    if statuses is not None:
        where.append(f"status IN ({_marks(statuses)})")
    if plugin:
        where.append("plugin = ?")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return f"SELECT {_JOB_COLS} FROM jobs{clause} ORDER BY created_at DESC, seq DESC LIMIT ?"


#: The statements every hot path runs, by name: each must use an index (see the query-plan test).
HOT_QUERIES: Final[dict[str, str]] = {
    "claim": SQL_CLAIM,
    "claim one": SQL_CLAIM_ONE,
    "dedupe lookup": SQL_DEDUPE_CANDIDATES,
    "child lookup": SQL_CHILD_LOOKUP,
    "job by id": SQL_GET_JOB,
    "job exists": SQL_JOB_EXISTS,
    "job status": SQL_JOB_STATUS,
    "update job (CAS)": SQL_UPDATE_JOB,
    "breaker lookup": SQL_GET_BREAKER,
    "breakers of plugin": SQL_BREAKERS_OF_PLUGIN,
    "due schedules": SQL_DUE,
    "planned by key": SQL_GET_PLANNED,
    "replace planned (CAS)": SQL_REPLACE_PLANNED,
    "delete planned": SQL_DELETE_PLANNED,
    "queue depth": SQL_QUEUE_DEPTH,
    "outstanding (poll guard)": SQL_OUTSTANDING,
    "next retry at": SQL_NEXT_RETRY_AT,
    "running jobs": SQL_RUNNING,
    "running jobs (recovery)": SQL_RUNNING_JOBS,
    "queued of plugin (cancel)": SQL_QUEUED_OF_PLUGIN,
    "transitions of job": SQL_TRANSITIONS,
    "runs of job": SQL_RUNS,
    "recent runs": SQL_RECENT_RUNS,
    "recent runs of plugin": SQL_RECENT_RUNS_OF_PLUGIN,
    "delete process": SQL_DELETE_PROCESS,
    "retention: transitions": SQL_RETENTION_TRANSITIONS,
    "retention: runs": SQL_RETENTION_RUNS,
    "retention: processes": SQL_RETENTION_PROCESSES,
    "retention: jobs": SQL_RETENTION_JOBS,
    "plugin state": SQL_GET_STATE,
    "init record": SQL_GET_INIT,
}

# --------------------------------------------------------------------------- values <-> rows

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_us(at: datetime) -> int:
    """An aware instant as integer microseconds since the epoch (exact)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"the store keeps aware datetimes only, got naive {at!r}")
    return (at - _EPOCH) // _MICROSECOND


def from_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def _opt_us(at: datetime | None) -> int | None:
    return None if at is None else to_us(at)


def _opt_dt(value: int | None) -> datetime | None:
    return None if value is None else from_us(value)


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} cannot be stored as JSON: {e}") from e


def _job_params(job: Job) -> tuple[Any, ...]:
    return (
        job.id,
        job.plugin,
        job.command,
        _dumps(job.payload, f"job {job.id}: payload"),
        job.status.value,
        job.attempt,
        job.max_attempts,
        job.submitted_by.value,
        job.dedupe_key,
        to_us(job.created_at),
        _opt_us(job.started_at),
        _opt_us(job.completed_at),
        _opt_us(job.next_retry_at),
        job.last_error,
        job.parent_job_id,
        job.source_event_id,
    )


def _job(row: Sequence[Any]) -> Job:
    return Job(
        id=row[0],
        plugin=row[1],
        command=row[2],
        payload=json.loads(row[3]),
        status=JobStatus(row[4]),
        attempt=row[5],
        max_attempts=row[6],
        submitted_by=SubmittedBy(row[7]),
        dedupe_key=row[8],
        created_at=from_us(row[9]),
        started_at=_opt_dt(row[10]),
        completed_at=_opt_dt(row[11]),
        next_retry_at=_opt_dt(row[12]),
        last_error=row[13],
        parent_job_id=row[14],
        source_event_id=row[15],
    )


def _transition(row: Sequence[Any]) -> Transition:
    return Transition(
        job_id=row[0],
        from_status=None if row[1] is None else JobStatus(row[1]),
        to_status=JobStatus(row[2]),
        reason=row[3],
        actor=Actor(row[4]),
        at=from_us(row[5]),
    )


def _run_params(run: RunRecord, plugin: str) -> tuple[Any, ...]:
    logs = [{"level": line.level, "message": line.message} for line in run.logs]
    return (
        run.job_id,
        run.attempt,
        _opt_us(run.started_at),
        to_us(run.finished_at),
        run.duration,
        run.exit_code,
        run.signal,
        int(run.timed_out),
        run.error,
        bytes(run.stderr_tail),
        bytes(run.stdout_head),
        _dumps(logs, f"job {run.job_id}: run logs"),
        plugin,
    )


def _run(row: Sequence[Any]) -> RunRecord:
    return RunRecord(
        job_id=row[0],
        attempt=row[1],
        started_at=_opt_dt(row[2]),
        finished_at=from_us(row[3]),
        duration=row[4],
        exit_code=row[5],
        signal=row[6],
        timed_out=bool(row[7]),
        error=row[8],
        stderr_tail=bytes(row[9]),
        stdout_head=bytes(row[10]),
        logs=tuple(LogLine(level=item["level"], message=item["message"]) for item in json.loads(row[11])),
    )


def _breaker_params(b: br.Breaker) -> tuple[Any, ...]:
    return (b.plugin, b.command, b.status.value, b.failures, _opt_us(b.opened_at), _opt_us(b.probe_at))


def _breaker(row: Sequence[Any]) -> br.Breaker:
    return br.Breaker(
        plugin=row[0],
        command=row[1],
        status=br.BreakerStatus(row[2]),
        failures=row[3],
        opened_at=_opt_dt(row[4]),
        probe_at=_opt_dt(row[5]),
    )


def _planned_params(run: PlannedRun) -> tuple[Any, ...]:
    return (
        run.key,
        run.fingerprint,
        to_us(run.nominal_at),
        to_us(run.planned_at),
        run.offset // _MICROSECOND,
        int(run.snapped),
    )


def _planned(row: Sequence[Any]) -> PlannedRun:
    return PlannedRun(
        key=row[0],
        fingerprint=row[1],
        nominal_at=from_us(row[2]),
        planned_at=from_us(row[3]),
        offset=timedelta(microseconds=row[4]),
        snapped=bool(row[5]),
    )


def _init(row: Sequence[Any]) -> InitRecord:
    return InitRecord(plugin=row[0], fingerprint=row[1], ok=bool(row[2]), error=row[3], at=from_us(row[4]))


# --------------------------------------------------------------------------- units (run on the writer)


def _get_job(conn: sqlite3.Connection, job_id: str) -> Job | None:
    row = conn.execute(SQL_GET_JOB, (job_id,)).fetchone()
    return None if row is None else _job(row)


def _get_state(conn: sqlite3.Connection, plugin: str) -> dict[str, Any]:
    row = conn.execute(SQL_GET_STATE, (plugin,)).fetchone()
    if row is None:
        return {}
    state: dict[str, Any] = json.loads(row[0])
    return state


def _get_breaker(conn: sqlite3.Connection, plugin: str, command: str) -> br.Breaker | None:
    row = conn.execute(SQL_GET_BREAKER, (plugin, command)).fetchone()
    return None if row is None else _breaker(row)


def _put_breaker(conn: sqlite3.Connection, b: br.Breaker) -> None:
    conn.execute(SQL_PUT_BREAKER, _breaker_params(b))


def _get_planned(conn: sqlite3.Connection, key: str) -> PlannedRun | None:
    row = conn.execute(SQL_GET_PLANNED, (key,)).fetchone()
    return None if row is None else _planned(row)


def _outstanding(conn: sqlite3.Connection, plugin: str, command: str) -> int:
    return int(conn.execute(SQL_OUTSTANDING, (plugin, command)).fetchone()[0])


def _add_transition(conn: sqlite3.Connection, t: Transition) -> None:
    conn.execute(
        SQL_INSERT_TRANSITION,
        (
            t.job_id,
            None if t.from_status is None else t.from_status.value,
            t.to_status.value,
            t.reason,
            t.actor.value,
            to_us(t.at),
        ),
    )


def _update_job(conn: sqlite3.Connection, before: Job, after: Job) -> None:
    """Compare-and-set ``before`` -> ``after`` on ``before.status``; StaleJobError on a miss."""
    cursor = conn.execute(
        SQL_UPDATE_JOB,
        (
            after.status.value,
            after.attempt,
            _opt_us(after.started_at),
            _opt_us(after.completed_at),
            _opt_us(after.next_retry_at),
            after.last_error,
            before.id,
            before.status.value,
        ),
    )
    if cursor.rowcount != 1:
        raise StaleJobError(f"job {before.id} is no longer {before.status.value}")


def _insert_jobs(
    conn: sqlite3.Connection, jobs: Iterable[Job], actor: Actor, now: datetime, ttl: timedelta
) -> list[EnqueueResult]:
    """Insert each job unless it is a known child, an id clash or a duplicate (D1, D8).

    Each decision sees the jobs inserted before it in the same transaction, so
    a batch deduplicates against itself exactly like the in-memory store.
    Nothing is ever inserted "or ignored": an existing row is found first and
    its id reported with ``created=False``.
    """
    results: list[EnqueueResult] = []
    for job in jobs:
        if job.status is not JobStatus.QUEUED:
            raise ValueError(f"job {job.id}: only queued jobs can be enqueued")
        if job.parent_job_id is not None and job.source_event_id is not None:
            row = conn.execute(
                SQL_CHILD_LOOKUP, (job.parent_job_id, job.source_event_id, job.plugin, job.command)
            ).fetchone()
            if row is not None:
                results.append(EnqueueResult(row[0], False))
                continue
        if conn.execute(SQL_JOB_EXISTS, (job.id,)).fetchone() is not None:
            results.append(EnqueueResult(job.id, False))
            continue
        if job.dedupe_key is not None:
            candidates = conn.execute(SQL_DEDUPE_CANDIDATES, (job.plugin, job.command, job.dedupe_key))
            dup = find_duplicate((_job(r) for r in candidates.fetchall()), now=now, ttl=ttl)
            if dup is not None:
                results.append(EnqueueResult(dup.id, False))
                continue
        conn.execute(SQL_INSERT_JOB, _job_params(job))
        _add_transition(conn, creation(job, actor=actor))
        results.append(EnqueueResult(job.id, True))
    return results


def _commit_settlement(
    conn: sqlite3.Connection, before: Job, s: Settlement, *, now: datetime, ttl: timedelta, actor: Actor
) -> Committed:
    # Children are decided while the parent row is still running, as in the in-memory store.
    children = _insert_jobs(conn, s.children, actor, now, ttl)
    _update_job(conn, before, s.job)
    for t in s.transitions:
        _add_transition(conn, t)
    conn.execute(SQL_INSERT_RUN, _run_params(s.run, s.job.plugin))
    conn.execute(SQL_DELETE_PROCESS, (s.job.id,))
    if s.state is not None:
        conn.execute(SQL_PUT_STATE, (s.job.plugin, serialize_state(s.state).decode()))
    if s.breaker is not None:
        _put_breaker(conn, s.breaker)
    return Committed(settlement=s, children=tuple(children))


def _claim(conn: sqlite3.Connection, now: datetime, job_id: str | None = None) -> Job | None:
    at = to_us(now)
    if job_id is None:
        rows = conn.execute(SQL_CLAIM, (at, at)).fetchall()
    else:
        rows = conn.execute(SQL_CLAIM_ONE, (at, job_id)).fetchall()
    if not rows:
        return None
    stored = _job(rows[0])
    # The statement moved the row; the domain's apply says what the move is and logs it.
    claimed, record = apply(
        attrs.evolve(stored, status=JobStatus.QUEUED, started_at=None),
        JobEvent.CLAIM,
        at=now,
        actor=Actor.DISPATCHER,
        reason="claimed",
    )
    if claimed != stored:
        raise StoreError(f"internal: the claim statement disagrees with job.apply: {stored!r} != {claimed!r}")
    _add_transition(conn, record)
    return claimed


def _record_process(conn: sqlite3.Connection, job_id: str, handle: ProcessHandle) -> None:
    row = conn.execute(SQL_JOB_STATUS, (job_id,)).fetchone()
    if row is None or row[0] != JobStatus.RUNNING.value:
        raise StaleJobError(f"job {job_id} is not running")
    conn.execute(SQL_PUT_PROCESS, (job_id, handle.pid, handle.pgid, handle.start_time))


def _settle(
    conn: sqlite3.Connection, job_id: str, outcome: Outcome, ctx: SettleContext, ttl: timedelta
) -> Committed:
    job = _get_job(conn, job_id)
    if job is None or job.status is not JobStatus.RUNNING:
        raise StaleJobError(f"job {job_id} is not running")
    s = settle(
        job,
        outcome,
        ctx=ctx,
        state=_get_state(conn, job.plugin),
        breaker=_get_breaker(conn, job.plugin, job.command),
    )
    return _commit_settlement(conn, job, s, now=ctx.now, ttl=ttl, actor=Actor.ROUTE)


def _recover(conn: sqlite3.Connection, now: datetime) -> list[Settlement]:
    settlements: list[Settlement] = []
    for job in [_job(r) for r in conn.execute(SQL_RUNNING_JOBS).fetchall()]:
        s = recover_job(job, now=now)
        _commit_settlement(conn, job, s, now=now, ttl=timedelta(0), actor=Actor.RECOVERY)
        settlements.append(s)
    return settlements


def _cancel_queued(conn: sqlite3.Connection, plugin: str, reason: str, now: datetime) -> list[str]:
    ids: list[str] = []
    for job in [_job(r) for r in conn.execute(SQL_QUEUED_OF_PLUGIN, (plugin,)).fetchall()]:
        dead, record = apply(
            job, JobEvent.CANCEL, at=now, actor=Actor.RELOAD, reason=reason, last_error=reason
        )
        _update_job(conn, job, dead)
        _add_transition(conn, record)
        ids.append(job.id)
    return ids


def _delete_finished(conn: sqlite3.Connection, before: datetime) -> int:
    cut = (to_us(before),)
    conn.execute(SQL_RETENTION_TRANSITIONS, cut)
    conn.execute(SQL_RETENTION_RUNS, cut)
    conn.execute(SQL_RETENTION_PROCESSES, cut)
    return conn.execute(SQL_RETENTION_JOBS, cut).rowcount


def _reset_breakers(conn: sqlite3.Connection, plugin: str) -> list[br.Breaker]:
    current = [_breaker(r) for r in conn.execute(SQL_BREAKERS_OF_PLUGIN, (plugin,)).fetchall()]
    for b in current:
        _put_breaker(conn, br.reset(b))
    return [b for b in current if b.is_open]


def _fire(
    conn: sqlite3.Connection,
    *,
    due: PlannedRun,
    next_run: PlannedRun,
    jobs: Sequence[Job],
    guard: Guard | None,
    actor: Actor,
    now: datetime,
    ttl: timedelta,
) -> FireResult:
    if _get_planned(conn, due.key) != due:
        return FireResult(fired=False)
    if next_run.key != due.key:
        raise ValueError("next_run must belong to the same schedule key")
    blocked: str | None = None
    new_breaker: br.Breaker | None = None
    if guard is not None and jobs:
        if guard.max_outstanding is not None and not poll_guard_allows(
            _outstanding(conn, guard.plugin, guard.command), guard.max_outstanding
        ):
            blocked = "poll_guard"
        elif guard.breaker is not None:
            current = _get_breaker(conn, guard.plugin, guard.command) or br.closed(
                guard.plugin, guard.command
            )
            allowed, updated = br.admit(current, now=now, policy=guard.breaker)
            if not allowed:
                blocked = "breaker_open"
            elif updated != current:
                new_breaker = updated
    results: list[EnqueueResult] = []
    if blocked is None and jobs:
        results = _insert_jobs(conn, jobs, actor, now, ttl)
    old = _planned_params(due)
    new = _planned_params(next_run)
    if conn.execute(SQL_REPLACE_PLANNED, (*new[1:], *old)).rowcount != 1:
        raise StoreError(f"planned run {due.key!r} changed while it was being fired")
    if new_breaker is not None:
        _put_breaker(conn, new_breaker)
    return FireResult(fired=True, jobs=tuple(results), blocked=blocked)


# --------------------------------------------------------------------------- the worker threads


@attrs.frozen
class WriterStats:
    """What the writer thread has done since the store was opened."""

    #: Write transactions committed (one per batch that got as far as COMMIT).
    commits: int
    #: Units executed (each committed with its batch, or rolled back alone).
    units: int
    #: The most units one transaction carried.
    largest_batch: int
    #: Of ``commits``, those made at the relaxed level (every unit of the batch relaxed).
    relaxed_commits: int = 0


@attrs.define(eq=False)
class _Pending:
    name: str
    fn: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    #: Must survive power loss once acknowledged (False: a relaxed unit, see the module's docs).
    durable: bool = True


_STOP: Final = object()
_Delivery = tuple[_Pending, Any, BaseException | None]


def _resolve(items: list[_Delivery]) -> None:
    for pending, result, error in items:
        if pending.future.done():  # the caller was cancelled; the unit still ran
            continue
        if error is not None:
            pending.future.set_exception(error)
        else:
            pending.future.set_result(result)


def _deliver(items: list[_Delivery]) -> None:
    """Resolve futures on their own loops, one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Delivery]] = {}
    for item in items:
        by_loop.setdefault(item[0].loop, []).append(item)
    for loop, group in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(_resolve, group)


class SqliteStore:
    """The Store port on one SQLite file. Open with ``await SqliteStore.open(path)``."""

    #: The schema history this store migrates to (a subclass may extend it, e.g. in a test).
    migrations: ClassVar[tuple[Migration, ...]] = MIGRATIONS

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "FULL", busy_timeout: float = 5.0):
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(
                f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, got {synchronous!r}"
            )
        if busy_timeout < 0:
            raise ValueError(f"busy_timeout must be >= 0 seconds, got {busy_timeout!r}")
        self._path = Path(path)
        self._synchronous = mode
        self._busy_ms = int(busy_timeout * 1000)
        self._busy_timeout = busy_timeout
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._open = False
        self._closed = False
        self._writes: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._reads: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._commits = 0
        self._relaxed_commits = 0
        self._units = 0
        self._largest_batch = 0
        #: The ``synchronous`` level the write connection is at (set by the writer thread).
        self._level = mode

    # ------------------------------------------------------------- life cycle
    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], *, synchronous: str = "FULL", busy_timeout: float = 5.0
    ) -> SqliteStore:
        """Open (creating or migrating) the database at ``path``.

        Raises :class:`SchemaVersionError` for a database of a newer ductile,
        :class:`MigrationError` when a migration fails (nothing changed),
        :class:`StoreError` when the file cannot be opened as a database.
        """
        store = cls(path, synchronous=synchronous, busy_timeout=busy_timeout)
        await store._start()
        return store

    @property
    def path(self) -> Path:
        return self._path

    @property
    def stats(self) -> WriterStats:
        return WriterStats(self._commits, self._units, self._largest_batch, self._relaxed_commits)

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        for name, main in (("writer", self._writer_main), ("reader", self._reader_main)):
            ready: asyncio.Future[None] = loop.create_future()
            thread = threading.Thread(
                target=main, args=(loop, ready), name=f"ductile-sqlite-{name}:{self._path.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
            try:
                await ready
            except BaseException:
                await self._shutdown()
                raise
        self._open = True

    async def close(self) -> None:
        """Commit what was submitted before, then stop both threads. Idempotent."""
        await self._shutdown()

    async def _shutdown(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._writes.put(_STOP)
                self._reads.put(_STOP)
        threads = [t for t in self._threads if t.is_alive()]
        if threads:
            loop = asyncio.get_running_loop()
            for thread in threads:
                await loop.run_in_executor(None, thread.join)

    # ------------------------------------------------------------- connections
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, timeout=self._busy_timeout)
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_writer(self) -> sqlite3.Connection:
        where = str(self._path)
        conn = self._connect()
        try:
            refuse_newer(conn, where, len(self.migrations))
            _use_wal(conn, where)
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            migrate(conn, where, self.migrations)
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_reader(self) -> sqlite3.Connection:
        conn = self._connect()
        conn.execute("PRAGMA query_only = ON")
        return conn

    def _failure(self, error: BaseException, name: str) -> BaseException:
        """The exception a caller gets: SQLite errors become clear StoreErrors."""
        if isinstance(error, sqlite3.Error):
            code = getattr(error, "sqlite_errorcode", 0) & 0xFF
            if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                new: StoreError = StoreBusyError(
                    f"{self._path}: {name} failed: the database stayed locked by another connection "
                    f"for longer than busy_timeout ({self._busy_timeout:g} s); nothing was written"
                )
            else:
                new = StoreError(f"{self._path}: {name} failed: SQLite error: {error}")
            new.__cause__ = error
            return new
        return error

    # ------------------------------------------------------------- the writer
    def _writer_main(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        try:
            conn = self._open_writer()
        except BaseException as e:
            _deliver_ready(loop, ready, self._failure(e, "opening the database"))
            self._fail_remaining(self._writes)
            return
        _deliver_ready(loop, ready, None)
        try:
            stopping = False
            while not stopping:
                first = self._writes.get()
                if not isinstance(first, _Pending):
                    break
                batch = [first]
                while len(batch) < MAX_BATCH:
                    try:
                        item = self._writes.get_nowait()
                    except queue.Empty:
                        break
                    if not isinstance(item, _Pending):
                        stopping = True
                        break
                    batch.append(item)
                try:
                    self._run_batch(conn, batch)
                except Exception as e:  # a bug or a broken connection: fail the batch, keep serving
                    _deliver([(p, None, self._failure(e, p.name)) for p in batch])
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
        finally:
            with self._lock:
                self._closed = True
            conn.close()
            self._fail_remaining(self._writes)

    def _set_level(self, conn: sqlite3.Connection, level: str) -> None:
        """Switch ``synchronous`` (outside a transaction only: SQLite applies it per transaction)."""
        if level != self._level:
            conn.execute(f"PRAGMA synchronous = {level}")
            self._level = level

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Pending]) -> None:
        while batch:
            durable = any(p.durable for p in batch)
            try:
                self._set_level(conn, self._synchronous if durable else relaxed_level(self._synchronous))
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                _deliver([(p, None, self._failure(e, p.name)) for p in batch])
                return
            done: list[_Delivery] = []
            rest: list[_Pending] = []
            aborted: BaseException | None = None
            for index, pending in enumerate(batch):
                conn.execute("SAVEPOINT unit")
                try:
                    result = pending.fn(conn)
                except Exception as e:
                    self._units += 1
                    if conn.in_transaction:
                        conn.execute("ROLLBACK TO unit")
                        conn.execute("RELEASE unit")
                        done.append((pending, None, self._failure(e, pending.name)))
                        continue
                    # SQLite rolled back the whole transaction (I/O error, full disk...):
                    # the units before this one are lost too; the ones after never ran.
                    aborted = e
                    done.append((pending, None, self._failure(e, pending.name)))
                    rest = batch[index + 1 :]
                    break
                self._units += 1
                conn.execute("RELEASE unit")
                done.append((pending, result, None))
            if aborted is None:
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error as e:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    aborted = e
                else:
                    self._commits += 1
                    if not durable:
                        self._relaxed_commits += 1
                    self._largest_batch = max(self._largest_batch, len(done))
            if aborted is not None:
                done = [
                    (p, None, err if err is not None else self._failure(aborted, p.name))
                    for p, _, err in done
                ]
            _deliver(done)
            batch = rest

    # ------------------------------------------------------------- the reader
    def _reader_main(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        try:
            conn = self._open_reader()
        except BaseException as e:
            _deliver_ready(loop, ready, self._failure(e, "opening the database for reading"))
            self._fail_remaining(self._reads)
            return
        _deliver_ready(loop, ready, None)
        try:
            while True:
                pending = self._reads.get()
                if not isinstance(pending, _Pending):
                    break
                try:
                    delivery: _Delivery = (pending, pending.fn(conn), None)
                except Exception as e:
                    delivery = (pending, None, self._failure(e, pending.name))
                _deliver([delivery])
        finally:
            with self._lock:
                self._closed = True
            conn.close()
            self._fail_remaining(self._reads)

    def _fail_remaining(self, q: queue.SimpleQueue[object]) -> None:
        left: list[_Delivery] = []
        while True:
            try:
                item = q.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Pending):
                left.append(
                    (item, None, StoreClosedError(f"{self._path}: {item.name}: the store was closed"))
                )
        _deliver(left)

    # ------------------------------------------------------------- submission
    async def _submit(
        self, q: queue.SimpleQueue[object], name: str, fn: Unit[T], *, durable: bool = True
    ) -> T:
        if os.getpid() != self._pid:
            raise StoreError(
                f"{self._path}: this SqliteStore was opened in process {self._pid} and cannot be used "
                f"in the forked process {os.getpid()}; open a new store there"
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if self._closed or not self._open:
                state = "closed" if self._closed else "not open yet (use: await SqliteStore.open(path))"
                raise StoreClosedError(f"{self._path}: {name}: the store is {state}")
            q.put(_Pending(name, fn, loop, future, durable))
        return await future

    async def _write(self, name: str, fn: Unit[T], *, durable: bool = True) -> T:
        """Run ``fn(connection)`` as one unit of a write transaction; its result once committed.

        ``durable=False`` (a relaxed unit): once committed, but not necessarily
        fsynced; only for writes whose loss to a power cut is harmless.
        """
        return await self._submit(self._writes, name, fn, durable=durable)

    async def _read(self, name: str, fn: Unit[T]) -> T:
        return await self._submit(self._reads, name, fn)

    # ------------------------------------------------------------- jobs
    async def enqueue(self, job: Job, *, actor: Actor, now: datetime, dedupe_ttl: timedelta) -> EnqueueResult:
        return await self._write("enqueue", lambda c: _insert_jobs(c, [job], actor, now, dedupe_ttl)[0])

    async def claim_next(self, now: datetime) -> Job | None:
        # Relaxed: a claim lost to a power cut leaves the job queued; its plugin died with the power.
        return await self._write("claim_next", lambda c: _claim(c, now), durable=False)

    async def claim(self, job_id: str, now: datetime) -> Job | None:
        """Claim one specific queued job; None when it is not queued."""
        return await self._write("claim", lambda c: _claim(c, now, job_id), durable=False)

    async def record_process(self, job_id: str, handle: ProcessHandle) -> None:
        # Relaxed: after a power cut no process survives to be killed; recovery re-queues the job anyway.
        await self._write("record_process", lambda c: _record_process(c, job_id, handle), durable=False)

    async def settle(
        self, job_id: str, outcome: Outcome, *, ctx: SettleContext, dedupe_ttl: timedelta
    ) -> Committed:
        return await self._write("settle", lambda c: _settle(c, job_id, outcome, ctx, dedupe_ttl))

    async def running(self) -> list[RunningJob]:
        def read(conn: sqlite3.Connection) -> list[RunningJob]:
            return [
                RunningJob(
                    job=_job(row),
                    process=None
                    if row[16] is None
                    else ProcessHandle(pid=row[16], pgid=row[17], start_time=row[18]),
                )
                for row in conn.execute(SQL_RUNNING).fetchall()
            ]

        return await self._read("running", read)

    async def recover(self, now: datetime) -> list[Settlement]:
        return await self._write("recover", lambda c: _recover(c, now))

    async def cancel_queued(self, plugin: str, *, reason: str, now: datetime) -> list[str]:
        return await self._write("cancel_queued", lambda c: _cancel_queued(c, plugin, reason, now))

    async def delete_finished(self, before: datetime) -> int:
        return await self._write("delete_finished", lambda c: _delete_finished(c, before))

    async def get_job(self, job_id: str) -> Job | None:
        return await self._read("get_job", lambda c: _get_job(c, job_id))

    async def transitions(self, job_id: str) -> list[Transition]:
        return await self._read(
            "transitions",
            lambda c: [_transition(r) for r in c.execute(SQL_TRANSITIONS, (job_id,)).fetchall()],
        )

    async def runs(self, job_id: str) -> list[RunRecord]:
        return await self._read(
            "runs", lambda c: [_run(r) for r in c.execute(SQL_RUNS, (job_id,)).fetchall()]
        )

    async def recent_runs(self, *, plugin: str | None = None, limit: int = 50) -> list[RunView]:
        params: tuple[Any, ...]
        if plugin is None:
            sql, params = SQL_RECENT_RUNS, (limit,)
        else:
            sql, params = SQL_RECENT_RUNS_OF_PLUGIN, (plugin, limit)
        width = len(_RUN_COLS.split(","))

        def read(c: sqlite3.Connection) -> list[RunView]:
            return [RunView(job=_job(r[width:]), run=_run(r[:width])) for r in c.execute(sql, params)]

        return await self._read("recent_runs", read)

    async def list_jobs(
        self,
        *,
        statuses: Sequence[JobStatus] | None = None,
        plugin: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Newest first."""
        wanted = None if statuses is None else sorted({JobStatus(s).value for s in statuses})
        if wanted == [] or limit == 0:
            return []
        sql = sql_list_jobs(statuses=None if wanted is None else len(wanted), plugin=plugin is not None)
        params: list[Any] = [*(wanted or []), *([plugin] if plugin is not None else [])]
        # A negative limit slices like a Python list (all but the last -limit), as the fake does.
        params.append(limit if limit > 0 else -1)

        def read(conn: sqlite3.Connection) -> list[Job]:
            jobs = [_job(r) for r in conn.execute(sql, params).fetchall()]
            return jobs if limit > 0 else jobs[:limit]

        return await self._read("list_jobs", read)

    async def queue_depth(self) -> int:
        return await self._read("queue_depth", lambda c: int(c.execute(SQL_QUEUE_DEPTH).fetchone()[0]))

    async def outstanding(self, plugin: str, command: str) -> int:
        return await self._read("outstanding", lambda c: _outstanding(c, plugin, command))

    async def next_retry_at(self) -> datetime | None:
        return await self._read(
            "next_retry_at", lambda c: _opt_dt(c.execute(SQL_NEXT_RETRY_AT).fetchone()[0])
        )

    # ------------------------------------------------------------- plugin state
    async def get_state(self, plugin: str) -> dict[str, Any]:
        return await self._read("get_state", lambda c: _get_state(c, plugin))

    # ------------------------------------------------------------- breakers
    async def get_breaker(self, plugin: str, command: str) -> br.Breaker | None:
        return await self._read("get_breaker", lambda c: _get_breaker(c, plugin, command))

    async def breakers(self) -> list[br.Breaker]:
        return await self._read(
            "breakers", lambda c: [_breaker(r) for r in c.execute(SQL_BREAKERS).fetchall()]
        )

    async def reset_breakers(self, plugin: str) -> list[br.Breaker]:
        return await self._write("reset_breakers", lambda c: _reset_breakers(c, plugin))

    # ------------------------------------------------------------- schedule index
    async def planned(self, key: str) -> PlannedRun | None:
        return await self._read("planned", lambda c: _get_planned(c, key))

    async def all_planned(self) -> list[PlannedRun]:
        return await self._read(
            "all_planned", lambda c: [_planned(r) for r in c.execute(SQL_ALL_PLANNED).fetchall()]
        )

    async def due(self, start: datetime, end: datetime) -> list[PlannedRun]:
        """Planned runs with ``start <= planned_at < end``, earliest first."""
        bounds = (to_us(start), to_us(end))
        return await self._read("due", lambda c: [_planned(r) for r in c.execute(SQL_DUE, bounds).fetchall()])

    async def put_planned(self, run: PlannedRun) -> None:
        params = _planned_params(run)
        await self._write("put_planned", _statement(SQL_PUT_PLANNED, params))

    async def delete_planned(self, key: str) -> None:
        await self._write("delete_planned", _statement(SQL_DELETE_PLANNED, (key,)))

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
        batch = tuple(jobs)
        return await self._write(
            "fire",
            lambda c: _fire(
                c, due=due, next_run=next_run, jobs=batch, guard=guard, actor=actor, now=now, ttl=dedupe_ttl
            ),
        )

    # ------------------------------------------------------------- init
    async def get_init(self, plugin: str) -> InitRecord | None:
        def read(conn: sqlite3.Connection) -> InitRecord | None:
            row = conn.execute(SQL_GET_INIT, (plugin,)).fetchone()
            return None if row is None else _init(row)

        return await self._read("get_init", read)

    async def put_init(self, record: InitRecord) -> None:
        params = (record.plugin, record.fingerprint, int(record.ok), record.error, to_us(record.at))
        await self._write("put_init", _statement(SQL_PUT_INIT, params))


def _use_wal(conn: sqlite3.Connection, where: str) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(f"{where}: could not switch the database to WAL mode (it is {mode!r})")


def _statement(sql: str, params: Sequence[Any]) -> Unit[None]:
    def unit(conn: sqlite3.Connection) -> None:
        conn.execute(sql, params)

    return unit


def _deliver_ready(
    loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None], error: BaseException | None
) -> None:
    def resolve() -> None:
        if ready.done():
            return
        if error is None:
            ready.set_result(None)
        else:
            ready.set_exception(error)

    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(resolve)
