"""IndexedMemoryStore: the InMemoryStore fake with indexes for long simulations.

The simulation's hot queries (claim, next retry, poll guard, queue depth,
retention, due schedules) answered from heaps and sorted lists instead of
scans, so a simulated month of a busy config stays fast. It is the plain fake
with another :class:`~ductile.fakes.memory_tx.Index` in its Tx: the same
units, the same tables, the same answers; the simulation's traces are
identical on both (``tests/sim/test_determinism.py``).
"""

from __future__ import annotations

import bisect
import heapq
from datetime import datetime

from ductile.domain.job import TERMINAL, Job, JobStatus
from ductile.domain.lanes import Identity
from ductile.domain.schedule import PlannedRun
from ductile.fakes.memory_store import InMemoryStore
from ductile.fakes.memory_tx import MemoryTx, skipped


class HeapIndex:
    """The hot queries from heaps and a sorted list, kept up to date on every write.

    A heap entry is checked against the job table when it is used: one that no
    longer describes its job (claimed, re-queued for later, deleted) is dropped.
    """

    def __init__(self, tx: MemoryTx) -> None:
        self._jobs = tx.jobs
        self._seq = tx.seq
        self._planned = tx.planned
        #: Queued jobs that may run (no retry time, or it has passed): (created_at, seq, id).
        self._ready: list[tuple[datetime, int, str]] = []
        #: Queued jobs waiting for their retry time, to move to ``_ready``: (next_retry_at, id).
        self._waiting: list[tuple[datetime, str]] = []
        #: The same, for :meth:`next_retry_at`.
        self._retries: list[tuple[datetime, str]] = []
        #: Terminal jobs by completion: (completed_at, id).
        self._finished: list[tuple[datetime, str]] = []
        self._outstanding: dict[tuple[str, str], int] = {}
        #: The same per (plugin, schedule id), for scheduled jobs.
        self._scheduled: dict[tuple[str, str], int] = {}
        self._queued = 0
        #: Every planned run as (planned_at, key), sorted.
        self._plans: list[tuple[datetime, str]] = []

    # ----------------------------------------------------------------- kept up to date
    def _account(self, job: Job | None, sign: int) -> None:
        if job is None:
            return
        if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
            key = (job.plugin, job.command)
            self._outstanding[key] = self._outstanding.get(key, 0) + sign
            if job.schedule_id is not None:
                mine = (job.plugin, job.schedule_id)
                self._scheduled[mine] = self._scheduled.get(mine, 0) + sign
        if job.status is JobStatus.QUEUED:
            self._queued += sign

    def job_written(self, old: Job | None, new: Job | None) -> None:
        if new is None:
            self._account(old, -1)
            return
        if (  # else the counts stay as they are
            old is None
            or old.status is not new.status
            or old.plugin != new.plugin
            or old.command != new.command
        ):
            self._account(old, -1)
            self._account(new, +1)
        if new.status is JobStatus.QUEUED and (
            old is None or old.status is not JobStatus.QUEUED or old.next_retry_at != new.next_retry_at
        ):
            if new.next_retry_at is None:
                heapq.heappush(self._ready, (new.created_at, self._seq[new.id], new.id))
            else:
                heapq.heappush(self._waiting, (new.next_retry_at, new.id))
                heapq.heappush(self._retries, (new.next_retry_at, new.id))
        if (
            new.status in TERMINAL
            and new.completed_at is not None
            and (old is None or old.status not in TERMINAL)
        ):
            heapq.heappush(self._finished, (new.completed_at, new.id))

    def plan_written(self, old: PlannedRun | None, new: PlannedRun | None) -> None:
        if old is not None:
            del self._plans[bisect.bisect_left(self._plans, (old.planned_at, old.key))]
        if new is not None:
            bisect.insort(self._plans, (new.planned_at, new.key))

    # ----------------------------------------------------------------- the queries
    def oldest_runnable(
        self,
        now: datetime,
        skip_plugins: frozenset[str] = frozenset(),
        skip_identities: frozenset[Identity] = frozenset(),
    ) -> Job | None:
        jobs = self._jobs
        ready = self._ready
        waiting = self._waiting
        while waiting and waiting[0][0] <= now:
            at, job_id = heapq.heappop(waiting)
            job = jobs.get(job_id)
            if job is not None and job.status is JobStatus.QUEUED and job.next_retry_at == at:
                heapq.heappush(ready, (job.created_at, self._seq[job_id], job_id))
        passed: list[tuple[datetime, int, str]] = []  # runnable, but their lanes are full: kept
        found: Job | None = None
        while ready:
            job = jobs.get(ready[0][2])
            if job is None or job.status is not JobStatus.QUEUED:
                heapq.heappop(ready)
            elif job.next_retry_at is not None and job.next_retry_at > now:
                # Not yet (re-queued for later since, or asked about an earlier instant): it waits again.
                heapq.heappop(ready)
                heapq.heappush(waiting, (job.next_retry_at, job.id))
            elif (skip_plugins or skip_identities) and skipped(job, skip_plugins, skip_identities):
                passed.append(heapq.heappop(ready))
            else:
                found = job
                break
        for entry in passed:
            heapq.heappush(ready, entry)
        return found

    def next_retry_at(self) -> datetime | None:
        retries = self._retries
        while retries:
            at, job_id = retries[0]
            job = self._jobs.get(job_id)
            if job is not None and job.status is JobStatus.QUEUED and job.next_retry_at == at:
                return at
            heapq.heappop(retries)
        return None

    def outstanding(self, plugin: str, command: str) -> int:
        return self._outstanding.get((plugin, command), 0)

    def outstanding_of_schedule(self, plugin: str, schedule_id: str) -> int:
        return self._scheduled.get((plugin, schedule_id), 0)

    def queue_depth(self) -> int:
        return self._queued

    def finished_before(self, before: datetime, limit: int | None = None) -> list[Job]:
        finished = self._finished
        doomed: list[Job] = []
        while finished and finished[0][0] < before and (limit is None or len(doomed) < limit):
            at, job_id = heapq.heappop(finished)
            job = self._jobs.get(job_id)
            if job is not None and job.status in TERMINAL and job.completed_at == at:
                doomed.append(job)
        return doomed

    def all_planned(self) -> list[PlannedRun]:
        planned = self._planned
        return [planned[key] for _, key in self._plans]

    def due(self, start: datetime, end: datetime) -> list[PlannedRun]:
        """The planned runs with ``start <= planned_at < end``, by (planned_at, key)."""
        plans = self._plans
        lo = bisect.bisect_left(plans, (start, ""))
        hi = bisect.bisect_left(plans, (end, ""), lo)
        planned = self._planned
        return [planned[key] for _, key in plans[lo:hi]]


class IndexedMemoryStore(InMemoryStore):
    """:class:`~ductile.fakes.InMemoryStore` over a Tx whose index is a :class:`HeapIndex`."""

    def __init__(self) -> None:
        super().__init__(MemoryTx(index=HeapIndex))
