"""The activity log's vocabulary: what happened, as one stream of typed entries.

Every change an operator may want to follow — a job queued, started,
finished, retried, buried or cancelled; a breaker opening or closing; a
schedule firing or skipping; a config reloaded or rejected; a plugin refused —
is an :class:`Activity`. The store appends them to a durable, append-only log
inside the very unit that makes the change (``ductile.units``), so the log can
never disagree with the rows; each stored entry gets an increasing integer id
(:class:`Entry`), which is what the API's Server-Sent Events carry and what a
client resumes from (``Last-Event-ID``).

The vocabulary is shared: the live stream (issue 14), the dashboard and the
lifecycle events routed to plugins (``job.dead``, ``breaker.opened``, …) all
speak of the same :class:`Kind` values with the same ``data`` fields.

This module decides *which* entry a change makes (:func:`of_transition`,
:func:`of_breaker`, :func:`of_fire`); it is pure: instants arrive as values.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from ductile.domain.breaker import Breaker, BreakerStatus
from ductile.domain.job import Job, JobStatus, Transition


class Kind(enum.StrEnum):
    """The type of an activity entry (the SSE ``event:`` field)."""

    JOB_QUEUED = "job.queued"
    JOB_STARTED = "job.started"
    JOB_SUCCEEDED = "job.succeeded"
    JOB_FAILED = "job.failed"
    JOB_RETRYING = "job.retrying"
    JOB_DEAD = "job.dead"
    JOB_CANCELLED = "job.cancelled"
    BREAKER_OPENED = "breaker.opened"
    BREAKER_CLOSED = "breaker.closed"
    SCHEDULE_FIRED = "schedule.fired"
    SCHEDULE_SKIPPED = "schedule.skipped"
    CONFIG_RELOADED = "config.reloaded"
    CONFIG_REJECTED = "config.rejected"
    PLUGIN_REFUSED = "plugin.refused"
    #: A loaded plugin's ``init`` failed at a start or reload: it is not scheduled.
    PLUGIN_UNHEALTHY = "plugin.unhealthy"


class SkipReason(enum.StrEnum):
    """Why a planned run enqueued nothing (``schedule.skipped``'s ``reason``)."""

    BREAKER = "breaker"
    POLL_GUARD = "poll_guard"
    #: The run was missed while the daemon was down and ``catch_up: skip`` drops it.
    MISSED = "missed"
    PAUSED = "paused"
    WINDOW = "window"


def _json_object(_: Any, attribute: attrs.Attribute[Any], value: Mapping[str, Any]) -> None:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise TypeError(f"{attribute.name} must be a mapping with text keys")


def _aware(_: Any, attribute: attrs.Attribute[Any], value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{attribute.name} must be an aware datetime")


@attrs.frozen(kw_only=True)
class Activity:
    """One thing that happened. ``data`` is a JSON object whose fields depend on ``kind``."""

    kind: Kind = attrs.field(converter=Kind)
    at: datetime = attrs.field(validator=_aware)
    plugin: str | None = None
    command: str | None = None
    job_id: str | None = None
    data: Mapping[str, Any] = attrs.field(factory=dict, validator=_json_object)


@attrs.frozen(kw_only=True)
class Entry:
    """An activity as stored: ``id`` increases with every append and is never reused."""

    id: int
    activity: Activity


# ----------------------------------------------------------------------------- what a change makes


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def of_transition(
    job: Job, t: Transition, *, error: str | None = None, duration: float | None = None
) -> Activity:
    """The entry of one line of ``job``'s history (``job``: the row as the unit writes it).

    ``error`` and ``duration`` describe the run that ended, when the transition
    is the end of a run.
    """
    src, dst = t.from_status, t.to_status
    data: dict[str, Any] = {"attempt": job.attempt, "max_attempts": job.max_attempts, "reason": t.reason}
    data["actor"] = t.actor.value
    if src is None:
        kind = Kind.JOB_QUEUED
        data["submitted_by"] = job.submitted_by.value
        data["attempt"] = 1
    elif dst is JobStatus.RUNNING:
        kind = Kind.JOB_STARTED
    elif dst is JobStatus.SUCCEEDED:
        kind = Kind.JOB_SUCCEEDED
    elif dst in (JobStatus.FAILED, JobStatus.TIMED_OUT):
        kind = Kind.JOB_FAILED
        data["timed_out"] = dst is JobStatus.TIMED_OUT
        data["error"] = error if error is not None else job.last_error
        data["attempt"] = job.attempt if job.status is not JobStatus.QUEUED else job.attempt - 1
    elif dst is JobStatus.QUEUED:
        kind = Kind.JOB_RETRYING
        data["next_retry_at"] = _iso(job.next_retry_at)
    elif src is JobStatus.QUEUED:  # queued -> dead: nobody ran it
        kind = Kind.JOB_CANCELLED
    else:
        kind = Kind.JOB_DEAD
        data["error"] = job.last_error
    if duration is not None and kind in (Kind.JOB_SUCCEEDED, Kind.JOB_FAILED):
        data["duration_seconds"] = duration
    return Activity(kind=kind, at=t.at, plugin=job.plugin, command=job.command, job_id=job.id, data=data)


def of_breaker(before: Breaker | None, after: Breaker, *, at: datetime, actor: str) -> Activity | None:
    """``breaker.opened`` when ``after`` opens (or re-opens after a failed probe),
    ``breaker.closed`` when an open or half-open breaker closes; None otherwise
    (counting failures, admitting a probe)."""
    was = before.status if before is not None else BreakerStatus.CLOSED
    data: dict[str, Any] = {"failures": after.failures, "actor": actor}
    if after.status is BreakerStatus.OPEN and was is not BreakerStatus.OPEN:
        kind = Kind.BREAKER_OPENED
        data["opened_at"] = _iso(after.opened_at)
    elif after.status is BreakerStatus.CLOSED and was is not BreakerStatus.CLOSED:
        kind = Kind.BREAKER_CLOSED
        data["failures"] = before.failures if before is not None else 0
    else:
        return None
    return Activity(kind=kind, at=at, plugin=after.plugin, command=after.command, data=data)


def of_fire(
    *,
    key: str,
    plugin: str,
    command: str | None,
    planned_at: datetime,
    nominal_at: datetime,
    at: datetime,
    jobs: tuple[str, ...],
    skipped: SkipReason | None,
) -> Activity:
    """``schedule.fired`` (with the jobs it queued and how late it fired) or
    ``schedule.skipped`` (with why) for one due planned run."""
    data: dict[str, Any] = {
        "schedule": key,
        "planned_at": _iso(planned_at),
        "nominal_at": _iso(nominal_at),
        "lag_seconds": (at - planned_at).total_seconds(),
    }
    if skipped is not None:
        data["reason"] = skipped.value
        return Activity(kind=Kind.SCHEDULE_SKIPPED, at=at, plugin=plugin, command=command, data=data)
    data["jobs"] = list(jobs)
    return Activity(kind=Kind.SCHEDULE_FIRED, at=at, plugin=plugin, command=command, data=data)


def matches(activity: Activity, *, plugin: str | None = None, kinds: frozenset[str] | None = None) -> bool:
    """The stream's filters: ``plugin`` exact, ``kinds`` a set of kinds or ``prefix.*`` families."""
    if plugin is not None and activity.plugin != plugin:
        return False
    if kinds is None:
        return True
    kind = activity.kind.value
    return kind in kinds or f"{kind.partition('.')[0]}.*" in kinds
