"""Lifecycle events: ductile's own news (a job died, a breaker opened...) as routable events.

ductile is an event source named ``ductile`` (:data:`SOURCE`). When a store
unit makes a change an operator wants to hear of, it asks this module for the
event (:func:`of_transition`, :func:`of_breaker`, :func:`of_skip`,
:func:`of_plugin`) and for the ``handle`` jobs of the routes ``from: ductile``
that match it (:func:`children`), and inserts them in the same transaction as
the change: a death and its notification are one commit, so no crash can come
between them, and a replayed unit makes the same event id and the same child
ids (found, not inserted twice).

The types are the activity log's (:class:`~ductile.domain.activity.Kind`),
plus ``job.recovered``, so the stream of issue 14 and these events speak of
the same things with the same names. Two rules keep alerts from feeding on
themselves:

- a job made from a lifecycle event (:func:`is_lifecycle_job`) never makes a
  lifecycle event about itself: a broken notifier's jobs die quietly (they are
  logged, and counted in :data:`SUPPRESSED_COUNT`);
- a lifecycle event starts a new chain (its jobs are at route depth 1).

Pure: instants arrive as values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import attrs

from ductile.domain.activity import Kind
from ductile.domain.activity import of_transition as activity_of
from ductile.domain.breaker import Breaker, BreakerPolicy, BreakerStatus
from ductile.domain.job import Actor, Job, JobStatus, SubmittedBy, Transition
from ductile.domain.protocol import iso_utc
from ductile.domain.routing import Envelope, Route, Target, derived_id, fan_out

__all__ = [
    "RECOVERED",
    "SOURCE",
    "STDERR_TAIL_BYTES",
    "SUPPRESSED_COUNT",
    "Alerts",
    "children",
    "is_lifecycle_job",
    "of_breaker",
    "of_plugin",
    "of_skip",
    "of_transition",
]

#: The ``from`` of every lifecycle event (a plugin may not take this name).
SOURCE = "ductile"
#: ``job.recovered``: crash recovery re-queued a job (the activity log says ``job.retrying``).
RECOVERED = "job.recovered"
#: The most of a run's stderr a ``job.dead`` or ``job.failed`` event carries (its end).
STDERR_TAIL_BYTES = 2048
#: The store's counter of lifecycle events not made because their job came from one.
SUPPRESSED_COUNT = "lifecycle_suppressed"

#: The event types a route ``from: ductile`` may name.
TYPES = frozenset(
    {
        Kind.JOB_DEAD.value,
        Kind.JOB_FAILED.value,
        RECOVERED,
        Kind.BREAKER_OPENED.value,
        Kind.BREAKER_CLOSED.value,
        Kind.SCHEDULE_SKIPPED.value,
        Kind.PLUGIN_REFUSED.value,
        Kind.PLUGIN_UNHEALTHY.value,
    }
)


@attrs.frozen(kw_only=True)
class Alerts:
    """Where lifecycle events go: the routes ``from: ductile``, the plugins they may reach,
    and the plugins whose every failed attempt is news (``notify.on_failed_attempt``)."""

    routes: tuple[Route, ...] = ()
    targets: Mapping[str, Target] = attrs.field(factory=dict)
    on_failed_attempt: frozenset[str] = frozenset()
    #: ``service.dedupe_ttl``: how long the same ``plugin.refused`` is told only once.
    dedupe_ttl: timedelta = timedelta(0)

    @classmethod
    def of(
        cls,
        routes: Iterable[Route],
        targets: Mapping[str, Target],
        on_failed_attempt: Iterable[str] = (),
        dedupe_ttl: timedelta = timedelta(0),
    ) -> Alerts:
        return cls(
            routes=tuple(r for r in routes if r.source == SOURCE),
            targets=targets,
            on_failed_attempt=frozenset(on_failed_attempt),
            dedupe_ttl=dedupe_ttl,
        )

    @property
    def active(self) -> bool:
        """Is any lifecycle event routed at all? (When not, nothing here need be built.)"""
        return bool(self.routes)

    def wants(self, event_type: str) -> bool:
        return any(r.event_type == event_type for r in self.routes)


def is_lifecycle_job(job: Job) -> bool:
    """Was ``job`` made from a lifecycle event (a notifier's job)?"""
    if job.submitted_by is not SubmittedBy.ROUTE or not isinstance(job.payload, dict):
        return False
    return job.payload.get("source") == SOURCE


def _event(kind: str, payload: dict[str, Any], *, at: datetime, key: str) -> Envelope:
    """One lifecycle event: its id derived from ``key`` (what it is about), so a replay of
    the unit that made it makes the same id; its dedupe key the same."""
    return Envelope(
        type=kind,
        payload=payload,
        source=SOURCE,
        timestamp=at,
        event_id=derived_id("lifecycle", kind, key),
        dedupe_key=f"{kind}:{key}",
    )


def _iso(at: datetime | None) -> str | None:
    return None if at is None else iso_utc(at)


def _tail(stderr: bytes) -> str:
    return stderr[-STDERR_TAIL_BYTES:].decode("utf-8", "replace")


def of_transition(
    job: Job,
    t: Transition,
    *,
    alerts: Alerts,
    started_at: datetime | None = None,
    stderr_tail: bytes = b"",
) -> Envelope | None:
    """The event of one line of ``job``'s history (``job``: the row as written), if it is news:
    ``job.dead`` (buried, or cancelled while queued), ``job.failed`` (a failed attempt, when
    the plugin asked for them), ``job.recovered`` (crash recovery re-queued it)."""
    if is_lifecycle_job(job):
        return None
    kind = activity_of(job, t).kind
    if kind in (Kind.JOB_DEAD, Kind.JOB_CANCELLED):
        name = Kind.JOB_DEAD.value
    elif kind is Kind.JOB_FAILED and job.plugin in alerts.on_failed_attempt:
        name = Kind.JOB_FAILED.value
    elif kind is Kind.JOB_RETRYING and t.actor is Actor.RECOVERY:
        name = RECOVERED
    else:
        return None
    # A re-queued job's row counts the attempt to come already.
    attempt = job.attempt - 1 if job.status is JobStatus.QUEUED else job.attempt
    payload: dict[str, Any] = {
        "job_id": job.id,
        "plugin": job.plugin,
        "command": job.command,
        "attempt": attempt,
        "max_attempts": job.max_attempts,
        "submitted_by": job.submitted_by.value,
        "schedule": job.schedule_id,
        "reason": t.reason,
        "last_error": job.last_error,
    }
    if name != RECOVERED:
        payload["stderr_tail"] = _tail(stderr_tail)
        payload["started_at"] = _iso(started_at or job.started_at)
        payload["completed_at"] = _iso(t.at)
    if name == Kind.JOB_FAILED.value:
        payload["next_retry_at"] = _iso(job.next_retry_at)
    return _event(name, payload, at=t.at, key=f"{job.id}:{attempt}")


def of_breaker(
    before: Breaker | None, after: Breaker, *, at: datetime, policy: BreakerPolicy | None = None
) -> Envelope | None:
    """``breaker.opened`` or ``breaker.closed`` when the pair's breaker changed that way."""
    was = before.status if before is not None else BreakerStatus.CLOSED
    payload: dict[str, Any] = {"plugin": after.plugin, "command": after.command}
    if after.status is BreakerStatus.OPEN and was is not BreakerStatus.OPEN:
        kind = Kind.BREAKER_OPENED.value
        payload["failures"] = after.failures
        payload["opened_at"] = _iso(after.opened_at)
        reopens = after.opened_at + policy.reset_after if policy and after.opened_at else None
        payload["reopens_at"] = _iso(reopens)
    elif after.status is BreakerStatus.CLOSED and was is not BreakerStatus.CLOSED:
        kind = Kind.BREAKER_CLOSED.value
        payload["failures"] = before.failures if before is not None else 0
    else:
        return None
    return _event(kind, payload, at=at, key=f"{after.plugin}:{after.command}:{iso_utc(at)}")


def of_skip(
    *, plugin: str, command: str | None, schedule: str, planned_at: datetime, reason: str, at: datetime
) -> Envelope:
    """``schedule.skipped``: a planned run enqueued nothing (breaker, poll guard, paused...)."""
    payload = {
        "plugin": plugin,
        "command": command,
        "schedule": schedule,
        "planned_at": iso_utc(planned_at),
        "reason": reason,
    }
    return _event(Kind.SCHEDULE_SKIPPED.value, payload, at=at, key=f"{schedule}:{iso_utc(planned_at)}")


def of_plugin(kind: Kind, *, plugin: str, reason: str, at: datetime) -> Envelope:
    """``plugin.refused`` or ``plugin.unhealthy`` at a start or reload. The id is the
    instant's; the dedupe key is the plugin's and the reason's, so the same refusal at every
    reload within the dedupe window is told once."""
    digest = hashlib.sha256(reason.encode()).hexdigest()[:16]
    event = _event(kind.value, {"plugin": plugin, "reason": reason}, at=at, key=f"{plugin}:{iso_utc(at)}")
    return attrs.evolve(event, dedupe_key=f"{kind.value}:{plugin}:{digest}")


def children(envelopes: Iterable[Envelope | None], alerts: Alerts, *, at: datetime) -> tuple[Job, ...]:
    """The ``handle`` jobs of ``envelopes`` (Nones skipped): one per matching route ``from: ductile``;
    each starts a chain of its own (no parent, depth 1)."""
    events = [e for e in envelopes if e is not None]
    if not events or not alerts.active:
        return ()
    return fan_out(events, routes=alerts.routes, targets=alerts.targets, parent_job_id=None, at=at).children
