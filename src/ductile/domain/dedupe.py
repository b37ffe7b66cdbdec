"""Opt-in deduplication (D1).

Identity is (plugin, command, dedupe_key): the same key sent to two targets is
two jobs, so fan-out never collapses. An enqueue is dropped when a job with
the same identity is still queued (it will run anyway), is running (D1 as
amended: a redelivery during the run is the same delivery, "same delivery id,
same job") or succeeded within the TTL; failed or dead jobs do not block.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

import attrs

from ductile.domain.job import Job, JobStatus

DEFAULT_DEDUPE_TTL = timedelta(hours=24)
#: Jobs that block a duplicate whatever their age: they will run, or are running.
_ALIVE = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})
#: Which blocking job a duplicate is reported against, best first: the one that will run,
#: then the one running now, then the latest success.
_RANK = {JobStatus.QUEUED: 0, JobStatus.RUNNING: 1, JobStatus.SUCCEEDED: 2}


@attrs.frozen
class DedupeIdentity:
    plugin: str
    command: str
    key: str


def identity_of(job: Job) -> DedupeIdentity | None:
    if job.dedupe_key is None:
        return None
    return DedupeIdentity(job.plugin, job.command, job.dedupe_key)


def blocks(existing: Job, *, now: datetime, ttl: timedelta) -> bool:
    """Does ``existing`` (same identity) make a new enqueue redundant?"""
    if existing.status in _ALIVE:
        return True
    if existing.status is JobStatus.SUCCEEDED and existing.completed_at is not None:
        return existing.completed_at >= now - ttl
    return False


def find_duplicate(candidates: Iterable[Job], *, now: datetime, ttl: timedelta) -> Job | None:
    """The job a new enqueue would duplicate, if any.

    ``candidates`` are jobs sharing the new job's identity. A queued one is
    preferred (it is the one that will run; the oldest of them), then a
    running one, else the latest success.
    """
    best: Job | None = None
    for job in candidates:
        if blocks(job, now=now, ttl=ttl) and (best is None or _better(job, best)):
            best = job
    return best


def _better(job: Job, best: Job) -> bool:
    """Is ``job`` a better answer than ``best`` (both blocking)?"""
    rank, best_rank = _RANK[job.status], _RANK[best.status]
    if rank != best_rank:
        return rank < best_rank
    if job.status is JobStatus.SUCCEEDED:
        return (job.completed_at or job.created_at) > (best.completed_at or best.created_at)
    return job.created_at < best.created_at
