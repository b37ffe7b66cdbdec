"""Enqueue: the insert decisions every unit that creates jobs makes (D1, D8).

A job is inserted unless it is a child its parent already made from the same
event (D8), its id is already stored, or it duplicates a job of its dedupe
identity (D1, :func:`~ductile.domain.dedupe.find_duplicate`). Nothing is ever
inserted "or ignored": an existing job is found first and its id reported
with ``created=False``. ``enqueue``, the children of ``settle`` and the jobs
of ``fire`` all go through :func:`insert_jobs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from ductile.domain.dedupe import find_duplicate
from ductile.domain.job import Actor, Job, JobStatus, creation
from ductile.ports.store_values import EnqueueResult
from ductile.ports.tx import Tx
from ductile.units import journal


def enqueue(tx: Tx, job: Job, *, actor: Actor, now: datetime, dedupe_ttl: timedelta) -> EnqueueResult:
    """The Store's ``enqueue``: one job, with its creation transition, unless a duplicate."""
    return insert_jobs(tx, (job,), actor=actor, now=now, ttl=dedupe_ttl)[0]


def insert_jobs(
    tx: Tx, jobs: Sequence[Job], *, actor: Actor, now: datetime, ttl: timedelta
) -> list[EnqueueResult]:
    """Insert each of ``jobs`` unless a known child, an id clash or a duplicate; one
    result per job, in order. Each decision sees the jobs inserted before it, so a
    batch deduplicates against itself."""
    if not jobs:
        return []
    identities: set[tuple[str, str, str]] = set()
    for job in jobs:
        if job.dedupe_key is not None:
            identities.add((job.plugin, job.command, job.dedupe_key))
    for plugin, command, key in sorted(identities):
        tx.lock_dedupe(plugin, command, key)
    return [_insert(tx, job, actor, now, ttl) for job in jobs]


def _insert(tx: Tx, job: Job, actor: Actor, now: datetime, ttl: timedelta) -> EnqueueResult:
    if job.status is not JobStatus.QUEUED:
        raise ValueError(f"job {job.id}: only queued jobs can be enqueued")
    if job.parent_job_id is not None and job.source_event_id is not None:
        child = tx.child_of(job.parent_job_id, job.source_event_id, job.plugin, job.command)
        if child is not None:
            return EnqueueResult(child, False)
    if tx.job_exists(job.id):
        return EnqueueResult(job.id, False)
    if job.dedupe_key is not None:
        candidates = tx.dedupe_candidates(job.plugin, job.command, job.dedupe_key)
        duplicate = find_duplicate(candidates, now=now, ttl=ttl)
        if duplicate is not None:
            return EnqueueResult(duplicate.id, False)
    tx.insert_job(job)
    journal.transition(tx, job, creation(job, actor=actor))
    return EnqueueResult(job.id, True)
