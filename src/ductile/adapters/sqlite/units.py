"""The store's units as functions of the writer's connection (each runs inside one transaction)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs

from ductile.adapters.sqlite.errors import StoreError
from ductile.adapters.sqlite.rows import (
    breaker_of,
    breaker_params,
    job_of,
    job_params,
    opt_us,
    planned_of,
    planned_params,
    run_params,
    to_us,
)
from ductile.adapters.sqlite.sql import (
    SQL_BREAKERS_OF_PLUGIN,
    SQL_CHILD_LOOKUP,
    SQL_CLAIM,
    SQL_CLAIM_ONE,
    SQL_DEDUPE_CANDIDATES,
    SQL_DELETE_PROCESS,
    SQL_GET_BREAKER,
    SQL_GET_JOB,
    SQL_GET_PLANNED,
    SQL_GET_STATE,
    SQL_INSERT_JOB,
    SQL_INSERT_RUN,
    SQL_INSERT_TRANSITION,
    SQL_JOB_EXISTS,
    SQL_JOB_STATUS,
    SQL_OUTSTANDING,
    SQL_PUT_BREAKER,
    SQL_PUT_PROCESS,
    SQL_PUT_STATE,
    SQL_QUEUED_OF_PLUGIN,
    SQL_REPLACE_PLANNED,
    SQL_RETENTION_JOBS,
    SQL_RETENTION_PROCESSES,
    SQL_RETENTION_RUNS,
    SQL_RETENTION_TRANSITIONS,
    SQL_RUNNING_JOBS,
    SQL_UPDATE_JOB,
)
from ductile.domain import breaker as br
from ductile.domain.classify import RunEnd
from ductile.domain.dedupe import find_duplicate
from ductile.domain.job import Actor, Job, JobEvent, JobStatus, Transition, apply, creation
from ductile.domain.recovery import recover as recover_job
from ductile.domain.schedule import PlannedRun, poll_guard_allows
from ductile.domain.settle import SettleContext, Settlement, settle
from ductile.domain.state import serialize_state
from ductile.ports.spawner import ProcessHandle
from ductile.ports.store import Committed, EnqueueResult, FireResult, Guard, StaleJobError


def _get_job(conn: sqlite3.Connection, job_id: str) -> Job | None:
    row = conn.execute(SQL_GET_JOB, (job_id,)).fetchone()
    return None if row is None else job_of(row)


def _get_state(conn: sqlite3.Connection, plugin: str) -> dict[str, Any]:
    row = conn.execute(SQL_GET_STATE, (plugin,)).fetchone()
    if row is None:
        return {}
    state: dict[str, Any] = json.loads(row[0])
    return state


def _get_breaker(conn: sqlite3.Connection, plugin: str, command: str) -> br.Breaker | None:
    row = conn.execute(SQL_GET_BREAKER, (plugin, command)).fetchone()
    return None if row is None else breaker_of(row)


def _put_breaker(conn: sqlite3.Connection, b: br.Breaker) -> None:
    conn.execute(SQL_PUT_BREAKER, breaker_params(b))


def _get_planned(conn: sqlite3.Connection, key: str) -> PlannedRun | None:
    row = conn.execute(SQL_GET_PLANNED, (key,)).fetchone()
    return None if row is None else planned_of(row)


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
            opt_us(after.started_at),
            opt_us(after.completed_at),
            opt_us(after.next_retry_at),
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
            dup = find_duplicate((job_of(r) for r in candidates.fetchall()), now=now, ttl=ttl)
            if dup is not None:
                results.append(EnqueueResult(dup.id, False))
                continue
        conn.execute(SQL_INSERT_JOB, job_params(job))
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
    conn.execute(SQL_INSERT_RUN, run_params(s.run, s.job.plugin))
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
    stored = job_of(rows[0])
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
    conn: sqlite3.Connection, job_id: str, end: RunEnd, ctx: SettleContext, ttl: timedelta
) -> Committed:
    job = _get_job(conn, job_id)
    if job is None or job.status is not JobStatus.RUNNING:
        raise StaleJobError(f"job {job_id} is not running")
    s = settle(
        job,
        end,
        ctx=ctx,
        state=_get_state(conn, job.plugin),
        breaker=_get_breaker(conn, job.plugin, job.command),
    )
    return _commit_settlement(conn, job, s, now=ctx.now, ttl=ttl, actor=Actor.ROUTE)


def _recover(conn: sqlite3.Connection, now: datetime) -> list[Settlement]:
    settlements: list[Settlement] = []
    for job in [job_of(r) for r in conn.execute(SQL_RUNNING_JOBS).fetchall()]:
        s = recover_job(job, now=now)
        _commit_settlement(conn, job, s, now=now, ttl=timedelta(0), actor=Actor.RECOVERY)
        settlements.append(s)
    return settlements


def _cancel_queued(conn: sqlite3.Connection, plugin: str, reason: str, now: datetime) -> list[str]:
    ids: list[str] = []
    for job in [job_of(r) for r in conn.execute(SQL_QUEUED_OF_PLUGIN, (plugin,)).fetchall()]:
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
    current = [breaker_of(r) for r in conn.execute(SQL_BREAKERS_OF_PLUGIN, (plugin,)).fetchall()]
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
    old = planned_params(due)
    new = planned_params(next_run)
    if conn.execute(SQL_REPLACE_PLANNED, (*new[1:], *old)).rowcount != 1:
        raise StoreError(f"planned run {due.key!r} changed while it was being fired")
    if new_breaker is not None:
        _put_breaker(conn, new_breaker)
    return FireResult(fired=True, jobs=tuple(results), blocked=blocked)
