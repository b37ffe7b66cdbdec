"""Claim: a queued job moves to running, through the domain's ``apply``, in its lane.

The unit reads what runs now (not locked: the store's constraints, one running
job per (plugin, slot) and per dedupe identity, catch a claimer that raced
for the same slot; a concurrent store retries the unit then), asks the Tx for
the oldest runnable job whose lane has room and whose identity is not running
(locked: PostgreSQL skips rows another claimer holds), lets
:func:`~ductile.domain.lanes.claim_of` pick its slot and deadline and
:func:`~ductile.domain.job.apply` make the move (status, ``started_at``, the
cleared retry time, the raised claim token: the one encoding of the claim's
bookkeeping), and compare-and-sets the result on ``queued`` and the token it
read.
"""

from __future__ import annotations

from datetime import datetime

from ductile.domain.job import Actor, Claim, Job, JobEvent, JobStatus, apply
from ductile.domain.lanes import UNLIMITED, Lanes, busy, claim_of
from ductile.ports.spawner import ProcessHandle
from ductile.ports.store_values import StaleJobError
from ductile.ports.tx import Tx
from ductile.units import journal


def claim_next(tx: Tx, now: datetime, *, lanes: Lanes = UNLIMITED, node: str | None = None) -> Job | None:
    """The oldest runnable queued job (FIFO by ``created_at``, then insertion) whose lane has a
    free slot and whose dedupe identity is not running, claimed by ``node``."""
    state = busy(tx.in_flight())
    job = tx.oldest_runnable(now, skip_plugins=state.saturated(lanes), skip_identities=state.identities)
    if job is None:
        return None
    claim = claim_of(job, state, lanes, node=node, now=now)
    if claim is None:
        raise ValueError(f"job {job.id}: the store offered a job whose lane is full or whose identity runs")
    return _claim(tx, job, now, claim)


def claim(
    tx: Tx, job_id: str, now: datetime, *, lanes: Lanes = UNLIMITED, node: str | None = None
) -> Job | None:
    """One given job, claimed at once (``init``: outside FIFO, retry times and lane widths, in a
    slot of its own); None when it is not queued."""
    tx.lock_job(job_id)
    job = tx.get_job(job_id)
    if job is None or job.status is not JobStatus.QUEUED:
        return None
    outside = Lanes(holds=lanes.holds, default_hold=lanes.default_hold)
    taken = claim_of(job, busy(tx.in_flight()), outside, node=node, now=now)
    return _claim(tx, job, now, taken or Claim(node=node))


def _claim(tx: Tx, job: Job, now: datetime, taken: Claim) -> Job:
    claimed, record = apply(
        job, JobEvent.CLAIM, at=now, actor=Actor.DISPATCHER, reason="claimed", claim=taken
    )
    stored = tx.update_job(claimed, expected=job.status, token=job.claim_token)
    journal.transition(tx, stored, record)
    return stored


def record_process(tx: Tx, job_id: str, handle: ProcessHandle, *, token: int) -> None:
    """Remember a running job's process group (for crash recovery), for the claim of ``token`` only."""
    tx.lock_job(job_id)
    job = tx.get_job(job_id)
    if job is None or job.status is not JobStatus.RUNNING or job.claim_token != token:
        raise StaleJobError(f"job {job_id} is not running under claim {token}")
    tx.put_process(job_id, handle)
