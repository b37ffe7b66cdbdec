"""Values <-> rows: how the PostgreSQL store writes domain values and reads them back.

Instants are ``timestamptz``, read back as aware datetimes in UTC; JSON is the
compact text the domain serialised (see :mod:`ductile.adapters.postgres.schema`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ductile.adapters.json_column import dumps
from ductile.domain import breaker as br
from ductile.domain.activity import Activity, Entry
from ductile.domain.facts import Fact
from ductile.domain.job import Actor, Job, JobStatus, SubmittedBy, Transition
from ductile.domain.protocol import LogLine
from ductile.domain.schedule import PlannedRun
from ductile.domain.settle import RunRecord
from ductile.ports.store_values import InitRecord, Pause

_MICROSECOND = timedelta(microseconds=1)

JOB_FIELDS = (
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
    "claim_token",
    "slot",
    "node",
    "deadline_at",
    "retry_of",
    "schedule_id",
    "route_depth",
)
JOB_COLS = ", ".join(JOB_FIELDS)
JOB_COLS_J = ", ".join(f"j.{c}" for c in JOB_FIELDS)


def aware(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"the store keeps aware datetimes only, got naive {at!r}")
    return at


def utc(at: datetime | None) -> datetime | None:
    return None if at is None else at.astimezone(UTC)


def job_params(job: Job) -> tuple[Any, ...]:
    return (
        job.id,
        job.plugin,
        job.command,
        dumps(job.payload, f"job {job.id}: payload"),
        job.status.value,
        job.attempt,
        job.max_attempts,
        job.submitted_by.value,
        job.dedupe_key,
        aware(job.created_at),
        job.started_at,
        job.completed_at,
        job.next_retry_at,
        job.last_error,
        job.parent_job_id,
        job.source_event_id,
        job.claim_token,
        job.slot,
        job.node,
        job.deadline_at,
        job.retry_of,
        job.schedule_id,
        job.route_depth,
    )


def job_of(row: Sequence[Any]) -> Job:
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
        created_at=row[9].astimezone(UTC),
        started_at=utc(row[10]),
        completed_at=utc(row[11]),
        next_retry_at=utc(row[12]),
        last_error=row[13],
        parent_job_id=row[14],
        source_event_id=row[15],
        claim_token=row[16],
        slot=row[17],
        node=row[18],
        deadline_at=utc(row[19]),
        retry_of=row[20],
        schedule_id=row[21],
        route_depth=row[22],
    )


def transition_params(t: Transition) -> tuple[Any, ...]:
    return (
        t.job_id,
        None if t.from_status is None else t.from_status.value,
        t.to_status.value,
        t.reason,
        t.actor.value,
        aware(t.at),
    )


def transition_of(row: Sequence[Any]) -> Transition:
    return Transition(
        job_id=row[0],
        from_status=None if row[1] is None else JobStatus(row[1]),
        to_status=JobStatus(row[2]),
        reason=row[3],
        actor=Actor(row[4]),
        at=row[5].astimezone(UTC),
    )


RUN_COLS = (
    "job_id, attempt, started_at, finished_at, duration, exit_code, signal, timed_out, "
    "error, stderr_tail, stdout_head, logs, result"
)


def run_params(run: RunRecord, plugin: str) -> tuple[Any, ...]:
    logs = [{"level": line.level, "message": line.message} for line in run.logs]
    return (
        run.job_id,
        run.attempt,
        run.started_at,
        aware(run.finished_at),
        run.duration,
        run.exit_code,
        run.signal,
        run.timed_out,
        run.error,
        bytes(run.stderr_tail),
        bytes(run.stdout_head),
        dumps(logs, f"job {run.job_id}: run logs"),
        run.result,
        plugin,
    )


def run_of(row: Sequence[Any]) -> RunRecord:
    return RunRecord(
        job_id=row[0],
        attempt=row[1],
        started_at=utc(row[2]),
        finished_at=row[3].astimezone(UTC),
        duration=row[4],
        exit_code=row[5],
        signal=row[6],
        timed_out=bool(row[7]),
        error=row[8],
        stderr_tail=bytes(row[9]),
        stdout_head=bytes(row[10]),
        logs=tuple(LogLine(level=item["level"], message=item["message"]) for item in json.loads(row[11])),
        result=row[12],
    )


BREAKER_COLS = "plugin, command, status, failures, opened_at, probe_at"


def breaker_params(b: br.Breaker) -> tuple[Any, ...]:
    return (b.plugin, b.command, b.status.value, b.failures, b.opened_at, b.probe_at)


def breaker_of(row: Sequence[Any]) -> br.Breaker:
    return br.Breaker(
        plugin=row[0],
        command=row[1],
        status=br.BreakerStatus(row[2]),
        failures=row[3],
        opened_at=utc(row[4]),
        probe_at=utc(row[5]),
    )


PLANNED_COLS = "key, fingerprint, nominal_at, planned_at, offset_us, snapped"


def planned_params(run: PlannedRun) -> tuple[Any, ...]:
    return (
        run.key,
        run.fingerprint,
        aware(run.nominal_at),
        aware(run.planned_at),
        run.offset // _MICROSECOND,
        run.snapped,
    )


def planned_of(row: Sequence[Any]) -> PlannedRun:
    return PlannedRun(
        key=row[0],
        fingerprint=row[1],
        nominal_at=row[2].astimezone(UTC),
        planned_at=row[3].astimezone(UTC),
        offset=timedelta(microseconds=row[4]),
        snapped=bool(row[5]),
    )


INIT_COLS = "plugin, fingerprint, ok, error, at"


def init_of(row: Sequence[Any]) -> InitRecord:
    return InitRecord(
        plugin=row[0], fingerprint=row[1], ok=bool(row[2]), error=row[3], at=row[4].astimezone(UTC)
    )


ACTIVITY_COLS = "id, kind, at, plugin, command, job_id, data"


def activity_params(a: Activity) -> tuple[Any, ...]:
    return (
        a.kind.value,
        aware(a.at),
        a.plugin,
        a.command,
        a.job_id,
        dumps(dict(a.data), f"activity {a.kind.value}: data"),
    )


def entry_of(row: Sequence[Any]) -> Entry:
    activity = Activity(
        kind=row[1],
        at=row[2].astimezone(UTC),
        plugin=row[3],
        command=row[4],
        job_id=row[5],
        data=json.loads(row[6]),
    )
    return Entry(id=row[0], activity=activity)


FACT_COLS = "seq, plugin, fact_type, job_id, at, body"


def fact_of(row: Sequence[Any]) -> Fact:
    return Fact(
        seq=row[0],
        plugin=row[1],
        fact_type=row[2],
        job_id=row[3],
        at=row[4].astimezone(UTC),
        body=json.loads(row[5]),
    )


def pause_of(row: Sequence[Any]) -> Pause:
    """A pause row (``schedule_id`` '' is the whole plugin)."""
    return Pause(plugin=row[0], schedule_id=row[1] or None, at=row[2].astimezone(UTC))
