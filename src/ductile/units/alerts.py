"""Alerts: the lifecycle events of a unit's change, inserted as jobs in the same transaction.

Every unit that kills a job, re-queues an orphan, opens or closes a breaker,
skips a planned run or records a refused plugin calls :func:`emit` (or
:func:`after_settle`) with the :class:`~ductile.domain.lifecycle.Alerts` in
force: the events come from :mod:`ductile.domain.lifecycle`, their jobs go
through :func:`~ductile.units.enqueue.insert_jobs` like any child, so a
replayed unit finds them instead of adding them twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from ductile.domain import lifecycle
from ductile.domain.breaker import Breaker, BreakerPolicy
from ductile.domain.job import Actor, Job, JobStatus
from ductile.domain.lifecycle import Alerts
from ductile.domain.routing import Envelope
from ductile.domain.settle import Settlement
from ductile.ports.store_values import EnqueueResult
from ductile.ports.tx import Tx
from ductile.units.enqueue import insert_jobs


def emit(
    tx: Tx, events: Iterable[Envelope | None], alerts: Alerts | None, *, now: datetime
) -> list[EnqueueResult]:
    """Insert the jobs of ``events`` (Nones skipped) for the routes ``from: ductile``."""
    if alerts is None or not alerts.active:
        return []
    jobs = lifecycle.children(events, alerts, at=now)
    return insert_jobs(tx, jobs, actor=Actor.ROUTE, now=now, ttl=alerts.dedupe_ttl)


def after_settle(
    tx: Tx,
    s: Settlement,
    alerts: Alerts | None,
    *,
    breaker: Breaker | None,
    policy: BreakerPolicy | None,
    now: datetime,
) -> list[EnqueueResult]:
    """The events of one settlement: its transitions (a death, a failed attempt, a recovery)
    and its breaker's change. A notifier's own death is only counted."""
    job: Job = s.job
    if lifecycle.is_lifecycle_job(job):
        if job.status is JobStatus.DEAD:
            tx.add_count(lifecycle.SUPPRESSED_COUNT, 1)
        return []
    if alerts is None or not alerts.active:
        return []
    events: list[Envelope | None] = [
        lifecycle.of_transition(
            job, t, alerts=alerts, started_at=s.run.started_at, stderr_tail=s.run.stderr_tail
        )
        for t in s.transitions
    ]
    if s.breaker is not None:
        events.append(lifecycle.of_breaker(breaker, s.breaker, at=now, policy=policy))
    return emit(tx, events, alerts, now=now)
