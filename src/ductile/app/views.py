"""The JSON shapes of jobs, transitions, runs and breakers, shared by the CLI and the API.

``ductile job --json`` and ``GET /job/{id}`` print the same document, so both
build it here. Times are UTC ISO-8601 strings ending in ``Z`` with
milliseconds; durations are seconds as numbers; absent values are ``null``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ductile.domain.breaker import Breaker
from ductile.domain.errors import ProtocolError
from ductile.domain.job import Job, Transition
from ductile.domain.protocol import decode_json_object, iso_utc
from ductile.domain.secret_headers import mask_headers
from ductile.domain.settle import RunRecord
from ductile.ports.store_faults import WriteFault


def utc(at: datetime | None) -> str | None:
    """The JSON form of an instant: UTC ISO-8601 ending in ``Z``; None stays None."""
    return None if at is None else iso_utc(at)


def shown_payload(job: Job) -> dict[str, Any]:
    """A job's payload as the CLI and the API show it: the credentials among a webhook
    event's headers masked (a job stored before they were masked on arrival shows them
    masked too)."""
    headers = job.payload.get("headers")
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        return job.payload
    return {**job.payload, "headers": mask_headers(headers)}


def job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "plugin": job.plugin,
        "command": job.command,
        "payload": shown_payload(job),
        "status": job.status.value,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "submitted_by": job.submitted_by.value,
        "dedupe_key": job.dedupe_key,
        "created_at": utc(job.created_at),
        "started_at": utc(job.started_at),
        "completed_at": utc(job.completed_at),
        "next_retry_at": utc(job.next_retry_at),
        "last_error": job.last_error,
        "parent_job_id": job.parent_job_id,
        "source_event_id": job.source_event_id,
        "schedule_id": job.schedule_id,
        "route_depth": job.route_depth,
        "retry_of": job.retry_of,
        "claim_token": job.claim_token,
        "slot": job.slot,
        "node": job.node,
        "deadline_at": utc(job.deadline_at),
    }


def transition_json(t: Transition) -> dict[str, Any]:
    return {
        "at": utc(t.at),
        "from": t.from_status.value if t.from_status is not None else None,
        "to": t.to_status.value,
        "actor": t.actor.value,
        "reason": t.reason,
    }


def stdout_object(raw: bytes) -> dict[str, Any] | None:
    """A run's stdout head when it is one JSON object, else None."""
    try:
        return decode_json_object(raw, what="stdout")
    except ProtocolError:
        return None


def run_json(run: RunRecord) -> dict[str, Any]:
    return {
        "attempt": run.attempt,
        "started_at": utc(run.started_at),
        "finished_at": utc(run.finished_at),
        "duration_seconds": run.duration,
        "exit_code": run.exit_code,
        "signal": run.signal,
        "timed_out": run.timed_out,
        "error": run.error,
        "stderr_tail": run.stderr_tail.decode("utf-8", "replace"),
        "stdout_head": run.stdout_head.decode("utf-8", "replace"),
        "stdout_json": stdout_object(run.stdout_head),
        "logs": [{"level": line.level, "message": line.message} for line in run.logs],
        "result": run.result,
    }


def breaker_json(b: Breaker, reopens: datetime | None) -> dict[str, Any]:
    return {
        "command": b.command,
        "status": b.status.value,
        "failures": b.failures,
        "opened_at": utc(b.opened_at),
        "reopens_at": utc(reopens),
    }


def job_detail(
    job: Job,
    transitions: list[Transition],
    runs: list[RunRecord],
    *,
    children: list[Job] | None = None,
) -> dict[str, Any]:
    """``ductile job --json`` and ``GET /job/{id}``: the record, its history, its runs and
    the jobs it made (routed children; ``parent_job_id`` names its parent)."""
    return {
        "job": job_json(job),
        "transitions": [transition_json(t) for t in transitions],
        "runs": [run_json(r) for r in runs],
        "children": [
            {"id": c.id, "plugin": c.plugin, "command": c.command, "status": c.status.value}
            for c in children or []
        ],
    }


def store_health(fault: WriteFault | None) -> dict[str, Any]:
    """The ``store`` part of ``/healthz``: whether the store accepts writes, and if not why."""
    if fault is None:
        return {"writable": True}
    return {
        "writable": False,
        "problem": fault.kind,
        "transient": fault.transient,
        "since": utc(fault.since),
        "reason": fault.reason,
    }
