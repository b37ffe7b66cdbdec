"""Crash recovery (D6): every job found ``running`` at start is an orphan.

The decision is the normal settle path with an ``Interrupted`` outcome, so an
orphan that runs out of attempts ends like any other terminal failure
(``completed_at`` set, logged), and one with attempts left is re-queued at
once with ``attempt + 1`` and the actor ``recovery``.
"""

from __future__ import annotations

from datetime import datetime

from ductile.domain.job import Job, JobStatus
from ductile.domain.outcome import Interrupted
from ductile.domain.settle import SettleContext, Settlement, settle


def is_orphan(job: Job) -> bool:
    """With the instance lock held, anything still running has no process behind it."""
    return job.status is JobStatus.RUNNING


def recover(job: Job, *, now: datetime, reason: str | None = None) -> Settlement:
    outcome = Interrupted(reason=reason) if reason else Interrupted()
    return settle(job, outcome, ctx=SettleContext(now=now))
