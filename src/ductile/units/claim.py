"""Claim: a queued job moves to running, through the domain's ``apply``.

The unit reads the job, lets :func:`~ductile.domain.job.apply` make the move
(status, ``started_at``, the cleared retry time: the one encoding of the
claim's bookkeeping), and compare-and-sets the result on ``queued``.
"""

from __future__ import annotations

from datetime import datetime

from ductile.domain.job import Actor, Job, JobEvent, JobStatus, apply
from ductile.ports.spawner import ProcessHandle
from ductile.ports.store_values import StaleJobError
from ductile.ports.tx import Tx
from ductile.units import journal


def claim_next(tx: Tx, now: datetime) -> Job | None:
    """The oldest runnable queued job (FIFO by ``created_at``, then insertion), claimed."""
    job = tx.oldest_runnable(now)
    return None if job is None else _claim(tx, job, now)


def claim(tx: Tx, job_id: str, now: datetime) -> Job | None:
    """One given job, claimed at once (``init``: outside FIFO and retry times); None
    when it is not queued."""
    tx.lock_job(job_id)
    job = tx.get_job(job_id)
    if job is None or job.status is not JobStatus.QUEUED:
        return None
    return _claim(tx, job, now)


def _claim(tx: Tx, job: Job, now: datetime) -> Job:
    claimed, record = apply(job, JobEvent.CLAIM, at=now, actor=Actor.DISPATCHER, reason="claimed")
    tx.update_job(claimed, expected=job.status)
    journal.transition(tx, claimed, record)
    return claimed


def record_process(tx: Tx, job_id: str, handle: ProcessHandle) -> None:
    """Remember a running job's process group (for crash recovery)."""
    tx.lock_job(job_id)
    if tx.job_status(job_id) is not JobStatus.RUNNING:
        raise StaleJobError(f"job {job_id} is not running")
    tx.put_process(job_id, handle)
