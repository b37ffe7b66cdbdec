"""Values <-> rows: how the SQLite store writes domain values and reads them back.

Instants are integer microseconds since the Unix epoch (UTC); JSON is compact
UTF-8 text (see :mod:`ductile.adapters.sqlite.schema`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ductile.adapters.json_column import dumps
from ductile.adapters.sqlite.sql import JOB_FIELDS
from ductile.domain import breaker as br
from ductile.domain.activity import Activity, Entry
from ductile.domain.facts import Fact
from ductile.domain.job import Actor, Job, JobStatus, SubmittedBy, Transition
from ductile.domain.protocol import LogLine
from ductile.domain.schedule import PlannedRun
from ductile.domain.settle import RunRecord
from ductile.ports.spawner import ProcessHandle
from ductile.ports.store import InitRecord, Pause, RunningJob

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_us(at: datetime) -> int:
    """An aware instant as integer microseconds since the epoch (exact)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"the store keeps aware datetimes only, got naive {at!r}")
    return (at - _EPOCH) // _MICROSECOND


def from_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def opt_us(at: datetime | None) -> int | None:
    return None if at is None else to_us(at)


def opt_dt(value: int | None) -> datetime | None:
    return None if value is None else from_us(value)


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
        to_us(job.created_at),
        opt_us(job.started_at),
        opt_us(job.completed_at),
        opt_us(job.next_retry_at),
        job.last_error,
        job.parent_job_id,
        job.source_event_id,
        job.schedule_id,
        job.route_depth,
        job.retry_of,
        job.claim_token,
        job.slot,
        job.node,
        opt_us(job.deadline_at),
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
        created_at=from_us(row[9]),
        started_at=opt_dt(row[10]),
        completed_at=opt_dt(row[11]),
        next_retry_at=opt_dt(row[12]),
        last_error=row[13],
        parent_job_id=row[14],
        source_event_id=row[15],
        schedule_id=row[16],
        route_depth=row[17],
        retry_of=row[18],
        claim_token=row[19],
        slot=row[20],
        node=row[21],
        deadline_at=opt_dt(row[22]),
    )


def running_of(row: Sequence[Any]) -> RunningJob:
    """A running job and its process record, if any (its columns follow the job's: ``SQL_RUNNING``)."""
    w = len(JOB_FIELDS)
    handle = None if row[w] is None else ProcessHandle(pid=row[w], pgid=row[w + 1], start_time=row[w + 2])
    return RunningJob(job=job_of(row), process=handle)


def transition_of(row: Sequence[Any]) -> Transition:
    return Transition(
        job_id=row[0],
        from_status=None if row[1] is None else JobStatus(row[1]),
        to_status=JobStatus(row[2]),
        reason=row[3],
        actor=Actor(row[4]),
        at=from_us(row[5]),
    )


def run_params(run: RunRecord, plugin: str) -> tuple[Any, ...]:
    logs = [{"level": line.level, "message": line.message} for line in run.logs]
    return (
        run.job_id,
        run.attempt,
        opt_us(run.started_at),
        to_us(run.finished_at),
        run.duration,
        run.exit_code,
        run.signal,
        int(run.timed_out),
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
        started_at=opt_dt(row[2]),
        finished_at=from_us(row[3]),
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


def breaker_params(b: br.Breaker) -> tuple[Any, ...]:
    return (b.plugin, b.command, b.status.value, b.failures, opt_us(b.opened_at), opt_us(b.probe_at))


def breaker_of(row: Sequence[Any]) -> br.Breaker:
    return br.Breaker(
        plugin=row[0],
        command=row[1],
        status=br.BreakerStatus(row[2]),
        failures=row[3],
        opened_at=opt_dt(row[4]),
        probe_at=opt_dt(row[5]),
    )


def planned_params(run: PlannedRun) -> tuple[Any, ...]:
    return (
        run.key,
        run.fingerprint,
        to_us(run.nominal_at),
        to_us(run.planned_at),
        run.offset // _MICROSECOND,
        int(run.snapped),
    )


def planned_of(row: Sequence[Any]) -> PlannedRun:
    return PlannedRun(
        key=row[0],
        fingerprint=row[1],
        nominal_at=from_us(row[2]),
        planned_at=from_us(row[3]),
        offset=timedelta(microseconds=row[4]),
        snapped=bool(row[5]),
    )


def fact_of(row: Sequence[Any]) -> Fact:
    return Fact(
        seq=row[0],
        plugin=row[1],
        fact_type=row[2],
        job_id=row[3],
        at=from_us(row[4]),
        body=json.loads(row[5]),
    )


def pause_of(row: Sequence[Any]) -> Pause:
    return Pause(plugin=row[0], schedule_id=row[1] or None, at=from_us(row[2]))


def init_of(row: Sequence[Any]) -> InitRecord:
    return InitRecord(plugin=row[0], fingerprint=row[1], ok=bool(row[2]), error=row[3], at=from_us(row[4]))


def activity_params(a: Activity) -> tuple[Any, ...]:
    return (
        a.kind.value,
        to_us(a.at),
        a.plugin,
        a.command,
        a.job_id,
        dumps(dict(a.data), f"activity {a.kind.value}: data"),
    )


def entry_of(row: Sequence[Any]) -> Entry:
    return Entry(
        id=row[0],
        activity=Activity(
            kind=row[1],
            at=from_us(row[2]),
            plugin=row[3],
            command=row[4],
            job_id=row[5],
            data=json.loads(row[6]),
        ),
    )
