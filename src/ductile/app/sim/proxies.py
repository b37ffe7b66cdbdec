"""The Store and Spawner ports as the engine sees them in a simulation: numbered, crashable, observed."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from ductile.app.sim.faults import CRASH_POINTS, CrashPoint, Faults, SimulatedCrash
from ductile.app.sim.monitor import Monitor
from ductile.domain.activity import Activity, Entry, SkipReason
from ductile.domain.breaker import Breaker
from ductile.domain.classify import RunEnd
from ductile.domain.config import Config
from ductile.domain.facts import Fact
from ductile.domain.job import Actor, Command, Job, JobStatus, Transition
from ductile.domain.lanes import UNLIMITED, Lanes
from ductile.domain.lifecycle import Alerts
from ductile.domain.outcome import SpawnOutcome
from ductile.domain.plugin import Discovery, Plugin
from ductile.domain.schedule import PlannedRun
from ductile.domain.settle import RunRecord, SettleContext, Settlement
from ductile.fakes import ScriptedSpawner
from ductile.ports.clock import Clock
from ductile.ports.spawner import OnStart, ProcessHandle, SpawnRequest
from ductile.ports.store import (
    Committed,
    EnqueueResult,
    FireResult,
    Guard,
    InitRecord,
    JobPage,
    JobQuery,
    Pause,
    Pruned,
    Rewound,
    RunningJob,
    RunView,
    Store,
    WriteFault,
)

if TYPE_CHECKING:
    from ductile.app.sim.simulation import Simulation

T = TypeVar("T")


class CrashSwitch:
    """Numbers every Store and Spawner call the engine makes, and crashes on cue.

    Both proxies consult it before and after each call they forward (it was
    once called ``Ports``). A crash comes at an armed call (:meth:`arm`), at
    ``faults.crash_at``, or with ``faults.crash_rate`` per call (the chance and
    the point drawn from the run's one random source) while the faults are on:
    fewer than ``max_crashes`` so far, ``spacing`` past the last one, and
    ``until`` not reached.
    """

    def __init__(self, faults: Faults, *, rng: random.Random, clock: Clock) -> None:
        self.faults = faults
        #: Port calls so far (1-based once counted), over every engine of the run.
        self.calls = 0
        #: Crashes so far, over the whole run.
        self.crashes = 0
        #: False while the run drains: nothing crashes any more.
        self.on = True
        self._rng = rng
        self._clock = clock
        self._armed: tuple[int, CrashPoint] | None = None
        start = clock.now()
        self._last_crash = start
        self._until = start + faults.until if faults.until is not None else None
        self._may_crash = faults.crash_at is not None or bool(faults.crash_rate)

    def enter(self, name: str) -> tuple[int, CrashPoint | None]:
        """Count a call about to be forwarded; raise when it crashes before it."""
        self.calls += 1
        point = self._decide(self.calls)
        if point == "before":
            raise SimulatedCrash(self.calls, name, "before")
        return self.calls, point

    @staticmethod
    def leave(index: int, name: str, point: CrashPoint | None) -> None:
        """After the call returned: raise when it crashes after it."""
        if point == "after":
            raise SimulatedCrash(index, name, "after")

    def arm(self, calls_from_now: int, point: CrashPoint) -> None:
        """Crash at the ``calls_from_now``-th call from now (1: the next one)."""
        self._armed = (self.calls + calls_from_now, point)

    def disarm(self) -> None:
        self._armed = None

    def crashed(self) -> None:
        """Count a crash (drawn, armed, or a kill between steps)."""
        self.crashes += 1
        self._last_crash = self._clock.now()

    def active(self) -> bool:
        """May a drawn fault happen now?"""
        if not self.on or self.crashes >= self.faults.max_crashes:
            return False
        now = self._clock.now()
        if self.faults.spacing and now < self._last_crash + self.faults.spacing:
            return False
        return self._until is None or now < self._until

    def _decide(self, index: int) -> CrashPoint | None:
        if self._armed is not None and self._armed[0] == index:
            point = self._armed[1]
            self._armed = None
            return point
        if not self._may_crash:  # neither crash_at nor crash_rate: nothing below can fire or draw
            return None
        if not self.active():
            return None
        if self.faults.crash_at == index:
            return self.faults.crash_point
        if self.faults.crash_rate and self._rng.random() < self.faults.crash_rate:
            return self._rng.choice(CRASH_POINTS)
        return None


class ObservedStore:
    """The Store port, forwarded: each call numbered (maybe crashed) and observed."""

    def __init__(self, inner: Store, switch: CrashSwitch, monitor: Monitor) -> None:
        self._inner = inner
        self._switch = switch
        self._monitor = monitor

    async def _plain(self, name: str, call: Callable[[], Awaitable[T]]) -> T:
        index, point = self._switch.enter(name)
        result = await call()
        self._switch.leave(index, name, point)
        return result

    # ------------------------------------------------------------- observed writes
    async def enqueue(self, job: Job, *, actor: Actor, now: datetime, dedupe_ttl: timedelta) -> EnqueueResult:
        index, point = self._switch.enter("store.enqueue")
        result = await self._inner.enqueue(job, actor=actor, now=now, dedupe_ttl=dedupe_ttl)
        await self._monitor.on_enqueue(job, result, now=now, ttl=dedupe_ttl)
        self._switch.leave(index, "store.enqueue", point)
        if actor is Actor.API and job.command == Command.INIT:
            self._monitor.ack(result.job_id, "init")
        return result

    async def claim_next(self, now: datetime, *, lanes: Lanes = UNLIMITED) -> Job | None:
        index, point = self._switch.enter("store.claim_next")
        job = await self._inner.claim_next(now, lanes=lanes)
        await self._monitor.on_claim(job, lanes)
        self._switch.leave(index, "store.claim_next", point)
        return job

    async def claim(self, job_id: str, now: datetime, *, lanes: Lanes = UNLIMITED) -> Job | None:
        index, point = self._switch.enter("store.claim")
        job = await self._inner.claim(job_id, now, lanes=lanes)
        await self._monitor.on_claim(job)
        self._switch.leave(index, "store.claim", point)
        return job

    async def record_process(self, job_id: str, handle: ProcessHandle, *, token: int) -> None:
        index, point = self._switch.enter("store.record_process")
        await self._inner.record_process(job_id, handle, token=token)
        self._switch.leave(index, "store.record_process", point)

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
        # A settle that claims (ADR 0068) is one crash point, observed as the settle and then the
        # claim: the monitor reads the store to check each, so it must see the settle's rows
        # before the claim's. The inner store runs both with no await between them, so nothing
        # else happens in between, as in the one unit the real stores run (the contract suite
        # holds the stores' combined unit to exactly this: a settle, then claim_next).
        index, point = self._switch.enter("store.settle")
        breaker = await self._monitor.breaker_before_settle(job_id)
        committed = await self._inner.settle(job_id, end, ctx=ctx, dedupe_ttl=dedupe_ttl, token=token)
        await self._monitor.on_settle(job_id, ctx, dedupe_ttl, committed, breaker)
        if then_claim is not None:
            following = await self._inner.claim_next(ctx.now, lanes=then_claim)
            await self._monitor.on_claim(following, then_claim)
            committed = attrs.evolve(committed, next_job=following)
        self._switch.leave(index, "store.settle", point)
        self._monitor.ack_settle(committed)
        return committed

    async def running(self) -> list[RunningJob]:
        return await self._plain("store.running", self._inner.running)

    async def recover(self, now: datetime, *, alerts: Alerts | None = None) -> list[Settlement]:
        index, point = self._switch.enter("store.recover")
        settlements = await self._inner.recover(now, alerts=alerts)
        await self._monitor.on_recover(settlements)
        self._switch.leave(index, "store.recover", point)
        return settlements

    async def cancel_queued(
        self, plugin: str, *, reason: str, now: datetime, alerts: Alerts | None = None
    ) -> list[str]:
        index, point = self._switch.enter("store.cancel_queued")
        before = self._monitor.queued_of(plugin)
        ids = await self._inner.cancel_queued(plugin, reason=reason, now=now, alerts=alerts)
        await self._monitor.on_cancel(plugin, ids, before)
        self._switch.leave(index, "store.cancel_queued", point)
        return ids

    async def delete_finished(self, before: datetime, *, limit: int | None = None) -> Pruned:
        index, point = self._switch.enter("store.delete_finished")
        pruned = await self._inner.delete_finished(before, limit=limit)
        await self._monitor.on_delete(before, pruned)
        self._switch.leave(index, "store.delete_finished", point)
        return pruned

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
        index, point = self._switch.enter("store.fire")
        breaker = None
        outstanding = 0
        if guard is not None:
            breaker = await self._inner.get_breaker(guard.plugin, guard.breaker_command)
            if guard.schedule_id is not None:
                outstanding = self._monitor.scheduled.get((guard.plugin, guard.schedule_id), 0)
            else:
                outstanding = self._monitor.outstanding.get((guard.plugin, guard.command), 0)
        result = await self._inner.fire(
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
        await self._monitor.on_fire(
            due,
            jobs=jobs,
            guard=guard,
            breaker_before=breaker,
            outstanding=outstanding,
            result=result,
            now=now,
            ttl=dedupe_ttl,
        )
        if result.fired:
            self._monitor.on_put_planned(next_run)
        self._switch.leave(index, "store.fire", point)
        self._monitor.ack_fire(result)
        return result

    async def rewind(self, *, step: timedelta, plans: Sequence[tuple[PlannedRun, PlannedRun]]) -> Rewound:
        # The simulation's clock never steps back, so the engine never asks; the ledger would
        # have to learn the moved retry times and plans first (the unit has its own tests).
        raise NotImplementedError("the simulation's clock never steps back")

    async def put_planned(self, run: PlannedRun) -> None:
        index, point = self._switch.enter("store.put_planned")
        await self._inner.put_planned(run)
        self._monitor.on_put_planned(run)
        self._switch.leave(index, "store.put_planned", point)

    async def put_init(self, record: InitRecord) -> None:
        index, point = self._switch.enter("store.put_init")
        await self._inner.put_init(record)
        self._monitor.on_put_init(record)
        self._switch.leave(index, "store.put_init", point)

    # ------------------------------------------------------------- plain calls
    async def get_job(self, job_id: str) -> Job | None:
        return await self._plain("store.get_job", lambda: self._inner.get_job(job_id))

    async def transitions(self, job_id: str) -> list[Transition]:
        return await self._plain("store.transitions", lambda: self._inner.transitions(job_id))

    async def runs(self, job_id: str) -> list[RunRecord]:
        return await self._plain("store.runs", lambda: self._inner.runs(job_id))

    async def recent_runs(self, *, plugin: str | None = None, limit: int = 50) -> list[RunView]:
        return await self._plain(
            "store.recent_runs", lambda: self._inner.recent_runs(plugin=plugin, limit=limit)
        )

    async def list_jobs(
        self, *, statuses: Sequence[JobStatus] | None = None, plugin: str | None = None, limit: int = 100
    ) -> list[Job]:
        return await self._plain(
            "store.list_jobs", lambda: self._inner.list_jobs(statuses=statuses, plugin=plugin, limit=limit)
        )

    async def queue_depth(self) -> int:
        return await self._plain("store.queue_depth", self._inner.queue_depth)

    async def oldest_queued_at(self) -> datetime | None:
        return await self._plain("store.oldest_queued_at", self._inner.oldest_queued_at)

    async def outstanding(self, plugin: str, command: str) -> int:
        return await self._plain("store.outstanding", lambda: self._inner.outstanding(plugin, command))

    async def next_retry_at(self) -> datetime | None:
        return await self._plain("store.next_retry_at", self._inner.next_retry_at)

    async def get_state(self, plugin: str) -> dict[str, Any]:  # once per run: written out, no lambda
        index, point = self._switch.enter("store.get_state")
        state = await self._inner.get_state(plugin)
        self._switch.leave(index, "store.get_state", point)
        return state

    async def get_breaker(self, plugin: str, command: str) -> Breaker | None:
        return await self._plain("store.get_breaker", lambda: self._inner.get_breaker(plugin, command))

    async def breakers(self) -> list[Breaker]:
        return await self._plain("store.breakers", self._inner.breakers)

    async def reset_breakers(
        self,
        plugin: str,
        *,
        now: datetime | None = None,
        actor: str = "operator",
        alerts: Alerts | None = None,
    ) -> list[Breaker]:
        return await self._plain(
            "store.reset_breakers",
            lambda: self._inner.reset_breakers(plugin, now=now, actor=actor, alerts=alerts),
        )

    # ------------------------------------------------------------- the operator's calls (not simulated)
    async def cancel_job(
        self, job_id: str, *, reason: str, actor: Actor, now: datetime, alerts: Alerts | None = None
    ) -> Job:
        return await self._plain(
            "store.cancel_job",
            lambda: self._inner.cancel_job(job_id, reason=reason, actor=actor, now=now, alerts=alerts),
        )

    async def find_jobs(self, query: JobQuery) -> JobPage:
        return await self._plain("store.find_jobs", lambda: self._inner.find_jobs(query))

    async def job_ids_with_prefix(self, prefix: str, *, limit: int = 2) -> list[str]:
        return await self._plain(
            "store.job_ids_with_prefix", lambda: self._inner.job_ids_with_prefix(prefix, limit=limit)
        )

    async def note(self, entry: Activity, *, alerts: Alerts | None = None) -> None:
        await self._plain("store.note", lambda: self._inner.note(entry, alerts=alerts))

    async def activity(self, after: int, *, limit: int = 500) -> list[Entry]:
        return await self._plain("store.activity", lambda: self._inner.activity(after, limit=limit))

    async def last_activity_id(self) -> int:
        return await self._plain("store.last_activity_id", self._inner.last_activity_id)

    async def planned(self, key: str) -> PlannedRun | None:
        return await self._plain("store.planned", lambda: self._inner.planned(key))

    async def all_planned(self) -> list[PlannedRun]:
        return await self._plain("store.all_planned", self._inner.all_planned)

    async def due(self, start: datetime, end: datetime) -> list[PlannedRun]:  # twice per tick
        index, point = self._switch.enter("store.due")
        runs = await self._inner.due(start, end)
        self._switch.leave(index, "store.due", point)
        return runs

    async def delete_planned(self, key: str) -> None:
        await self._plain("store.delete_planned", lambda: self._inner.delete_planned(key))

    async def get_init(self, plugin: str) -> InitRecord | None:
        return await self._plain("store.get_init", lambda: self._inner.get_init(plugin))

    async def pause(self, plugin: str, schedule_id: str | None, *, now: datetime) -> bool:
        return await self._plain("store.pause", lambda: self._inner.pause(plugin, schedule_id, now=now))

    async def resume(self, plugin: str, schedule_id: str | None) -> bool:
        return await self._plain("store.resume", lambda: self._inner.resume(plugin, schedule_id))

    async def pauses(self) -> list[Pause]:
        return await self._plain("store.pauses", self._inner.pauses)

    async def facts(self, plugin: str, *, fact_type: str | None = None, limit: int = 100) -> list[Fact]:
        return await self._plain(
            "store.facts", lambda: self._inner.facts(plugin, fact_type=fact_type, limit=limit)
        )

    async def counts(self) -> dict[str, int]:
        return await self._plain("store.counts", self._inner.counts)

    def write_fault(self) -> WriteFault | None:  # no I/O: not a numbered port call
        return self._inner.write_fault()

    async def close(self) -> None:
        await self._plain("store.close", self._inner.close)


class ObservedSpawner:
    """The Spawner port, forwarded: each run numbered (maybe crashed) and observed."""

    def __init__(self, inner: ScriptedSpawner, switch: CrashSwitch, monitor: Monitor) -> None:
        self._inner = inner
        self._switch = switch
        self._monitor = monitor

    async def run(self, request: SpawnRequest, *, on_start: OnStart | None = None) -> SpawnOutcome:
        index, point = self._switch.enter("spawner.run")
        self._monitor.on_spawn_call(request)
        outcome = await self._inner.run(request, on_start=on_start)
        self._switch.leave(index, "spawner.run", point)
        return outcome

    async def kill_orphan(self, handle: ProcessHandle) -> bool:
        index, point = self._switch.enter("spawner.kill_orphan")
        killed = await self._inner.kill_orphan(handle)
        self._switch.leave(index, "spawner.kill_orphan", point)
        return killed


class ScriptingCatalog:
    """The simulation's catalog, registering a script for every plugin it loads."""

    def __init__(self, sim: Simulation) -> None:
        self._sim = sim

    def discover(self, config: Config) -> Discovery:
        discovery = self._sim.catalog.discover(config)
        for name, plugin in discovery.plugins.items():
            if plugin.executable not in self._sim.spawner.scripts:
                self._sim.spawner.script(plugin.executable, self._sim.plugins.script_for(name))
        return discovery

    def verify(self, plugin: Plugin) -> str | None:
        return self._sim.catalog.verify(plugin)
