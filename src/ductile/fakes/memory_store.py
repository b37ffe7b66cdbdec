"""InMemoryStore: the Store port in dictionaries, with the same atomicity.

Every method decides first (domain functions, which may raise) and mutates
last, so a failing unit changes nothing, like a rolled-back transaction.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs

from ductile.domain import breaker as br
from ductile.domain.classify import RunEnd
from ductile.domain.dedupe import find_duplicate
from ductile.domain.job import TERMINAL, Actor, Job, JobEvent, JobStatus, Transition, apply, creation
from ductile.domain.recovery import recover as recover_job
from ductile.domain.schedule import PlannedRun, poll_guard_allows
from ductile.domain.settle import RunRecord, SettleContext, Settlement, settle
from ductile.ports.spawner import ProcessHandle
from ductile.ports.store import (
    Committed,
    EnqueueResult,
    FireResult,
    Guard,
    InitRecord,
    RunningJob,
    RunView,
    StaleJobError,
)

#: Types deepcopy returns as they are: a state holding only these at the top copies shallowly.
_ATOMIC = frozenset({str, int, float, bool, type(None)})


def _copy_state(state: dict[str, Any]) -> dict[str, Any]:
    """``copy.deepcopy(state)``, without its machinery for the usual flat state."""
    if type(state) is not dict or any(type(value) not in _ATOMIC for value in state.values()):
        return copy.deepcopy(state)
    return dict(state)


class InMemoryStore:
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._seq: dict[str, int] = {}
        self._counter = itertools.count()
        self._transitions: dict[str, list[Transition]] = {}
        self._runs: dict[str, list[RunRecord]] = {}
        #: Recording order of each run, (job id, index) -> n: the tie-breaker of recent_runs.
        self._run_seq: dict[tuple[str, int], int] = {}
        self._by_identity: dict[tuple[str, str, str], list[str]] = {}
        self._children: dict[tuple[str, str, str, str], str] = {}
        self._processes: dict[str, ProcessHandle] = {}
        self._states: dict[str, dict[str, Any]] = {}
        self._breakers: dict[tuple[str, str], br.Breaker] = {}
        self._planned: dict[str, PlannedRun] = {}
        self._inits: dict[str, InitRecord] = {}
        self.closed = False

    # ------------------------------------------------------------- helpers
    def _duplicate_of(self, job: Job, now: datetime, ttl: timedelta) -> Job | None:
        if job.dedupe_key is None:
            return None
        ids = self._by_identity.get((job.plugin, job.command, job.dedupe_key), [])
        return find_duplicate((self._jobs[i] for i in ids), now=now, ttl=ttl)

    def _insert(self, job: Job, record: Transition) -> None:
        self._jobs[job.id] = job
        self._seq[job.id] = next(self._counter)
        self._transitions[job.id] = [record]
        if job.dedupe_key is not None:
            self._by_identity.setdefault((job.plugin, job.command, job.dedupe_key), []).append(job.id)
        if job.parent_job_id is not None and job.source_event_id is not None:
            self._children[(job.parent_job_id, job.source_event_id, job.plugin, job.command)] = job.id

    def _plan_inserts(
        self, jobs: Sequence[Job], actor: Actor, now: datetime, ttl: timedelta
    ) -> tuple[list[EnqueueResult], list[tuple[Job, Transition]]]:
        """Decide each insert (dedupe, child idempotency, id clash) without mutating."""
        results: list[EnqueueResult] = []
        inserts: list[tuple[Job, Transition]] = []
        pending: dict[str, Job] = {}
        for job in jobs:
            if job.status is not JobStatus.QUEUED:
                raise ValueError(f"job {job.id}: only queued jobs can be enqueued")
            if job.parent_job_id is not None and job.source_event_id is not None:
                key = (job.parent_job_id, job.source_event_id, job.plugin, job.command)
                existing_child = self._children.get(key)
                if existing_child is not None:
                    results.append(EnqueueResult(existing_child, False))
                    continue
            if job.id in self._jobs or job.id in pending:
                results.append(EnqueueResult(job.id, False))
                continue
            dup = self._duplicate_of(job, now, ttl)
            if dup is None and job.dedupe_key is not None:
                dup = find_duplicate(
                    (
                        p
                        for p in pending.values()
                        if (p.plugin, p.command, p.dedupe_key) == (job.plugin, job.command, job.dedupe_key)
                    ),
                    now=now,
                    ttl=ttl,
                )
            if dup is not None:
                results.append(EnqueueResult(dup.id, False))
                continue
            pending[job.id] = job
            inserts.append((job, creation(job, actor=actor)))
            results.append(EnqueueResult(job.id, True))
        return results, inserts

    # ------------------------------------------------------------- jobs
    async def enqueue(self, job: Job, *, actor: Actor, now: datetime, dedupe_ttl: timedelta) -> EnqueueResult:
        results, inserts = self._plan_inserts([job], actor, now, dedupe_ttl)
        for j, rec in inserts:
            self._insert(j, rec)
        return results[0]

    async def claim_next(self, now: datetime) -> Job | None:
        best: Job | None = None
        for job in self._jobs.values():
            if job.status is not JobStatus.QUEUED:
                continue
            if job.next_retry_at is not None and job.next_retry_at > now:
                continue
            if best is None or (job.created_at, self._seq[job.id]) < (best.created_at, self._seq[best.id]):
                best = job
        if best is None:
            return None
        return self._claim(best, now)

    async def claim(self, job_id: str, now: datetime) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None or job.status is not JobStatus.QUEUED:
            return None
        return self._claim(job, now)

    def _claim(self, job: Job, now: datetime) -> Job:
        claimed, record = apply(job, JobEvent.CLAIM, at=now, actor=Actor.DISPATCHER, reason="claimed")
        self._jobs[claimed.id] = claimed
        self._transitions[claimed.id].append(record)
        return claimed

    async def record_process(self, job_id: str, handle: ProcessHandle) -> None:
        job = self._jobs.get(job_id)
        if job is None or job.status is not JobStatus.RUNNING:
            raise StaleJobError(f"job {job_id} is not running")
        self._processes[job_id] = handle

    def _commit_settlement(self, s: Settlement, *, now: datetime, ttl: timedelta, actor: Actor) -> Committed:
        results, inserts = self._plan_inserts(s.children, actor, now, ttl)
        self._jobs[s.job.id] = s.job
        self._transitions[s.job.id].extend(s.transitions)
        runs = self._runs.setdefault(s.job.id, [])
        self._run_seq[(s.job.id, len(runs))] = next(self._counter)
        runs.append(s.run)
        self._processes.pop(s.job.id, None)
        if s.state is not None:
            self._states[s.job.plugin] = _copy_state(s.state)
        if s.breaker is not None:
            self._breakers[(s.breaker.plugin, s.breaker.command)] = s.breaker
        for j, rec in inserts:
            self._insert(j, rec)
        return Committed(settlement=s, children=tuple(results))

    async def settle(
        self, job_id: str, end: RunEnd, *, ctx: SettleContext, dedupe_ttl: timedelta
    ) -> Committed:
        job = self._jobs.get(job_id)
        if job is None or job.status is not JobStatus.RUNNING:
            raise StaleJobError(f"job {job_id} is not running")
        s = settle(
            job,
            end,
            ctx=ctx,
            state=self._states.get(job.plugin, {}),
            breaker=self._breakers.get((job.plugin, job.command)),
        )
        return self._commit_settlement(s, now=ctx.now, ttl=dedupe_ttl, actor=Actor.ROUTE)

    async def running(self) -> list[RunningJob]:
        return [
            RunningJob(job=j, process=self._processes.get(j.id))
            for j in self._ordered()
            if j.status is JobStatus.RUNNING
        ]

    async def recover(self, now: datetime) -> list[Settlement]:
        settlements = [recover_job(j, now=now) for j in self._ordered() if j.status is JobStatus.RUNNING]
        for s in settlements:
            self._commit_settlement(s, now=now, ttl=timedelta(0), actor=Actor.RECOVERY)
        return settlements

    async def cancel_queued(self, plugin: str, *, reason: str, now: datetime) -> list[str]:
        moves = [
            apply(j, JobEvent.CANCEL, at=now, actor=Actor.RELOAD, reason=reason, last_error=reason)
            for j in self._ordered()
            if j.plugin == plugin and j.status is JobStatus.QUEUED
        ]
        for job, record in moves:
            self._jobs[job.id] = job
            self._transitions[job.id].append(record)
        return [job.id for job, _ in moves]

    async def delete_finished(self, before: datetime) -> int:
        doomed = [
            j
            for j in self._jobs.values()
            if j.status in TERMINAL and j.completed_at is not None and j.completed_at < before
        ]
        for j in doomed:
            del self._jobs[j.id]
            del self._seq[j.id]
            self._transitions.pop(j.id, None)
            for n in range(len(self._runs.pop(j.id, []))):
                del self._run_seq[(j.id, n)]
            if j.dedupe_key is not None:
                ids = self._by_identity[(j.plugin, j.command, j.dedupe_key)]
                ids.remove(j.id)
                if not ids:
                    del self._by_identity[(j.plugin, j.command, j.dedupe_key)]
            if j.parent_job_id is not None and j.source_event_id is not None:
                self._children.pop((j.parent_job_id, j.source_event_id, j.plugin, j.command), None)
        return len(doomed)

    def _ordered(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda j: (j.created_at, self._seq[j.id]))

    async def get_job(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    async def transitions(self, job_id: str) -> list[Transition]:
        return list(self._transitions.get(job_id, []))

    async def runs(self, job_id: str) -> list[RunRecord]:
        return list(self._runs.get(job_id, []))

    async def recent_runs(self, *, plugin: str | None = None, limit: int = 50) -> list[RunView]:
        views = [
            (run.finished_at, self._run_seq[(job_id, n)], RunView(job=self._jobs[job_id], run=run))
            for job_id, runs in self._runs.items()
            for n, run in enumerate(runs)
            if plugin is None or self._jobs[job_id].plugin == plugin
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
        wanted = set(statuses) if statuses is not None else None
        jobs = [
            j
            for j in reversed(self._ordered())
            if (wanted is None or j.status in wanted) and (plugin is None or j.plugin == plugin)
        ]
        return jobs[:limit]

    async def queue_depth(self) -> int:
        return sum(1 for j in self._jobs.values() if j.status is JobStatus.QUEUED)

    async def outstanding(self, plugin: str, command: str) -> int:
        return self._outstanding(plugin, command)

    def _outstanding(self, plugin: str, command: str) -> int:
        return sum(
            1
            for j in self._jobs.values()
            if j.plugin == plugin
            and j.command == command
            and j.status in (JobStatus.QUEUED, JobStatus.RUNNING)
        )

    async def next_retry_at(self) -> datetime | None:
        times = [
            j.next_retry_at
            for j in self._jobs.values()
            if j.status is JobStatus.QUEUED and j.next_retry_at is not None
        ]
        return min(times) if times else None

    # ------------------------------------------------------------- state
    async def get_state(self, plugin: str) -> dict[str, Any]:
        # Deep: a caller editing a nested value must not edit what is stored.
        return _copy_state(self._states.get(plugin, {}))

    # ------------------------------------------------------------- breakers
    async def get_breaker(self, plugin: str, command: str) -> br.Breaker | None:
        return self._breakers.get((plugin, command))

    async def breakers(self) -> list[br.Breaker]:
        return [self._breakers[k] for k in sorted(self._breakers)]

    async def reset_breakers(self, plugin: str) -> list[br.Breaker]:
        opened = [b for (p, _), b in sorted(self._breakers.items()) if p == plugin and b.is_open]
        for (p, c), b in list(self._breakers.items()):
            if p == plugin:
                self._breakers[(p, c)] = br.reset(b)
        return opened

    # ------------------------------------------------------------- schedule index
    async def planned(self, key: str) -> PlannedRun | None:
        return self._planned.get(key)

    async def all_planned(self) -> list[PlannedRun]:
        return sorted(self._planned.values(), key=lambda r: (r.planned_at, r.key))

    async def due(self, start: datetime, end: datetime) -> list[PlannedRun]:
        return [r for r in await self.all_planned() if start <= r.planned_at < end]

    async def put_planned(self, run: PlannedRun) -> None:
        self._planned[run.key] = run

    async def delete_planned(self, key: str) -> None:
        self._planned.pop(key, None)

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
    ) -> FireResult:
        if self._planned.get(due.key) != due:
            return FireResult(fired=False)
        if next_run.key != due.key:
            raise ValueError("next_run must belong to the same schedule key")
        blocked: str | None = None
        new_breaker: br.Breaker | None = None
        if guard is not None and jobs:
            if guard.max_outstanding is not None and not poll_guard_allows(
                self._outstanding(guard.plugin, guard.command), guard.max_outstanding
            ):
                blocked = "poll_guard"
            elif guard.breaker is not None:
                current = self._breakers.get((guard.plugin, guard.command)) or br.closed(
                    guard.plugin, guard.command
                )
                allowed, updated = br.admit(current, now=now, policy=guard.breaker)
                if not allowed:
                    blocked = "breaker_open"
                elif updated != current:
                    new_breaker = updated
        results: list[EnqueueResult] = []
        inserts: list[tuple[Job, Transition]] = []
        if blocked is None and jobs:
            results, inserts = self._plan_inserts(jobs, actor, now, dedupe_ttl)
        self._planned[due.key] = next_run
        if new_breaker is not None:
            self._breakers[(new_breaker.plugin, new_breaker.command)] = new_breaker
        for j, rec in inserts:
            self._insert(j, rec)
        return FireResult(fired=True, jobs=tuple(results), blocked=blocked)

    # ------------------------------------------------------------- init
    async def get_init(self, plugin: str) -> InitRecord | None:
        return self._inits.get(plugin)

    async def put_init(self, record: InitRecord) -> None:
        self._inits[record.plugin] = record

    async def close(self) -> None:
        self.closed = True

    # ------------------------------------------------------------- for tests and the simulation
    def snapshot(self) -> dict[str, Any]:
        """A deep, comparable picture of everything stored."""
        return {
            "jobs": {k: attrs.asdict(v) for k, v in self._jobs.items()},
            "transitions": {k: [attrs.asdict(t) for t in v] for k, v in self._transitions.items()},
            "states": {k: dict(v) for k, v in self._states.items()},
            "breakers": {f"{p}/{c}": attrs.asdict(b) for (p, c), b in self._breakers.items()},
            "planned": {k: attrs.asdict(v) for k, v in self._planned.items()},
        }
