"""Upkeep: the units an operator or a reload asks for (D13, D19, ``ductile reset``)."""

from __future__ import annotations

from datetime import datetime

from ductile.domain import breaker as br
from ductile.domain.job import Actor, JobEvent, apply
from ductile.ports.tx import Tx


def cancel_queued(tx: Tx, plugin: str, *, reason: str, now: datetime) -> list[str]:
    """D13: the plugin's queued jobs move to dead (its config is gone); their ids, oldest first."""
    ids: list[str] = []
    for job in tx.queued_of(plugin):
        dead, record = apply(
            job, JobEvent.CANCEL, at=now, actor=Actor.RELOAD, reason=reason, last_error=reason
        )
        tx.update_job(dead, expected=job.status, token=job.claim_token)
        tx.add_transition(record)
        ids.append(job.id)
    return ids


def delete_finished(tx: Tx, before: datetime) -> int:
    """D19: retention; terminal jobs completed before ``before`` go, with their history."""
    return tx.delete_finished(before)


def reset_breakers(tx: Tx, plugin: str) -> list[br.Breaker]:
    """Close every breaker of ``plugin``; the ones that were open, by command."""
    current = tx.breakers_of(plugin)
    for breaker in current:
        tx.lock_breaker(breaker.plugin, breaker.command)
        tx.put_breaker(br.reset(breaker))
    return [b for b in current if b.is_open]
