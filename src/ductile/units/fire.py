"""Fire: one scheduled firing, atomically (D2, D3, D21; pause and ``if_running``).

If ``due`` is still the stored planned run of its key, the pause is checked
(a paused plugin or schedule enqueues nothing), then ``if_running: cancel``
cancels the schedule's outstanding jobs, then the guard (the poll guard, then
the breaker's admission); the jobs are enqueued when it allows, and the
planned run is replaced by ``next_run``, blocked or not. A ``due`` that is no
longer stored was handled already: nothing happens.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from ductile.domain import activity, lifecycle
from ductile.domain import breaker as br
from ductile.domain.activity import SkipReason
from ductile.domain.job import Actor, Job, JobEvent, JobStatus, Transition, apply
from ductile.domain.lifecycle import Alerts
from ductile.domain.routing import Envelope
from ductile.domain.schedule import PlannedRun, poll_guard_allows
from ductile.ports.store_values import Blocked, EnqueueResult, FireResult, Guard
from ductile.ports.tx import Tx
from ductile.units.alerts import emit
from ductile.units.enqueue import insert_jobs


def fire(
    tx: Tx,
    *,
    due: PlannedRun,
    next_run: PlannedRun,
    jobs: Sequence[Job],
    guard: Guard | None,
    actor: Actor,
    now: datetime,
    dedupe_ttl: timedelta,
    skipped: SkipReason | None = None,
    alerts: Alerts | None = None,
) -> FireResult:
    """``skipped``: the app decided this run enqueues nothing (a missed run), and why;
    the firing is logged as ``schedule.skipped`` with that reason. With ``alerts``, a skip
    and the jobs ``if_running: cancel`` cancels are lifecycle events too."""
    tx.lock_planned(due.key)
    if tx.get_planned(due.key) != due:
        return FireResult(fired=False)
    if next_run.key != due.key:
        raise ValueError("next_run must belong to the same schedule key")
    blocked: Blocked | None = None
    admitted: br.Breaker | None = None
    cancelled: list[tuple[Job, Transition]] = []
    stopping: list[str] = []
    if jobs and paused(tx, due.plugin, due.schedule_id):
        blocked = Blocked.PAUSED
    elif guard is not None and jobs:
        if guard.cancel_reason is not None and guard.schedule_id is not None:
            cancelled, stopping = _cancel_outstanding(tx, guard, guard.schedule_id, guard.cancel_reason, now)
        blocked, admitted = _check(tx, guard, now)
    results: list[EnqueueResult] = []
    if blocked is None:
        results = insert_jobs(tx, jobs, actor=actor, now=now, ttl=dedupe_ttl)
    tx.replace_planned(due, next_run)
    if admitted is not None:
        tx.put_breaker(admitted)
    if blocked is not None:
        skipped = _SKIPPED[blocked]
    command = guard.command if guard is not None else None
    _log(tx, due, command=command, results=results, skipped=skipped, now=now)
    told = _tell(tx, due, command=command, skipped=skipped, cancelled=cancelled, alerts=alerts, now=now)
    return FireResult(
        fired=True,
        jobs=tuple(results),
        blocked=blocked,
        cancelled=tuple(j.id for j, _ in cancelled),
        stopping=tuple(stopping),
        alerts=tuple(told),
    )


def _log(
    tx: Tx,
    due: PlannedRun,
    *,
    command: str | None,
    results: Sequence[EnqueueResult],
    skipped: SkipReason | None,
    now: datetime,
) -> None:
    """The firing in the activity log: ``schedule.fired`` with its jobs, or ``schedule.skipped``."""
    tx.append_activity(
        activity.of_fire(
            key=due.key,
            plugin=due.plugin,
            command=command,
            planned_at=due.planned_at,
            nominal_at=due.nominal_at,
            at=now,
            jobs=tuple(r.job_id for r in results if r.created),
            skipped=skipped,
        )
    )


def _tell(
    tx: Tx,
    due: PlannedRun,
    *,
    command: str | None,
    skipped: SkipReason | None,
    cancelled: Sequence[tuple[Job, Transition]],
    alerts: Alerts | None,
    now: datetime,
) -> list[EnqueueResult]:
    """The lifecycle events of a firing: its skip, the deaths of the jobs it cancelled."""
    if alerts is None or not alerts.active:
        return []
    events: list[Envelope | None] = [lifecycle.of_transition(j, t, alerts=alerts) for j, t in cancelled]
    if skipped is not None:
        events.append(
            lifecycle.of_skip(
                plugin=due.plugin,
                command=command,
                schedule=due.key,
                planned_at=due.planned_at,
                reason=skipped.value,
                at=now,
            )
        )
    return emit(tx, events, alerts, now=now)


def paused(tx: Tx, plugin: str, schedule_id: str) -> bool:
    """Is the plugin, or this one of its schedules, paused?"""
    return tx.get_pause(plugin, None) is not None or tx.get_pause(plugin, schedule_id) is not None


def _cancel_outstanding(
    tx: Tx, guard: Guard, schedule_id: str, reason: str, now: datetime
) -> tuple[list[tuple[Job, Transition]], list[str]]:
    """``if_running: cancel``: the schedule's queued jobs go dead now; its running ones are asked
    to stop (the caller stops their processes; their settle makes them dead). The dead jobs
    with their last transition, the ids of the running ones."""
    cancelled: list[tuple[Job, Transition]] = []
    stopping: list[str] = []
    for job in tx.schedule_jobs(guard.plugin, schedule_id):
        if job.status is JobStatus.QUEUED:
            dead, record = apply(
                job, JobEvent.CANCEL, at=now, actor=Actor.SCHEDULER, reason=reason, last_error=reason
            )
            tx.update_job(dead, expected=job.status, token=job.claim_token)
            tx.add_transition(record)
            cancelled.append((dead, record))
        elif job.status is JobStatus.RUNNING:
            tx.request_cancel(job.id, reason)
            stopping.append(job.id)
    return cancelled, stopping


_SKIPPED = {
    Blocked.BREAKER_OPEN: SkipReason.BREAKER,
    Blocked.POLL_GUARD: SkipReason.POLL_GUARD,
    Blocked.PAUSED: SkipReason.PAUSED,
}


def _check(tx: Tx, guard: Guard, now: datetime) -> tuple[Blocked | None, br.Breaker | None]:
    """Why the guard refuses (None: it allows), and the pair's breaker when admitting changed it."""
    if guard.max_outstanding is not None:
        if guard.schedule_id is not None:
            outstanding = tx.outstanding_of_schedule(guard.plugin, guard.schedule_id)
        else:
            outstanding = tx.outstanding(guard.plugin, guard.command)
        if not poll_guard_allows(outstanding, guard.max_outstanding):
            return Blocked.POLL_GUARD, None
    if guard.breaker is None:
        return None, None
    command = guard.breaker_command
    tx.lock_breaker(guard.plugin, command)
    current = tx.get_breaker(guard.plugin, command) or br.closed(guard.plugin, command)
    allowed, updated = br.admit(current, now=now, policy=guard.breaker)
    if not allowed:
        return Blocked.BREAKER_OPEN, None
    return None, (updated if updated != current else None)
