"""Opt-in deduplication (D1).

Identity is (plugin, command, dedupe_key): the same key sent to two targets is
two jobs, so fan-out never collapses. An enqueue is dropped when a job with
the same identity is still queued (it will run anyway) or succeeded within the
TTL; running, failed or dead jobs do not block.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

import attrs

from ductile.domain.job import Job, JobStatus

DEFAULT_DEDUPE_TTL = timedelta(hours=24)


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
    if existing.status is JobStatus.QUEUED:
        return True
    if existing.status is JobStatus.SUCCEEDED and existing.completed_at is not None:
        return existing.completed_at >= now - ttl
    return False


def find_duplicate(candidates: Iterable[Job], *, now: datetime, ttl: timedelta) -> Job | None:
    """The job a new enqueue would duplicate, if any.

    ``candidates`` are jobs sharing the new job's identity. A queued one is
    preferred (it is the one that will run); else the latest success.
    """
    best: Job | None = None
    for job in candidates:
        if not blocks(job, now=now, ttl=ttl):
            continue
        if job.status is JobStatus.QUEUED:
            if best is None or best.status is not JobStatus.QUEUED or job.created_at < best.created_at:
                best = job
        elif best is None or (
            best.status is not JobStatus.QUEUED
            and (job.completed_at or job.created_at) > (best.completed_at or best.created_at)
        ):
            best = job
    return best
