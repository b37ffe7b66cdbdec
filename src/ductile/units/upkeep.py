"""Upkeep: the units an operator or a reload asks for (D13, D19, ``ductile reset``, ``pause``, ``resume``)."""

from __future__ import annotations

from datetime import datetime

from ductile.domain import breaker as br
from ductile.domain import lifecycle
from ductile.domain.activity import Activity, Kind
from ductile.domain.job import Actor, Job, JobEvent, JobStatus, Transition, apply
from ductile.domain.lifecycle import Alerts
from ductile.ports.store_values import NotQueuedError, Pause, Pruned
from ductile.ports.tx import Tx
from ductile.units import journal
from ductile.units.alerts import emit


def cancel_queued(
    tx: Tx,
    plugin: str,
    *,
    reason: str,
    now: datetime,
    alerts: Alerts | None = None,
) -> list[str]:
    """D13: the plugin's queued jobs move to dead (its config is gone); their ids, oldest first.
    Each death is a ``job.dead`` lifecycle event when ``alerts`` route one."""
    ids: list[str] = []
    for job in tx.queued_of(plugin):
        dead, record = apply(
            job, JobEvent.CANCEL, at=now, actor=Actor.RELOAD, reason=reason, last_error=reason
        )
        tx.update_job(dead, expected=job.status, token=job.claim_token)
        journal.transition(tx, dead, record)
        _told(tx, dead, record, alerts, now=now)
        ids.append(job.id)
    return ids


def _told(tx: Tx, job: Job, record: Transition, alerts: Alerts | None, *, now: datetime) -> None:
    """The lifecycle event of a queued job cancelled (``job.dead``), when one is routed."""
    if alerts is not None and alerts.active:
        emit(tx, [lifecycle.of_transition(job, record, alerts=alerts)], alerts, now=now)


#: How many activity entries or facts one retention step deletes per job it may delete: a job
#: goes with its transitions, runs and a dozen index entries, an entry is one row and one index
#: entry (measured on SQLite: 200 entries take 0.35 ms, 200 jobs 5.5 ms).
LIGHT_ROWS_PER_JOB = 10


def delete_finished(tx: Tx, before: datetime, *, limit: int | None = None) -> Pruned:
    """D19: retention; terminal jobs completed before ``before`` go, with their history; so do
    the activity log's entries older than ``before`` and facts recorded before it (the newest
    of each plugin and type stays: it is the state). At most ``limit`` jobs, and
    :data:`LIGHT_ROWS_PER_JOB` times as many entries and facts (None: all): one step of a
    retention the caller repeats until it is ``done`` (ADR 0064)."""
    light = None if limit is None else limit * LIGHT_ROWS_PER_JOB
    activity = tx.prune_activity(before, limit=light)
    deleted = tx.delete_finished(before, limit=limit)
    facts = tx.delete_facts_before(before, limit=light)
    done = limit is None or light is None or (deleted < limit and max(activity, facts) < light)
    return Pruned(jobs=deleted, done=done)


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
    tx: Tx,
    plugin: str,
    *,
    now: datetime | None = None,
    actor: str = "operator",
    alerts: Alerts | None = None,
) -> list[br.Breaker]:
    """Close every breaker of ``plugin``; the ones that were open, by command. An open
    breaker closed here is logged (``breaker.closed``) at ``now`` when given, and is a
    lifecycle event when ``alerts`` route one."""
    current = tx.breakers_of(plugin)
    for breaker in current:
        tx.lock_breaker(breaker.plugin, breaker.command)
        closed = br.reset(breaker)
        if now is None:
            tx.put_breaker(closed)
        else:
            journal.breaker(tx, breaker, closed, at=now, actor=actor)
            emit(tx, [lifecycle.of_breaker(breaker, closed, at=now)], alerts, now=now)
    return [b for b in current if b.is_open]


def cancel_job(
    tx: Tx,
    job_id: str,
    *,
    reason: str,
    actor: Actor,
    now: datetime,
    alerts: Alerts | None = None,
) -> Job:
    """An operator cancels one queued job: it becomes dead with ``reason`` (a ``job.dead``
    lifecycle event when ``alerts`` route one).
    :class:`~ductile.ports.store_values.NotQueuedError` when it is not queued."""
    tx.lock_job(job_id)
    job = tx.get_job(job_id)
    if job is None or job.status is not JobStatus.QUEUED:
        raise NotQueuedError(job_id, None if job is None else job.status)
    dead, record = apply(job, JobEvent.CANCEL, at=now, actor=actor, reason=reason, last_error=reason)
    tx.update_job(dead, expected=JobStatus.QUEUED, token=job.claim_token)
    journal.transition(tx, dead, record)
    _told(tx, dead, record, alerts, now=now)
    return dead


def note(tx: Tx, entry: Activity, *, alerts: Alerts | None = None) -> None:
    """Append an entry the app decided on (a config reloaded or rejected, a plugin refused or
    unhealthy); a refused or unhealthy plugin is also a lifecycle event when ``alerts`` route one."""
    tx.append_activity(entry)
    if entry.kind in (Kind.PLUGIN_REFUSED, Kind.PLUGIN_UNHEALTHY) and entry.plugin is not None:
        reason = str(entry.data.get("reason", ""))
        event = lifecycle.of_plugin(entry.kind, plugin=entry.plugin, reason=reason, at=entry.at)
        emit(tx, [event], alerts, now=entry.at)
