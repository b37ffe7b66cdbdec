"""Store: durable jobs, their history, plugin state, breakers, the schedule index.

Every method is one atomic unit: it commits wholly or not at all. Methods
that decide something call the domain's pure functions *inside* the unit,
on the rows as they are at that moment, so concurrent writers (the scheduler
runner, the dispatcher, a webhook, the CLI in another process) cannot
overwrite each other's decisions. Every store runs the same unit bodies
(:mod:`ductile.units`) over its own :class:`~ductile.ports.tx.Tx`; the values
these methods take and return are in :mod:`ductile.ports.store_values`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from ductile.domain.activity import Activity, Entry, SkipReason
from ductile.domain.breaker import Breaker
from ductile.domain.classify import RunEnd
from ductile.domain.facts import Fact
from ductile.domain.job import Actor, Job, JobStatus, Transition
from ductile.domain.lanes import UNLIMITED, Lanes
from ductile.domain.lifecycle import Alerts
from ductile.domain.schedule import PlannedRun
from ductile.domain.settle import RunRecord, SettleContext, Settlement
from ductile.ports.spawner import ProcessHandle
from ductile.ports.store_faults import (
    PermanentStoreError,
    StoreFaultError,
    TransientStoreError,
    WriteFault,
)
from ductile.ports.store_values import (
    Blocked,
    ClaimConflictError,
    Committed,
    EnqueueResult,
    FireResult,
    Guard,
    InitRecord,
    JobCursor,
    JobPage,
    JobQuery,
    NotQueuedError,
    Pause,
    Pruned,
    Rewound,
    RunningJob,
    RunView,
    StaleJobError,
)

__all__ = [
    "Blocked",
    "ClaimConflictError",
    "Committed",
    "EnqueueResult",
    "FireResult",
    "Guard",
    "InitRecord",
    "JobCursor",
    "JobPage",
    "JobQuery",
    "NotQueuedError",
    "Pause",
    "PermanentStoreError",
    "Pruned",
    "Rewound",
    "RunView",
    "RunningJob",
    "StaleJobError",
    "Store",
    "StoreFaultError",
    "TransientStoreError",
    "WriteFault",
]


class Store(Protocol):
    # ----------------------------------------------------------------- jobs
    async def enqueue(self, job: Job, *, actor: Actor, now: datetime, dedupe_ttl: timedelta) -> EnqueueResult:
        """Insert ``job`` (status queued) with its creation transition, unless it
        duplicates a job of the same (plugin, command, dedupe_key) per D1.
        Durable when it returns."""
        ...

    async def claim_next(self, now: datetime, *, lanes: Lanes = UNLIMITED) -> Job | None:
        """The oldest queued job whose ``next_retry_at`` has passed, whose plugin's lane
        has a free slot and whose dedupe identity is not running (:mod:`ductile.domain.lanes`),
        moved to running (transition by the dispatcher, claim token raised) in the same
        unit. Durable on a shared store (a claim lost there could run twice at once)."""
        ...

    async def claim(self, job_id: str, now: datetime, *, lanes: Lanes = UNLIMITED) -> Job | None:
        """Claim one specific queued job (``init`` runs at once, outside FIFO and lane
        widths); None when it is not queued."""
        ...

    async def record_process(self, job_id: str, handle: ProcessHandle, *, token: int) -> None:
        """Remember the running job's process group for crash recovery; :class:`StaleJobError`
        when the job no longer runs under the claim of ``token``."""
        ...

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
        """Settle a running job (D9) from how its run ended (``end``: the caller
        classified the spawn outcome, outside the transaction): job transitions,
        run record, state merge, breaker, routed children with dedupe: one
        commit. Raises :class:`StaleJobError` if the job is not running under the
        claim of ``token`` (the fence: a late settle of a lost claim writes nothing).
        With ``then_claim``, the same commit also claims the next job as
        :meth:`claim_next` would (at ``ctx.now``, in those lanes):
        ``Committed.next_job`` (ADR 0068)."""
        ...

    async def running(self) -> list[RunningJob]:
        """Jobs in ``running`` with their recorded process handles (a shared store: the
        handles recorded on this instance only; a process group means something on one host)."""
        ...

    async def recover(self, now: datetime, *, alerts: Alerts | None = None) -> list[Settlement]:
        """D6: settle the orphans as interrupted, in one idempotent unit, with the jobs of their
        lifecycle events (``job.recovered``, ``job.dead``) that ``alerts`` route. A store of one
        process: every running job. A shared store: the running jobs of this instance's
        earlier nodes that have a process record (the instance lock proves them dead)."""
        ...

    async def cancel_queued(
        self, plugin: str, *, reason: str, now: datetime, alerts: Alerts | None = None
    ) -> list[str]:
        """Move the plugin's queued jobs to dead (D13); returns their ids. Each is a ``job.dead``
        lifecycle event when ``alerts`` route one (so are the next three units' changes)."""
        ...

    async def delete_finished(self, before: datetime, *, limit: int | None = None) -> Pruned:
        """Retention (D19): delete terminal jobs completed before ``before``, with their
        transitions and runs, and the activity entries and facts older than it, in one unit:
        at most ``limit`` jobs and ten times as many entries and facts (None: all). The caller
        repeats while the answer is not ``done``: each step is its own short transaction (ADR 0064)."""
        ...

    async def cancel_job(
        self, job_id: str, *, reason: str, actor: Actor, now: datetime, alerts: Alerts | None = None
    ) -> Job:
        """An operator cancels one queued job: dead, ``last_error`` = ``reason``; the job as
        stored. :class:`NotQueuedError` (nothing changed) when it is not queued."""
        ...

    async def get_job(self, job_id: str) -> Job | None: ...

    async def find_jobs(self, query: JobQuery) -> JobPage:
        """Jobs matching every filter of ``query``, newest first (``created_at``, then
        insertion), one page at a time: a page continues exactly after ``query.after``,
        so paging while jobs arrive neither skips nor repeats one."""
        ...

    async def job_ids_with_prefix(self, prefix: str, *, limit: int = 2) -> list[str]:
        """Ids of stored jobs starting with ``prefix``, in id order, at most ``limit``."""
        ...

    async def transitions(self, job_id: str) -> list[Transition]: ...

    async def runs(self, job_id: str) -> list[RunRecord]: ...

    async def recent_runs(self, *, plugin: str | None = None, limit: int = 50) -> list[RunView]:
        """The most recently finished runs (of one plugin, or of all), newest first;
        runs finished at the same instant: the later recorded first."""
        ...

    async def list_jobs(
        self,
        *,
        statuses: Sequence[JobStatus] | None = None,
        plugin: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Newest first."""
        ...

    async def queue_depth(self) -> int:
        """Jobs queued (including those waiting for a retry time)."""
        ...

    async def oldest_queued_at(self) -> datetime | None:
        """The ``created_at`` of the oldest queued job, None when none is queued."""
        ...

    async def outstanding(self, plugin: str, command: str) -> int:
        """Jobs of (plugin, command) queued or running."""
        ...

    async def next_retry_at(self) -> datetime | None:
        """The earliest ``next_retry_at`` among queued jobs, if any is in the future."""
        ...

    # ----------------------------------------------------------------- plugin state
    async def get_state(self, plugin: str) -> dict[str, Any]: ...

    # ----------------------------------------------------------------- breakers
    async def get_breaker(self, plugin: str, command: str) -> Breaker | None: ...

    async def breakers(self) -> list[Breaker]: ...

    async def reset_breakers(
        self,
        plugin: str,
        *,
        now: datetime | None = None,
        actor: str = "operator",
        alerts: Alerts | None = None,
    ) -> list[Breaker]:
        """Close every breaker of ``plugin``; returns those that were open. With ``now``, each
        open one closed is logged (``breaker.closed``, by ``actor``)."""
        ...

    # ----------------------------------------------------------------- schedule index
    async def planned(self, key: str) -> PlannedRun | None: ...

    async def all_planned(self) -> list[PlannedRun]: ...

    async def due(self, start: datetime, end: datetime) -> list[PlannedRun]:
        """Planned runs with ``start <= planned_at < end``, earliest first."""
        ...

    async def put_planned(self, run: PlannedRun) -> None: ...

    async def delete_planned(self, key: str) -> None: ...

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
        """One scheduled firing, atomically: if ``due`` is still the stored run
        of its key, check the guard (poll guard, breaker admit), enqueue
        ``jobs`` when allowed, and replace the planned run by ``next_run``;
        logged as ``schedule.fired`` or ``schedule.skipped`` (``skipped``: the
        caller's reason for giving no jobs)."""
        ...

    async def rewind(self, *, step: timedelta, plans: Sequence[tuple[PlannedRun, PlannedRun]]) -> Rewound:
        """The wall clock stepped back by ``step`` (ADR 0045), atomically: each (stored,
        re-planned) pair in ``plans`` replaces the stored run if it is still stored as it
        was; every retry time and open breaker moves back by ``step``."""
        ...

    # ----------------------------------------------------------------- pauses, facts, counters
    async def pause(self, plugin: str, schedule_id: str | None, *, now: datetime) -> bool:
        """Pause the plugin's schedules (``schedule_id`` None) or one of them: their due runs
        enqueue nothing until :meth:`resume` (queued jobs still run). False when already paused."""
        ...

    async def resume(self, plugin: str, schedule_id: str | None) -> bool:
        """Lift that pause; False when there was none."""
        ...

    async def pauses(self) -> list[Pause]:
        """Every pause, by plugin then schedule (the plugin's own first)."""
        ...

    async def facts(self, plugin: str, *, fact_type: str | None = None, limit: int = 100) -> list[Fact]:
        """The plugin's facts (of one type, or all), newest first."""
        ...

    async def counts(self) -> dict[str, int]:
        """The lifetime counters (``route_depth_drops``...), by name."""
        ...

    # ----------------------------------------------------------------- init
    async def get_init(self, plugin: str) -> InitRecord | None: ...

    async def put_init(self, record: InitRecord) -> None: ...

    # ----------------------------------------------------------------- health
    def write_fault(self) -> WriteFault | None:
        """Why the store refuses writes now, or None when it accepts them (no I/O: the
        store's own record of its last writes, see :class:`~ductile.ports.store_faults.WriteFault`).
        Writes fail with :class:`~ductile.ports.store_faults.StoreFaultError` subclasses."""
        ...

    # ----------------------------------------------------------------- the activity log
    async def note(self, entry: Activity, *, alerts: Alerts | None = None) -> None:
        """Append an entry the app decided on (config reloaded or rejected, plugin refused or
        unhealthy: a lifecycle event too when ``alerts`` route one)."""
        ...

    async def activity(self, after: int, *, limit: int = 500) -> list[Entry]:
        """Entries with ``id > after``, oldest first, at most ``limit``."""
        ...

    async def last_activity_id(self) -> int:
        """The id of the newest entry ever appended (0 when none); pruning does not lower it."""
        ...

    async def close(self) -> None: ...
