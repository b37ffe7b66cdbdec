"""IndexedMemoryStore: the InMemoryStore fake with indexes for long simulations.

The simulation's hot queries (claim, next retry, poll guard, queue depth,
retention, due schedules) answered from heaps and sorted lists instead of
scans, so a simulated month of a busy config stays fast. Same answers as the
plain fake: the simulation's traces are identical on both
(``tests/sim/test_determinism.py``).
"""

from __future__ import annotations

import bisect
import heapq
from datetime import datetime
from typing import Any

from ductile.domain.job import TERMINAL, Job, JobStatus
from ductile.domain.schedule import PlannedRun
from ductile.fakes.memory_store import InMemoryStore


class _JobTable(dict[str, Job]):
    """InMemoryStore's job table, keeping on every write the indexes
    :class:`IndexedMemoryStore` answers its hot queries from. Every entry of a heap
    is checked against the table when used (stale ones are dropped)."""

    def __init__(self) -> None:
        super().__init__()
        self.order: dict[str, int] = {}
        self._counter = 0
        #: Queued jobs that may run (no retry time, or it has passed): (created_at, order, id).
        self.ready: list[tuple[datetime, int, str]] = []
        #: Queued jobs waiting for their retry time, to move to ``ready``: (next_retry_at, id).
        self.waiting: list[tuple[datetime, str]] = []
        #: The same, for ``next_retry_at()``.
        self.retries: list[tuple[datetime, str]] = []
        #: Terminal jobs by completion: (completed_at, id).
        self.finished: list[tuple[datetime, str]] = []
        self.outstanding: dict[tuple[str, str], int] = {}
        self.queued = 0

    def _account(self, job: Job | None, sign: int) -> None:
        if job is None:
            return
        if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
            key = (job.plugin, job.command)
            self.outstanding[key] = self.outstanding.get(key, 0) + sign
        if job.status is JobStatus.QUEUED:
            self.queued += sign

    def __setitem__(self, key: str, job: Job) -> None:
        old = self.get(key)
        if key not in self.order:
            self._counter += 1
            self.order[key] = self._counter
        super().__setitem__(key, job)
        if (  # else the counts stay as they are
            old is None
            or old.status is not job.status
            or old.plugin != job.plugin
            or old.command != job.command
        ):
            self._account(old, -1)
            self._account(job, +1)
        if job.status is JobStatus.QUEUED and (
            old is None or old.status is not JobStatus.QUEUED or old.next_retry_at != job.next_retry_at
        ):
            if job.next_retry_at is None:
                heapq.heappush(self.ready, (job.created_at, self.order[key], key))
            else:
                heapq.heappush(self.waiting, (job.next_retry_at, key))
                heapq.heappush(self.retries, (job.next_retry_at, key))
        if (
            job.status in TERMINAL
            and job.completed_at is not None
            and (old is None or old.status not in TERMINAL)
        ):
            heapq.heappush(self.finished, (job.completed_at, key))

    def __delitem__(self, key: str) -> None:
        old = self[key]
        super().__delitem__(key)
        self.order.pop(key, None)
        self._account(old, -1)


class _PlanTable(dict[str, PlannedRun]):
    """InMemoryStore's schedule index, keeping its rows sorted by (planned_at, key) on
    every write, so ``due`` and ``all_planned`` answer without sorting every row."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[tuple[datetime, str]] = []

    def _unlist(self, key: str) -> None:
        old = self.get(key)
        if old is not None:
            del self.order[bisect.bisect_left(self.order, (old.planned_at, key))]

    def __setitem__(self, key: str, run: PlannedRun) -> None:
        self._unlist(key)
        super().__setitem__(key, run)
        bisect.insort(self.order, (run.planned_at, key))

    def __delitem__(self, key: str) -> None:
        self._unlist(key)
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:
        self._unlist(key)
        return super().pop(key, *default)

    def between(self, start: datetime, end: datetime) -> list[PlannedRun]:
        """The rows with ``start <= planned_at < end``, by (planned_at, key)."""
        order = self.order
        lo = bisect.bisect_left(order, (start, ""))
        hi = bisect.bisect_left(order, (end, ""), lo)
        return [self[key] for _, key in order[lo:hi]]


class IndexedMemoryStore(InMemoryStore):
    """:class:`~ductile.fakes.InMemoryStore` with indexes for the queries a long
    simulation repeats (claim, next retry, poll guard, queue depth, retention, due
    schedules), so a simulated week of a busy config stays fast. Same answers: the
    simulation's traces are identical on both (``tests/sim/test_determinism.py``)."""

    def __init__(self) -> None:
        super().__init__()
        self._table = _JobTable()
        self._jobs = self._table
        self._plans = _PlanTable()
        self._planned = self._plans

    async def all_planned(self) -> list[PlannedRun]:
        return [self._plans[key] for _, key in self._plans.order]

    async def due(self, start: datetime, end: datetime) -> list[PlannedRun]:
        return self._plans.between(start, end)

    async def claim_next(self, now: datetime) -> Job | None:
        table = self._table
        while table.waiting and table.waiting[0][0] <= now:
            at, job_id = heapq.heappop(table.waiting)
            job = table.get(job_id)
            if job is not None and job.status is JobStatus.QUEUED and job.next_retry_at == at:
                heapq.heappush(table.ready, (job.created_at, table.order[job_id], job_id))
        while table.ready:
            _, _, job_id = heapq.heappop(table.ready)
            job = table.get(job_id)
            if job is None or job.status is not JobStatus.QUEUED:
                continue
            if job.next_retry_at is not None and job.next_retry_at > now:
                continue  # re-queued for later since: its retry time puts it back
            return self._claim(job, now)
        return None

    async def next_retry_at(self) -> datetime | None:
        retries = self._table.retries
        while retries:
            at, job_id = retries[0]
            job = self._table.get(job_id)
            if job is not None and job.status is JobStatus.QUEUED and job.next_retry_at == at:
                return at
            heapq.heappop(retries)
        return None

    async def queue_depth(self) -> int:
        return self._table.queued

    def _outstanding(self, plugin: str, command: str) -> int:
        return self._table.outstanding.get((plugin, command), 0)

    async def delete_finished(self, before: datetime) -> int:
        table = self._table
        doomed: list[Job] = []
        while table.finished and table.finished[0][0] < before:
            at, job_id = heapq.heappop(table.finished)
            job = table.get(job_id)
            if job is not None and job.status in TERMINAL and job.completed_at == at:
                doomed.append(job)
        for job in doomed:
            del self._jobs[job.id]
            del self._seq[job.id]
            self._transitions.pop(job.id, None)
            self._runs.pop(job.id, None)
            if job.dedupe_key is not None:
                ids = self._by_identity[(job.plugin, job.command, job.dedupe_key)]
                ids.remove(job.id)
                if not ids:
                    del self._by_identity[(job.plugin, job.command, job.dedupe_key)]
            if job.parent_job_id is not None and job.source_event_id is not None:
                self._children.pop((job.parent_job_id, job.source_event_id, job.plugin, job.command), None)
        return len(doomed)
