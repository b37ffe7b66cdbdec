"""Rewind: the wall clock stepped back; every pending instant keeps the real time it had left.

The app hands in the re-planned runs (computed with
:func:`ductile.domain.clock_step.planned_run`, which needs each schedule);
the unit replaces each one that is still stored as it was read (a firing in
between wins), and moves every retry time and every open breaker back by the
step (:mod:`ductile.domain.clock_step`). One transaction: a crash leaves all of
it or none (ADR 0045).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from ductile.domain import clock_step
from ductile.domain.job import JobStatus
from ductile.domain.schedule import PlannedRun
from ductile.ports.store_values import Rewound
from ductile.ports.tx import Tx


def rewind(tx: Tx, *, step: timedelta, plans: Sequence[tuple[PlannedRun, PlannedRun]]) -> Rewound:
    """Apply a backward step of ``step``: ``plans`` as (stored, re-planned) pairs."""
    replanned = 0
    for old, new in plans:
        if new.key != old.key:
            raise ValueError("a re-planned run must belong to the same schedule key")
        tx.lock_planned(old.key)
        if tx.get_planned(old.key) == old and new != old:
            tx.replace_planned(old, new)
            replanned += 1
    retries = 0
    for job in tx.retrying_jobs():
        tx.lock_job(job.id)
        moved = clock_step.retry(job, step)
        if moved != job:
            tx.update_job(moved, expected=JobStatus.QUEUED, token=job.claim_token)
            retries += 1
    breakers = 0
    for breaker in tx.open_breakers():
        tx.lock_breaker(breaker.plugin, breaker.command)
        moved_breaker = clock_step.breaker(breaker, step)
        if moved_breaker != breaker:
            tx.put_breaker(moved_breaker)
            breakers += 1
    return Rewound(plans=replanned, retries=retries, breakers=breakers)
