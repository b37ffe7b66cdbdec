"""Upkeep: the units an operator or a reload asks for (D13, D19, ``ductile reset``, ``pause``, ``resume``)."""

from __future__ import annotations

from datetime import datetime

from ductile.domain import breaker as br
from ductile.domain.activity import Activity
from ductile.domain.job import Actor, Job, JobEvent, JobStatus, apply
from ductile.ports.store_values import NotQueuedError, Pause
from ductile.ports.tx import Tx
from ductile.units import journal


def cancel_queued(tx: Tx, plugin: str, *, reason: str, now: datetime) -> list[str]:
    """D13: the plugin's queued jobs move to dead (its config is gone); their ids, oldest first."""
    ids: list[str] = []
    for job in tx.queued_of(plugin):
        dead, record = apply(
            job, JobEvent.CANCEL, at=now, actor=Actor.RELOAD, reason=reason, last_error=reason
        )
        tx.update_job(dead, expected=job.status, token=job.claim_token)
        journal.transition(tx, dead, record)
        ids.append(job.id)
    return ids


def delete_finished(tx: Tx, before: datetime) -> int:
    """D19: retention; terminal jobs completed before ``before`` go, with their history; so do
    the activity log's entries older than ``before`` and facts recorded before it (the newest
    of each plugin and type stays: it is the state)."""
    tx.prune_activity(before)
    deleted = tx.delete_finished(before)
    tx.delete_facts_before(before)
    return deleted


def pause(tx: Tx, plugin: str, schedule_id: str | None, *, now: datetime) -> bool:
    """Pause a plugin's schedules, or one of them; False when that pause exists already."""
    if tx.get_pause(plugin, schedule_id) is not None:
        return False
    tx.put_pause(Pause(plugin=plugin, schedule_id=schedule_id, at=now))
    return True


def resume(tx: Tx, plugin: str, schedule_id: str | None) -> bool:
    """Lift a pause; False when there was none."""
    return tx.delete_pause(plugin, schedule_id)


def reset_breakers(
    tx: Tx, plugin: str, *, now: datetime | None = None, actor: str = "operator"
) -> list[br.Breaker]:
    """Close every breaker of ``plugin``; the ones that were open, by command. An open
    breaker closed here is logged (``breaker.closed``) at ``now`` when given."""
    current = tx.breakers_of(plugin)
    for breaker in current:
        tx.lock_breaker(breaker.plugin, breaker.command)
        closed = br.reset(breaker)
        if now is None:
            tx.put_breaker(closed)
        else:
            journal.breaker(tx, breaker, closed, at=now, actor=actor)
    return [b for b in current if b.is_open]


def cancel_job(tx: Tx, job_id: str, *, reason: str, actor: Actor, now: datetime) -> Job:
    """An operator cancels one queued job: it becomes dead with ``reason``.
    :class:`~ductile.ports.store_values.NotQueuedError` when it is not queued."""
    tx.lock_job(job_id)
    job = tx.get_job(job_id)
    if job is None or job.status is not JobStatus.QUEUED:
        raise NotQueuedError(job_id, None if job is None else job.status)
    dead, record = apply(job, JobEvent.CANCEL, at=now, actor=actor, reason=reason, last_error=reason)
    tx.update_job(dead, expected=JobStatus.QUEUED, token=job.claim_token)
    journal.transition(tx, dead, record)
    return dead


def note(tx: Tx, entry: Activity) -> None:
    """Append an entry the app decided on (a config reloaded or rejected, a plugin refused)."""
    tx.append_activity(entry)
