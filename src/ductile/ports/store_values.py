"""The values the Store port's units take and return (and its one error).

Kept apart from the Protocol (:mod:`ductile.ports.store`) so each reads in one
sitting; the shared units (:mod:`ductile.units`) build these values, and every
store returns them as they are.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from ductile.domain.breaker import Breaker, BreakerPolicy, subject
from ductile.domain.job import Job, JobStatus, Transition
from ductile.domain.schedule import PlannedRun
from ductile.domain.settle import RunRecord, Settlement
from ductile.ports.spawner import ProcessHandle


class StaleJobError(Exception):
    """The job was not in the state the caller expected (compare-and-set failed), or it runs
    under another claim than the caller's (the fence: that claim was lost)."""


class ClaimConflictError(Exception):
    """A claim broke a store's constraint (one running job per (plugin, slot), or per dedupe
    identity): another claimer took the slot meanwhile. Nothing was written; a store with
    concurrent claimers runs the claim again."""


class NotQueuedError(StaleJobError):
    """An operator asked to cancel a job that is not queued (``status``: what it is; None: no such job)."""

    def __init__(self, job_id: str, status: JobStatus | None) -> None:
        what = "no such job" if status is None else f"it is {status.value}"
        super().__init__(f"job {job_id} cannot be cancelled: {what}; only a queued job can be")
        self.job_id = job_id
        self.status = status


@attrs.frozen
class EnqueueResult:
    #: The new job's id, or the id of the job it duplicates.
    job_id: str
    created: bool


@attrs.frozen(kw_only=True)
class Committed:
    """A settlement as committed, with what became of its children."""

    settlement: Settlement
    #: One per ``settlement.children``, in order.
    children: tuple[EnqueueResult, ...] = ()
    #: The jobs of the lifecycle events the settlement made (``job.dead``...), routed ``from: ductile``.
    alerts: tuple[EnqueueResult, ...] = ()
    #: The job claimed in the same unit, when the settle was asked to (``then_claim``); None otherwise.
    next_job: Job | None = None

    def __attrs_post_init__(self) -> None:
        if len(self.children) != len(self.settlement.children):
            raise ValueError(
                f"job {self.settlement.job.id}: {len(self.settlement.children)} children "
                f"but {len(self.children)} enqueue results"
            )


@attrs.frozen(kw_only=True)
class Guard:
    """Conditions a scheduled enqueue must pass inside the fire unit."""

    plugin: str
    command: str
    #: D21: refuse when this many jobs of (plugin, command) are queued or running.
    max_outstanding: int | None = None
    #: D3: consult (and advance) the pair's breaker.
    breaker: BreakerPolicy | None = None
    #: The firing schedule: when given, ``max_outstanding`` counts the jobs of this schedule
    #: (of any command) and the breaker is the schedule's (:func:`~ductile.domain.breaker.subject`).
    schedule_id: str | None = None
    #: ``if_running: cancel``: the schedule's outstanding jobs are cancelled with this reason
    #: (queued ones moved to dead, running ones asked to stop) before the new one is enqueued.
    cancel_reason: str | None = None

    @property
    def breaker_command(self) -> str:
        """The ``command`` of the breaker this guard consults."""
        return subject(self.command, self.schedule_id)


class Blocked(enum.StrEnum):
    """Why a guard refused a scheduled enqueue (the values are the logged words)."""

    BREAKER_OPEN = "breaker_open"
    POLL_GUARD = "poll_guard"
    #: The plugin or this schedule is paused (``ductile pause``).
    PAUSED = "paused"


@attrs.frozen(kw_only=True)
class FireResult:
    #: False when ``due`` was no longer the current planned run (already handled).
    fired: bool
    #: Enqueue results, one per job given (empty when skipped or blocked).
    jobs: tuple[EnqueueResult, ...] = ()
    #: Why the guard refused, when it did.
    blocked: Blocked | None = attrs.field(default=None, converter=attrs.converters.optional(Blocked))
    #: ``if_running: cancel``: queued jobs of the schedule moved to dead.
    cancelled: tuple[str, ...] = ()
    #: ``if_running: cancel``: running jobs of the schedule asked to stop (the caller stops them).
    stopping: tuple[str, ...] = ()
    #: The jobs of the lifecycle events the firing made (``schedule.skipped``, ``job.dead``).
    alerts: tuple[EnqueueResult, ...] = ()


@attrs.frozen(kw_only=True)
class RunningJob:
    job: Job
    process: ProcessHandle | None


@attrs.frozen(kw_only=True)
class RunView:
    """A run with its job as the job is now (for ``ductile logs``)."""

    job: Job
    run: RunRecord


@attrs.frozen(kw_only=True)
class Pause:
    """``ductile pause``: a plugin's schedules (``schedule_id`` None) or one of them, paused."""

    plugin: str
    schedule_id: str | None
    at: datetime


#: The counter of routed events not routed because their chain hit ``service.max_route_depth``.
ROUTE_DEPTH_DROPS = "route_depth_drops"


@attrs.frozen(kw_only=True)
class InitRecord:
    plugin: str
    fingerprint: str
    ok: bool
    error: str | None
    at: datetime


@attrs.frozen(kw_only=True)
class StoreDump:
    """Everything a store keeps that another store can take over (``ductile store copy``):
    jobs in insertion order with their history, plugin states, breakers, the schedule index.
    Not process records (nothing may be running) nor ``init`` records (each host runs its own)."""

    jobs: tuple[Job, ...] = ()
    transitions: tuple[Transition, ...] = ()
    #: Each run with its job's plugin.
    runs: tuple[tuple[RunRecord, str], ...] = ()
    states: Mapping[str, dict[str, Any]] = attrs.field(factory=dict)
    breakers: tuple[Breaker, ...] = ()
    planned: tuple[PlannedRun, ...] = ()


@attrs.frozen(kw_only=True)
class JobCursor:
    """Where a page of :class:`JobQuery` results ended: the last job's creation time and
    insertion order (the listing's sort key, so a page never skips nor repeats a job)."""

    created_at: datetime
    seq: int


@attrs.frozen(kw_only=True)
class JobQuery:
    """Filters of a job listing, newest first. Every filter is optional; all given must hold."""

    statuses: frozenset[JobStatus] | None = None
    plugin: str | None = None
    command: str | None = None
    submitted_by: str | None = None
    #: Jobs routed from this job's events (its children).
    parent: str | None = None
    #: ``since <= created_at < until``.
    since: datetime | None = None
    until: datetime | None = None
    #: Text found (case-insensitively) in the job's last error, a run's error or stderr tail,
    #: or a run's stdout (the response, and the result in it).
    text: str | None = None
    limit: int = attrs.field(default=100, validator=attrs.validators.ge(1))
    #: Continue after this position (the previous page's ``JobPage.next``).
    after: JobCursor | None = None


@attrs.frozen(kw_only=True)
class JobPage:
    jobs: tuple[Job, ...]
    #: Where the next page starts; None when this page is the last.
    next: JobCursor | None


_ASCII_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def text_matches(haystack: str | None, needle: str) -> bool:
    """``JobQuery.text``'s rule: ``needle`` occurs in ``haystack``, ASCII letters compared
    without case (SQL ``LIKE``'s rule, so every store answers alike)."""
    return haystack is not None and needle.translate(_ASCII_FOLD) in haystack.translate(_ASCII_FOLD)


@attrs.frozen(kw_only=True)
class Rewound:
    """What a backward step of the wall clock moved (ADR 0045)."""

    #: Planned runs re-planned.
    plans: int = 0
    #: Queued jobs whose retry time moved.
    retries: int = 0
    #: Open or half-open breakers whose instants moved.
    breakers: int = 0


@attrs.frozen(kw_only=True)
class Pruned:
    """What one step of retention deleted (ADR 0064)."""

    #: Terminal jobs deleted, with their history.
    jobs: int
    #: Nothing expired is left: no kind of row filled the step's limit.
    done: bool
