"""The hot queries of :class:`~ductile.fakes.memory_tx.MemoryTx` (the oldest runnable job,
the next retry time, outstanding and queued counts, expired finished jobs, due plans): the
:class:`Index` protocol every write keeps up to date, and :class:`ScanIndex`, which answers
by scanning the tables (the plain fake; the indexed fake has heaps instead)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from ductile.domain.job import TERMINAL, Job, JobStatus
from ductile.domain.lanes import Identity, identity
from ductile.domain.schedule import PlannedRun

if TYPE_CHECKING:
    from ductile.fakes.memory_tx import MemoryTx


class Index(Protocol):
    """Answers the hot queries over a :class:`MemoryTx`'s tables; told of every write."""

    def job_written(self, old: Job | None, new: Job | None) -> None:
        """A job row changed (``old`` None: inserted; ``new`` None: deleted)."""
        ...

    def plan_written(self, old: PlannedRun | None, new: PlannedRun | None) -> None: ...

    def oldest_runnable(
        self, now: datetime, skip_plugins: frozenset[str], skip_identities: frozenset[Identity]
    ) -> Job | None: ...

    def next_retry_at(self) -> datetime | None: ...

    def outstanding(self, plugin: str, command: str) -> int: ...

    def outstanding_of_schedule(self, plugin: str, schedule_id: str) -> int: ...

    def queue_depth(self) -> int: ...

    def finished_before(self, before: datetime, limit: int | None = None) -> list[Job]:
        """Terminal jobs completed before ``before``; with a ``limit``, at most that many,
        the first completed first."""
        ...

    def all_planned(self) -> list[PlannedRun]:
        """Every planned run, by (planned_at, key)."""
        ...

    def due(self, start: datetime, end: datetime) -> list[PlannedRun]: ...


class ScanIndex:
    """The hot queries answered by scanning the tables: nothing to keep up to date."""

    def __init__(self, tx: MemoryTx) -> None:
        self._tx = tx

    def job_written(self, old: Job | None, new: Job | None) -> None:
        pass

    def plan_written(self, old: PlannedRun | None, new: PlannedRun | None) -> None:
        pass

    def oldest_runnable(
        self, now: datetime, skip_plugins: frozenset[str], skip_identities: frozenset[Identity]
    ) -> Job | None:
        seq = self._tx.seq
        best: Job | None = None
        for job in self._tx.jobs.values():
            if job.status is not JobStatus.QUEUED:
                continue
            if job.next_retry_at is not None and job.next_retry_at > now:
                continue
            if skipped(job, skip_plugins, skip_identities):
                continue
            if best is None or (job.created_at, seq[job.id]) < (best.created_at, seq[best.id]):
                best = job
        return best

    def next_retry_at(self) -> datetime | None:
        times = [
            j.next_retry_at
            for j in self._tx.jobs.values()
            if j.status is JobStatus.QUEUED and j.next_retry_at is not None
        ]
        return min(times) if times else None

    def outstanding(self, plugin: str, command: str) -> int:
        return sum(
            1
            for j in self._tx.jobs.values()
            if j.plugin == plugin
            and j.command == command
            and j.status in (JobStatus.QUEUED, JobStatus.RUNNING)
        )

    def outstanding_of_schedule(self, plugin: str, schedule_id: str) -> int:
        return len(self._tx.schedule_jobs(plugin, schedule_id))

    def queue_depth(self) -> int:
        return sum(1 for j in self._tx.jobs.values() if j.status is JobStatus.QUEUED)

    def finished_before(self, before: datetime, limit: int | None = None) -> list[Job]:
        seq = self._tx.seq
        found = [
            j
            for j in self._tx.jobs.values()
            if j.status in TERMINAL and j.completed_at is not None and j.completed_at < before
        ]
        if limit is None:
            return found
        return sorted(found, key=lambda j: (j.completed_at, seq[j.id]))[:limit]

    def all_planned(self) -> list[PlannedRun]:
        return sorted(self._tx.planned.values(), key=lambda r: (r.planned_at, r.key))

    def due(self, start: datetime, end: datetime) -> list[PlannedRun]:
        return [r for r in self.all_planned() if start <= r.planned_at < end]


def skipped(job: Job, skip_plugins: frozenset[str], skip_identities: frozenset[Identity]) -> bool:
    """Whether a claim passes ``job`` by: its lane is full, or its dedupe identity runs."""
    if job.plugin in skip_plugins:
        return True
    return bool(skip_identities) and identity(job) in skip_identities
