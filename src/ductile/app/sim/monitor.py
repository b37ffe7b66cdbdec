"""The monitor: an independent ledger of every job, built from what the ports returned, checked."""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ductile.app.sim.alerts import AlertLedger
from ductile.app.sim.invariants import (
    Expectation,
    Violation,
    check_acknowledged,
    check_attempts,
    check_breaker_after_run,
    check_children,
    check_dedupe,
    check_executions,
    check_fire,
    check_history,
    check_liveness,
    check_settlement,
    check_single_runner,
    check_state,
)
from ductile.app.sim.lane_checks import check_identities, check_in_flight, check_lanes
from ductile.app.sim.ledger import JobTrack, RunNote, SimEvent, ledger_differences, settled_run
from ductile.app.sim.trace import ref, stamp
from ductile.domain.breaker import Breaker, BreakerPolicy, BreakerStatus, subject
from ductile.domain.job import TERMINAL, Command, Job, JobStatus, SubmittedBy
from ductile.domain.lanes import Lanes
from ductile.domain.schedule import PlannedRun
from ductile.domain.settle import SettleContext, Settlement
from ductile.ports.spawner import SpawnRequest
from ductile.ports.store import Committed, EnqueueResult, FireResult, Guard, InitRecord, Pruned, Store

if TYPE_CHECKING:
    from ductile.app.sim.simulation import Simulation


def _identity(job: Job) -> tuple[str, str, str] | None:
    return None if job.dedupe_key is None else (job.plugin, job.command, job.dedupe_key)


class Monitor:
    """The ledger of every job, built from what the ports returned, and the checks.

    The proxies report each call after it returned; the monitor then reads the
    touched jobs from the store (directly, unobserved: those reads are not
    port calls of the engine and never crash) and checks the invariants on
    them. Checks that need the world *before* a call (dedupe, breaker) use the
    ledger, which still holds it.
    """

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.jobs: dict[str, JobTrack] = {}
        self.by_identity: dict[tuple[str, str, str], list[str]] = {}
        self.running: set[str] = set()
        self.outstanding: dict[tuple[str, str], int] = {}
        #: The same per (plugin, schedule id), for scheduled jobs (the poll guard's count).
        self.scheduled: dict[tuple[str, str], int] = {}
        self.succeeded: dict[str, int] = {}
        self.terminal: list[tuple[datetime, int, str]] = []
        self.acked: dict[str, str] = {}
        self.deleted: set[str] = set()
        self.spawn_calls: set[tuple[str, int]] = set()
        self.spawns: dict[tuple[str, int], int] = {}
        self.unsettled: set[tuple[str, int]] = set()
        self.settled: set[tuple[str, int]] = set()
        self.events: list[SimEvent] = []
        #: I8: job id -> deadline, while draining.
        self.deadlines: dict[str, datetime] = {}
        self.checks = 0
        self._order = 0
        self.alerts = AlertLedger(self)
        #: Plugins seen with two runs at once (their state merges may overlap: I4 relaxed).
        self.overlapped: set[str] = set()

    @property
    def store(self) -> Store:
        return self.sim.inner

    @property
    def serial(self) -> bool:
        """One job at a time (D14): the simulation runs no lanes."""
        return self.sim.workers is None

    def lost_runs(self, unsettled: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
        """The spawned runs never settled, but for those still in flight (lanes)."""
        flying = frozenset() if self.sim.workers is None else self.sim.workers.in_flight
        return [key for key in unsettled if key[0] not in flying]

    def lost_run_budget(self) -> int:
        """I6: how many runs the crashes may have lost (each crash, every run then in flight)."""
        return self.sim.crashes + (0 if self.sim.workers is None else self.sim.workers.killed)

    # ------------------------------------------------------------- plumbing
    def require(self, code: str, problems: Sequence[str]) -> None:
        self.checks += 1
        if problems:
            detail = problems[0] if len(problems) == 1 else f"{problems[0]} (and {len(problems) - 1} more)"
            raise Violation(self.sim.violation(code, detail))

    def event(self, kind: str, plugin: str | None, detail: str) -> None:
        self.events.append(SimEvent(at=self.sim.clock.now(), kind=kind, plugin=plugin, detail=detail))

    def ack(self, job_id: str, who: str) -> None:
        self.acked.setdefault(job_id, who)

    def _status(self, track: JobTrack, old: Job | None, new: Job) -> None:
        before = old.status if old is not None else None
        after = new.status
        if before is after:
            return
        key = (new.plugin, new.command)
        mine = (new.plugin, new.schedule_id) if new.schedule_id is not None else None
        if before in (JobStatus.QUEUED, JobStatus.RUNNING):
            self.outstanding[key] -= 1
            if mine is not None:
                self.scheduled[mine] -= 1
        if after in (JobStatus.QUEUED, JobStatus.RUNNING):
            self.outstanding[key] = self.outstanding.get(key, 0) + 1
            if mine is not None:
                self.scheduled[mine] = self.scheduled.get(mine, 0) + 1
        if before is JobStatus.RUNNING:
            self.running.discard(new.id)
        if after is JobStatus.RUNNING:
            self.running.add(new.id)
        if after in TERMINAL:
            if before in TERMINAL:
                self.require("I2", [f"job {new.id} left the terminal state {before} for {after}"])
            assert new.completed_at is not None  # check_history reports it otherwise
            self._order += 1
            heapq.heappush(self.terminal, (new.completed_at, self._order, new.id))
            if after is JobStatus.SUCCEEDED and new.command != Command.INIT:
                self.succeeded[new.plugin] = self.succeeded.get(new.plugin, 0) + 1

    async def refresh(self, job_id: str, *, new: bool = False) -> JobTrack:
        """Read one job and its log from the store, update the ledger, check it."""
        job = await self.store.get_job(job_id)
        track = self.jobs.get(job_id)
        if job is None:
            if track is not None and track.deleted:
                return track
            self.require("I1", [f"job {job_id} is not in the store"])
            raise AssertionError("unreachable")  # pragma: no cover
        log = await self.store.transitions(job_id)
        if track is None:
            if not new:
                self.require("I2", [f"job {job_id} ({job.plugin}.{job.command}) appeared unannounced"])
            track = JobTrack(job=job, log=log)
            self.jobs[job_id] = track
            identity = _identity(job)
            if identity is not None:
                self.by_identity.setdefault(identity, []).append(job_id)
            self._status(track, None, job)
        else:
            old = track.job
            track.job, track.log = job, log
            if old.status is not job.status:
                self._status(track, old, job)
        self.require("I2", check_history(job, log))
        self.require("I3", check_attempts(job, log))
        if self.serial:
            self.require("I2", check_single_runner(self.running, between_steps=False))
        return track

    def _same_identity(self, job: Job, pending: Mapping[str, Job]) -> list[Job]:
        identity = _identity(job)
        if identity is None:
            return []
        known = [self.jobs[i].job for i in self.by_identity.get(identity, ()) if not self.jobs[i].deleted]
        return known + [p for p in pending.values() if _identity(p) == identity]

    def _check_insert(
        self, job: Job, result: EnqueueResult, pending: dict[str, Job], *, now: datetime, ttl: timedelta
    ) -> None:
        if _identity(job) is None:
            if not result.created and result.job_id != job.id:
                self.require(
                    "I5", [f"{job.plugin}.{job.command} without a dedupe key was dropped as a duplicate"]
                )
        else:
            self.require("I5", check_dedupe(job, result, self._same_identity(job, pending), now=now, ttl=ttl))
        if result.created:
            pending[job.id] = job
        elif result.job_id not in self.jobs and result.job_id not in pending:
            self.require(
                "I1", [f"an enqueue answered with job {result.job_id}, which the store never created"]
            )

    def _while_running(self, result: EnqueueResult) -> str:
        """`` (running)`` when a dropped duplicate's job is running (D1 as amended)."""
        track = self.jobs.get(result.job_id)
        return " (running)" if track is not None and track.job.status is JobStatus.RUNNING else ""

    # ------------------------------------------------------------- observations
    async def on_enqueue(self, job: Job, result: EnqueueResult, *, now: datetime, ttl: timedelta) -> None:
        self._check_insert(job, result, {}, now=now, ttl=ttl)
        if result.created:
            await self.refresh(result.job_id, new=True)
        key = f" key={job.dedupe_key}" if job.dedupe_key is not None else ""
        outcome = "new" if result.created else f"dup of {ref(result.job_id)}{self._while_running(result)}"
        self.sim.note(
            f"enqueue {job.submitted_by} {job.plugin}.{job.command} {ref(job.id)}{key} -> {outcome}"
        )

    async def on_claim(self, job: Job | None, lanes: Lanes | None = None) -> None:
        if job is None:
            return
        track = self.jobs.get(job.id)
        if track is None:
            self.require("I2", [f"claimed job {job.id} was never created"])
            raise AssertionError("unreachable")  # pragma: no cover
        queued = track.job
        ready = track.log[-1].at if track.log else queued.created_at
        if queued.next_retry_at is not None:
            ready = max(ready, queued.next_retry_at)
        if queued.status is not JobStatus.QUEUED:
            self.require("I2", [f"job {job.id} was claimed while {queued.status}"])
        if (
            queued.next_retry_at is not None
            and job.started_at is not None
            and job.started_at < queued.next_retry_at
        ):
            self.require(
                "I3", [f"job {job.id} was claimed before its retry time {stamp(queued.next_retry_at)}"]
            )
        track = await self.refresh(job.id)
        if lanes is not None and not self.serial:
            self._check_lanes(job, lanes)
        if job.started_at is not None:
            track.waits.append(max(0.0, (job.started_at - ready).total_seconds()))
        self.sim.note(f"claim {ref(job.id)} {job.plugin}.{job.command} {job.attempt}/{job.max_attempts}")

    def _check_lanes(self, claimed: Job, lanes: Lanes) -> None:
        running = [self.jobs[i].job for i in sorted(self.running)]
        self.require("I9", check_lanes(claimed, running, lanes, self.sim.config.service.max_workers))
        self.require("I10", check_identities(running))
        if sum(1 for j in running if j.plugin == claimed.plugin) > 1:
            self.overlapped.add(claimed.plugin)

    def on_spawn_call(self, request: SpawnRequest) -> None:
        job_id = request.env.get("DUCTILE_JOB_ID", "")
        attempt = int(request.env.get("DUCTILE_ATTEMPT", "0"))
        self.spawn_calls.add((job_id, attempt))

    def on_spawned(self, job_id: str, attempt: int, expectation: Expectation) -> None:
        key = (job_id, attempt)
        self.spawns[key] = self.spawns.get(key, 0) + 1
        self.unsettled.add(key)
        track = self.jobs.get(job_id)
        if track is not None:
            track.spawns[attempt] = track.spawns.get(attempt, 0) + 1
            track.expected[attempt] = expectation
        self.require("I6", check_executions({key: self.spawns[key]}, (), self.lost_run_budget()))

    async def breaker_before_settle(self, job_id: str) -> Breaker | None:
        track = self.jobs.get(job_id)
        if track is None or track.job.submitted_by is not SubmittedBy.SCHEDULER:
            return None
        job = track.job
        return await self.store.get_breaker(job.plugin, subject(job.command, job.schedule_id))

    async def on_settle(
        self,
        job_id: str,
        ctx: SettleContext,
        ttl: timedelta,
        committed: Committed,
        breaker_before: Breaker | None,
    ) -> None:
        track = self.jobs.get(job_id)
        if track is None:
            self.require("I2", [f"settled job {job_id} was never created"])
            raise AssertionError("unreachable")  # pragma: no cover
        before = track.job
        s = committed.settlement
        attempt = before.attempt
        expectation = track.expected.get(attempt)
        self.require("I3", check_settlement(before, committed, expectation))
        self.require("I4", check_children(before, committed, ctx, expectation))
        pending: dict[str, Job] = {}
        for child, result in zip(s.children, committed.children, strict=False):
            self._check_insert(child, result, pending, now=ctx.now, ttl=ttl)
        track = await self.refresh(job_id)
        self.settled.add((job_id, attempt))
        self.unsettled.discard((job_id, attempt))
        track.settled.add(attempt)
        spawned = (job_id, attempt) in self.spawn_calls
        self._note_run(track, before, s, spawned=spawned)
        for child, result in zip(s.children, committed.children, strict=False):
            if result.created:
                await self.refresh(child.id, new=True)
            track.children.append(result.job_id)
            fate = "new" if result.created else f"dup of {ref(result.job_id)}"
            self.sim.note(f"  route {ref(job_id)} -> {child.plugin}.{child.command} {ref(child.id)} {fate}")
        await self._check_state(before.plugin)
        if before.submitted_by is SubmittedBy.SCHEDULER and spawned:
            await self._breaker_after_run(before, s.succeeded, breaker_before, ctx.breaker)
        if committed.alerts:
            await self.alerts.adopt()

    async def _check_state(self, plugin: str) -> None:
        state = await self.store.get_state(plugin)
        succeeded = self.succeeded.get(plugin, 0)
        self.require("I4", check_state(plugin, state, succeeded, overlap=plugin in self.overlapped))

    def _note_run(self, track: JobTrack, before: Job, s: Settlement, *, spawned: bool) -> None:
        """Add the settled run to the job's notes, and its line to the trace."""
        note, line = settled_run(before, s, spawned=spawned)
        track.runs.append(note)
        self.sim.note(line)

    async def _breaker_after_run(
        self, job: Job, succeeded: bool, before: Breaker | None, policy: BreakerPolicy
    ) -> None:
        """I7 on a scheduler job's run, and the report's breaker events."""
        after = await self.store.get_breaker(job.plugin, subject(job.command, job.schedule_id))
        self.require("I7", check_breaker_after_run(job, succeeded, before, after, policy))
        was_open = before is not None and before.status is not BreakerStatus.CLOSED
        is_open = after is not None and after.status is not BreakerStatus.CLOSED
        if is_open and not was_open and after is not None:
            self.event("breaker_open", job.plugin, f"circuit breaker opened after {after.failures} failures")
        elif was_open and not is_open:
            self.event("breaker_closed", job.plugin, "circuit breaker closed by a success")
        elif was_open and is_open and before is not None and before.status is BreakerStatus.HALF_OPEN:
            self.event("breaker_open", job.plugin, "circuit breaker re-opened: the probe failed")

    def ack_settle(self, committed: Committed) -> None:
        for result in committed.children:
            self.ack(result.job_id, "route")

    async def on_recover(self, settlements: Sequence[Settlement]) -> None:
        for s in settlements:
            track = await self.refresh(s.job.id)
            track.runs.append(
                RunNote(
                    attempt=s.run.attempt,
                    started_at=s.run.started_at,
                    finished_at=s.run.finished_at,
                    duration=s.run.duration,
                    result="interrupted",
                    error=s.run.error,
                    status_after=s.job.status,
                )
            )
            self.sim.note(f"recover {ref(s.job.id)} -> {s.job.status} attempt {s.job.attempt}")
        await self.alerts.adopt()

    async def on_cancel(self, plugin: str, ids: Sequence[str], before: Sequence[str]) -> None:
        if sorted(ids) != sorted(before):
            self.require(
                "I3", [f"cancelling {plugin}: moved {sorted(ids)}, but its queued jobs were {sorted(before)}"]
            )
        for job_id in ids:
            await self.refresh(job_id)
        if ids:
            self.event("cancelled", plugin, f"{len(ids)} queued job(s) cancelled")
        self.sim.note(f"cancel {plugin}: {' '.join(ref(i) for i in ids) or '-'}")
        if ids:
            await self.alerts.adopt()

    def queued_of(self, plugin: str) -> list[str]:
        return [
            i
            for i, t in self.jobs.items()
            if t.job.plugin == plugin and t.job.status is JobStatus.QUEUED and not t.deleted
        ]

    async def on_delete(self, before: datetime, pruned: Pruned) -> None:
        """One retention step: all it deleted had expired; once it is ``done``, nothing expired is left."""
        doomed: list[tuple[datetime, int, str]] = []
        while self.terminal and self.terminal[0][0] < before:
            doomed.append(heapq.heappop(self.terminal))
        problems, gone = [], 0
        for entry in (e for e in doomed if not self.jobs[e[2]].deleted):
            if await self.store.get_job(entry[2]) is None:
                gone += 1
                self.jobs[entry[2]].deleted = True
                self.deleted.add(entry[2])
            elif pruned.done:
                problems.append(f"retention kept job {entry[2]}, finished before {stamp(before)}")
            else:
                heapq.heappush(self.terminal, entry)
        if pruned.jobs != gone:
            problems.append(f"retention deleted {pruned.jobs} job(s); {gone} finished before {stamp(before)}")
        self.require("I1", problems)
        if pruned.jobs:
            self.sim.note(f"retention deleted {pruned.jobs}")

    async def on_fire(
        self,
        due: PlannedRun,
        *,
        jobs: Sequence[Job],
        guard: Guard | None,
        breaker_before: Breaker | None,
        outstanding: int,
        result: FireResult,
        now: datetime,
        ttl: timedelta,
    ) -> None:
        plugin = due.plugin
        if not result.fired:
            self.sim.note(f"fire {due.key} stale")
            return
        self.require("I7", check_fire(guard, breaker_before, outstanding, result, now=now))
        if result.alerts:
            await self.alerts.adopt()
        pending: dict[str, Job] = {}
        for job, r in zip(jobs, result.jobs, strict=False):
            self._check_insert(job, r, pending, now=now, ttl=ttl)
        created = []
        for job, r in zip(jobs, result.jobs, strict=False):
            if r.created:
                track = await self.refresh(job.id, new=True)
                track.plan = due
                created.append(f"{job.plugin}.{job.command} {ref(job.id)}")
        if result.blocked == "breaker_open":
            what = "skipped: circuit breaker open"
            self.event("skipped_breaker", plugin, "scheduled run skipped: circuit breaker open")
        elif result.blocked == "poll_guard":
            what = "skipped: a job of the schedule is still outstanding"
            self.event(
                "skipped_poll_guard",
                plugin,
                "scheduled run skipped: the previous job of its schedule is still queued or running",
            )
        elif result.blocked == "paused":
            what = "skipped: paused"
            self.event("skipped_paused", plugin, "scheduled run skipped: paused")
        elif not jobs:
            schedule = self.sim.config.plugin(plugin).schedule_by_id(due.schedule_id)
            if schedule is not None and schedule.emit is None:
                what = "missed (catch_up: skip)"
                self.event(
                    "missed", plugin, f"missed run at {stamp(due.planned_at)} skipped (catch_up: skip)"
                )
            else:
                what = "no routed target"
        else:
            what = ", ".join(created) or "duplicate"
        probing = breaker_before is not None and breaker_before.status is BreakerStatus.OPEN
        if guard is not None and guard.breaker is not None and probing and created:
            self.event("breaker_probe", plugin, "circuit breaker half-open: one probe run admitted")
        self.sim.note(f"fire {due.key} planned {stamp(due.planned_at)} -> {what}")

    def ack_fire(self, result: FireResult) -> None:
        for r in result.jobs:
            self.ack(r.job_id, "scheduler")

    def on_put_planned(self, run: PlannedRun) -> None:
        offset = run.offset.total_seconds()
        snapped = " snapped" if run.snapped else ""
        self.sim.note(
            f"plan {run.key} {stamp(run.planned_at)} nominal {stamp(run.nominal_at)} {offset:+.3f}s{snapped}"
        )

    def on_put_init(self, record: InitRecord) -> None:
        if not record.ok:
            self.event("unhealthy", record.plugin, f"init failed, plugin unhealthy: {record.error}")
        self.sim.note(f"init {record.plugin} {'ok' if record.ok else 'failed'}")

    # ------------------------------------------------------------- step-level checks
    def after_step(self) -> None:
        """Between steps nothing runs, and lost runs stay within the crashes."""
        self._between_steps(self.running)
        self.require("I6", check_executions({}, self.lost_runs(self.unsettled), self.lost_run_budget()))
        if self.deadlines:
            pending = {i: (self.jobs[i].job, d) for i, d in self.deadlines.items()}
            self.require("I8", check_liveness(pending, self.sim.clock.now()))

    async def full_check(self) -> None:
        """Everything against the store: nothing lost, unannounced or changed unseen; states; lost runs."""
        stored = await self.store.list_jobs(limit=10**9)
        present = {j.id for j in stored}
        unknown = sorted(present - set(self.jobs))
        if unknown:
            self.require(
                "I2", [f"{len(unknown)} job(s) in the store were never reported created: {unknown[:3]}"]
            )
        self.require("I1", check_acknowledged(self.acked, present, self.deleted))
        self.require("I1", ledger_differences(self.jobs, {j.id: j for j in stored}))
        running = [j.id for j in stored if j.status is JobStatus.RUNNING]
        self._between_steps(running)
        for plugin in sorted({t.job.plugin for t in self.jobs.values()}):
            await self._check_state(plugin)
        unsettled = self.lost_runs(k for k in self.spawns if k not in self.settled)
        self.require("I6", check_executions(self.spawns, unsettled, self.lost_run_budget()))
        self.alerts.check_every_death()

    def _between_steps(self, running: Collection[str]) -> None:
        """I2 between steps: nothing runs (one job at a time), or only the runs in flight (lanes)."""
        if self.sim.workers is None:
            self.require("I2", check_single_runner(running, between_steps=True))
        else:
            self.require("I2", check_in_flight(running, self.sim.workers.in_flight))
