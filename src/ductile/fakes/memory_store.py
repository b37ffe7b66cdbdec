"""InMemoryStore: the Store port in dictionaries, running the same units as every store.

Each write method runs one of the shared units (:mod:`ductile.units`) over
the store's :class:`~ductile.fakes.memory_tx.MemoryTx`, inside
``tx.atomic()``: a unit that raises changes nothing, like a rolled-back
transaction. Nothing here suspends, so the simulation stays deterministic on
one thread. Reads answer from the tables (the hot ones from the Tx's index).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs

from ductile import units
from ductile.domain import breaker as br
from ductile.domain.activity import Activity, Entry, SkipReason
from ductile.domain.classify import RunEnd
from ductile.domain.facts import Fact
from ductile.domain.job import Actor, Job, JobStatus, Transition
from ductile.domain.lanes import UNLIMITED, Lanes
from ductile.domain.lifecycle import Alerts
from ductile.domain.schedule import PlannedRun
from ductile.domain.settle import RunRecord, SettleContext, Settlement
from ductile.fakes.memory_tx import MemoryTx, copy_state
from ductile.ports.spawner import ProcessHandle
from ductile.ports.store_faults import WriteFault
from ductile.ports.store_values import (
    Committed,
    EnqueueResult,
    FireResult,
    Guard,
    InitRecord,
    JobCursor,
    JobPage,
    JobQuery,
    Pause,
    Pruned,
    Rewound,
    RunningJob,
    RunView,
    text_matches,
)


class InMemoryStore:
    """The Store port over a :class:`MemoryTx` (``tx``: a test may plant a bug in one)."""

    def __init__(self, tx: MemoryTx | None = None) -> None:
        self.tx = tx if tx is not None else MemoryTx()
        self.closed = False

    # ------------------------------------------------------------- jobs: the shared units
    async def enqueue(self, job: Job, *, actor: Actor, now: datetime, dedupe_ttl: timedelta) -> EnqueueResult:
        with self.tx.atomic() as tx:
            return units.enqueue(tx, job, actor=actor, now=now, dedupe_ttl=dedupe_ttl)

    async def claim_next(self, now: datetime, *, lanes: Lanes = UNLIMITED) -> Job | None:
        with self.tx.atomic() as tx:
            return units.claim_next(tx, now, lanes=lanes)

    async def claim(self, job_id: str, now: datetime, *, lanes: Lanes = UNLIMITED) -> Job | None:
        with self.tx.atomic() as tx:
            return units.claim(tx, job_id, now, lanes=lanes)

    async def record_process(self, job_id: str, handle: ProcessHandle, *, token: int) -> None:
        with self.tx.atomic() as tx:
            units.record_process(tx, job_id, handle, token=token)

    async def settle(
        self,
        job_id: str,
        end: RunEnd,
        *,
        ctx: SettleContext,
        dedupe_ttl: timedelta,
        token: int,
        then_claim: Lanes | None = None,
    ) -> Committed:
        with self.tx.atomic() as tx:
            return units.settle(
                tx, job_id, end, ctx=ctx, dedupe_ttl=dedupe_ttl, token=token, then_claim=then_claim
            )

    async def recover(self, now: datetime, *, alerts: Alerts | None = None) -> list[Settlement]:
        with self.tx.atomic() as tx:
            return units.recover(tx, now, alerts=alerts)

    async def cancel_queued(
        self, plugin: str, *, reason: str, now: datetime, alerts: Alerts | None = None
    ) -> list[str]:
        with self.tx.atomic() as tx:
            return units.cancel_queued(tx, plugin, reason=reason, now=now, alerts=alerts)

    async def delete_finished(self, before: datetime, *, limit: int | None = None) -> Pruned:
        with self.tx.atomic() as tx:
            return units.delete_finished(tx, before, limit=limit)

    async def reset_breakers(
        self,
        plugin: str,
        *,
        now: datetime | None = None,
        actor: str = "operator",
        alerts: Alerts | None = None,
    ) -> list[br.Breaker]:
        with self.tx.atomic() as tx:
            return units.reset_breakers(tx, plugin, now=now, actor=actor, alerts=alerts)

    async def cancel_job(
        self, job_id: str, *, reason: str, actor: Actor, now: datetime, alerts: Alerts | None = None
    ) -> Job:
        with self.tx.atomic() as tx:
            return units.cancel_job(tx, job_id, reason=reason, actor=actor, now=now, alerts=alerts)

    async def note(self, entry: Activity, *, alerts: Alerts | None = None) -> None:
        with self.tx.atomic() as tx:
            units.note(tx, entry, alerts=alerts)

    async def fire(
        self,
        *,
        due: PlannedRun,
        next_run: PlannedRun,
        jobs: Sequence[Job],
        guard: Guard | None,
        actor: Actor,
        now: datetime,
        dedupe_ttl: timedelta,
        skipped: SkipReason | None = None,
        alerts: Alerts | None = None,
    ) -> FireResult:
        with self.tx.atomic() as tx:
            return units.fire(
                tx,
                due=due,
                next_run=next_run,
                jobs=jobs,
                guard=guard,
                actor=actor,
                now=now,
                dedupe_ttl=dedupe_ttl,
                skipped=skipped,
                alerts=alerts,
            )

    async def rewind(self, *, step: timedelta, plans: Sequence[tuple[PlannedRun, PlannedRun]]) -> Rewound:
        with self.tx.atomic() as tx:
            return units.rewind(tx, step=step, plans=plans)

    async def pause(self, plugin: str, schedule_id: str | None, *, now: datetime) -> bool:
        with self.tx.atomic() as tx:
            return units.pause(tx, plugin, schedule_id, now=now)

    async def resume(self, plugin: str, schedule_id: str | None) -> bool:
        with self.tx.atomic() as tx:
            return units.resume(tx, plugin, schedule_id)

    # ------------------------------------------------------------- plain writes
    async def put_planned(self, run: PlannedRun) -> None:
        with self.tx.atomic() as tx:
            tx.put_planned(run)

    async def delete_planned(self, key: str) -> None:
        with self.tx.atomic() as tx:
            tx.delete_planned(key)

    async def put_init(self, record: InitRecord) -> None:
        with self.tx.atomic() as tx:
            tx.put_init(record)

    # ------------------------------------------------------------- reads
    async def get_job(self, job_id: str) -> Job | None:
        return self.tx.jobs.get(job_id)

    async def running(self) -> list[RunningJob]:
        processes = self.tx.processes
        return [RunningJob(job=j, process=processes.get(j.id)) for j in self.tx.running_jobs()]

    async def transitions(self, job_id: str) -> list[Transition]:
        return list(self.tx.transitions.get(job_id, []))

    async def runs(self, job_id: str) -> list[RunRecord]:
        return [run for _, run in self.tx.runs.get(job_id, [])]

    async def recent_runs(self, *, plugin: str | None = None, limit: int = 50) -> list[RunView]:
        jobs = self.tx.jobs
        views = [
            (run.finished_at, n, RunView(job=jobs[job_id], run=run))
            for job_id, runs in self.tx.runs.items()
            for n, run in runs
            if plugin is None or jobs[job_id].plugin == plugin
        ]
        views.sort(key=lambda v: (v[0], v[1]), reverse=True)
        return [v[2] for v in views[:limit]]

    async def list_jobs(
        self,
        *,
        statuses: Sequence[JobStatus] | None = None,
        plugin: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Newest first."""
        wanted = set(statuses) if statuses is not None else None
        seq = self.tx.seq
        jobs = sorted(
            (
                j
                for j in self.tx.jobs.values()
                if (wanted is None or j.status in wanted) and (plugin is None or j.plugin == plugin)
            ),
            key=lambda j: (j.created_at, seq[j.id]),
            reverse=True,
        )
        return jobs[:limit]

    async def find_jobs(self, query: JobQuery) -> JobPage:
        seq = self.tx.seq

        def position(job: Job) -> tuple[datetime, int]:
            return (job.created_at, seq[job.id])

        after = None if query.after is None else (query.after.created_at, query.after.seq)
        found = sorted(
            (
                j
                for j in self.tx.jobs.values()
                if self._wanted(j, query) and (after is None or position(j) < after)
            ),
            key=position,
            reverse=True,
        )
        page = tuple(found[: query.limit])
        more = len(found) > query.limit
        last = page[-1] if page else None
        cursor = JobCursor(created_at=last.created_at, seq=seq[last.id]) if more and last else None
        return JobPage(jobs=page, next=cursor)

    def _wanted(self, job: Job, q: JobQuery) -> bool:
        if q.statuses is not None and job.status not in q.statuses:
            return False
        for field, wanted in (("plugin", q.plugin), ("command", q.command), ("parent_job_id", q.parent)):
            if wanted is not None and getattr(job, field) != wanted:
                return False
        if q.submitted_by is not None and job.submitted_by.value != q.submitted_by:
            return False
        if (q.since is not None and job.created_at < q.since) or (
            q.until is not None and job.created_at >= q.until
        ):
            return False
        return q.text is None or self._has_text(job, q.text)

    def _has_text(self, job: Job, text: str) -> bool:
        if text_matches(job.last_error, text):
            return True
        for _, run in self.tx.runs.get(job.id, []):
            texts = (
                run.error,
                run.stderr_tail.decode("utf-8", "replace"),
                run.stdout_head.decode("utf-8", "replace"),
            )
            if any(text_matches(t, text) for t in texts):
                return True
        return False

    async def job_ids_with_prefix(self, prefix: str, *, limit: int = 2) -> list[str]:
        return sorted(i for i in self.tx.jobs if i.startswith(prefix))[:limit]

    async def activity(self, after: int, *, limit: int = 500) -> list[Entry]:
        log = self.tx.activity
        start = bisect.bisect_right(log, after, key=lambda e: e.id)
        return log[start : start + limit]

    async def last_activity_id(self) -> int:
        return self.tx.activity_seq

    async def queue_depth(self) -> int:
        return self.tx.index.queue_depth()

    async def oldest_queued_at(self) -> datetime | None:
        return min(
            (j.created_at for j in self.tx.jobs.values() if j.status is JobStatus.QUEUED), default=None
        )

    async def outstanding(self, plugin: str, command: str) -> int:
        return self.tx.index.outstanding(plugin, command)

    async def next_retry_at(self) -> datetime | None:
        return self.tx.index.next_retry_at()

    async def get_state(self, plugin: str) -> dict[str, Any]:
        # Deep: a caller editing a nested value must not edit what is stored.
        return copy_state(self.tx.states.get(plugin, {}))

    async def get_breaker(self, plugin: str, command: str) -> br.Breaker | None:
        return self.tx.breakers.get((plugin, command))

    async def breakers(self) -> list[br.Breaker]:
        breakers = self.tx.breakers
        return [breakers[k] for k in sorted(breakers)]

    async def planned(self, key: str) -> PlannedRun | None:
        return self.tx.planned.get(key)

    async def all_planned(self) -> list[PlannedRun]:
        return self.tx.index.all_planned()

    async def due(self, start: datetime, end: datetime) -> list[PlannedRun]:
        return self.tx.index.due(start, end)

    async def pauses(self) -> list[Pause]:
        return sorted(self.tx.pauses.values(), key=lambda p: (p.plugin, p.schedule_id or ""))

    async def facts(self, plugin: str, *, fact_type: str | None = None, limit: int = 100) -> list[Fact]:
        found = [
            f
            for f in reversed(self.tx.facts)
            if f.plugin == plugin and (fact_type is None or f.fact_type == fact_type)
        ]
        return found[:limit] if limit > 0 else []

    async def counts(self) -> dict[str, int]:
        return dict(sorted(self.tx.counters.items()))

    async def get_init(self, plugin: str) -> InitRecord | None:
        return self.tx.inits.get(plugin)

    def write_fault(self) -> WriteFault | None:
        """Memory never refuses a write."""
        return None

    async def close(self) -> None:
        self.closed = True

    # ------------------------------------------------------------- for tests and the simulation
    def snapshot(self) -> dict[str, Any]:
        """A deep, comparable picture of everything stored."""
        tx = self.tx
        return {
            "jobs": {k: attrs.asdict(v) for k, v in tx.jobs.items()},
            "transitions": {k: [attrs.asdict(t) for t in v] for k, v in tx.transitions.items()},
            "states": {k: dict(v) for k, v in tx.states.items()},
            "breakers": {f"{p}/{c}": attrs.asdict(b) for (p, c), b in tx.breakers.items()},
            "planned": {k: attrs.asdict(v) for k, v in tx.planned.items()},
            "facts": [attrs.asdict(f) for f in tx.facts],
            "pauses": {f"{p}/{s or ''}": attrs.asdict(v) for (p, s), v in tx.pauses.items()},
            "counters": dict(tx.counters),
            "cancels": dict(tx.cancels),
        }
