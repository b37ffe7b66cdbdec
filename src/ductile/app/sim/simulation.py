"""The simulation: the real engine on fakes, driven step by step by one seed.

A :class:`Simulation` owns the fake clock, the store, the one random source
and its parts: the crash switch and the observed ports
(:mod:`~ductile.app.sim.proxies`), the monitor, the plugin scripts and the
agenda of outside work. Its loop ticks when the engine is due, applies what
arrived, dispatches until idle and then jumps the clock to the next instant
anything can happen; a crash inside a step throws the engine away and starts
a new one on the same store. See the package's docs for the whole picture.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, TypeVar

from ductile.app.engine import Engine, EnqueueRefusedError
from ductile.app.sim.agenda import Agenda
from ductile.app.sim.behaviour import Behaviour
from ductile.app.sim.catalog import SimCatalog
from ductile.app.sim.faults import (
    NO_ARRIVALS,
    NO_FAULTS,
    Arrivals,
    CrashPoint,
    Faults,
    Reload,
    SimulatedCrash,
)
from ductile.app.sim.invariants import (
    INVARIANTS,
    InvariantError,
    Violation,
    liveness_deadlines,
)
from ductile.app.sim.monitor import Monitor
from ductile.app.sim.plugins import PluginScripts
from ductile.app.sim.process import paced_collector, quiet_log
from ductile.app.sim.proxies import CrashSwitch, ObservedSpawner, ObservedStore, ScriptingCatalog
from ductile.app.sim.results import JobReport, SimulationResult, job_report, plugin_stats
from ductile.app.sim.trace import stamp, trace_hash
from ductile.app.sim.workers import Workers, with_lanes
from ductile.domain.config import Config
from ductile.domain.job import TERMINAL, Command, SubmittedBy
from ductile.fakes import FakeClock, FakeInbox, InMemoryStore, ScriptedSpawner
from ductile.fakes.indexed_store import IndexedMemoryStore
from ductile.ports.store import EnqueueResult, Store

T = TypeVar("T")

#: Where a simulation starts unless told: a Friday before Europe's spring-forward
#: weekend, so a two-day run crosses a DST change in Europe/Berlin.
DEFAULT_START = datetime(2026, 3, 27, 0, 0, tzinfo=UTC)

#: A loop that makes no progress this many times in a row is stuck (an engine bug).
STALL_LIMIT = 1000


#: ``memory``: the InMemoryStore fake as it is; ``indexed``: the same with indexes
#: (:class:`IndexedMemoryStore`, for long runs); ``sqlite``: the real adapter on a temp file.
StoreKind = Literal["memory", "indexed", "sqlite"]

STORE_KINDS: tuple[StoreKind, ...] = ("memory", "indexed", "sqlite")


class Simulation:
    """The engine on fakes, one seed, faults and invariants.

    Use :meth:`run` for a whole run, or drive it step by step (``open``,
    ``boot``, ``tick``, ``dispatch``, ``submit``, ``reload``, ``crash``,
    ``advance``, ``check``, ``close``) as the state-machine test does.
    """

    def __init__(
        self,
        config: Config,
        *,
        seed: int,
        behaviours: Mapping[str, Behaviour] | None = None,
        store: StoreKind = "memory",
        faults: Faults = NO_FAULTS,
        arrivals: Arrivals = NO_ARRIVALS,
        reloads: Sequence[Reload] = (),
        catalog: SimCatalog | None = None,
        start: datetime = DEFAULT_START,
        replay: str | None = None,
        quiet: bool = True,
        memory_store: InMemoryStore | None = None,
        progress: Callable[[datetime], None] | None = None,
    ) -> None:
        """``memory_store``: use this InMemoryStore (a test plants a bug in one). ``progress``
        is told the simulated time after every step (it must not touch the simulation)."""
        if store not in STORE_KINDS:
            raise ValueError(f"store must be one of {', '.join(STORE_KINDS)}, not {store!r}")
        if start.tzinfo is None:
            raise ValueError("the simulation's start must be an aware datetime")
        self.config = config
        self.progress = progress
        self.seed = seed
        self.rng = random.Random(seed)
        self.behaviours = dict(behaviours or {})
        self.store_kind: StoreKind = store
        self.faults = faults
        self.arrivals = arrivals
        self.reloads = tuple(reloads)
        self.catalog = catalog if catalog is not None else SimCatalog(self.behaviours)
        self.start = start.astimezone(UTC)
        self.clock = FakeClock(self.start)
        lanes = with_lanes(config, self.reloads)
        if lanes and store == "sqlite":
            raise ValueError("lanes (service.max_workers above 1) are simulated on the memory stores only")
        #: Several jobs at once (None: one at a time, the serial dispatcher of D14).
        self.workers = Workers(self) if lanes else None
        self.spawner = ScriptedSpawner(clock=self.clock, concurrent=lanes)
        if not lanes:  # with lanes, arrivals come from the agenda while the workers sleep on the clock
            self.spawner.while_running = self._arrive_while_running
        self.switch = CrashSwitch(faults, rng=self.rng, clock=self.clock)
        self.monitor = Monitor(self)
        self.plugins = PluginScripts(self)
        self.agenda = Agenda(self)
        self.replay = replay or f"python -m ductile.app.sim --seed {seed}"
        self.quiet = quiet
        self.trace: list[str] = []
        self.engine: Engine | None = None
        if memory_store is not None and store == "sqlite":
            raise ValueError("memory_store goes with store='memory' or 'indexed'")
        self.inner: Store = memory_store or (IndexedMemoryStore() if store == "indexed" else InMemoryStore())
        self._directory: Path | None = None
        self._opened = False
        self.next_tick = self.start
        self.idle = False
        self._end: datetime | None = None

    @property
    def crashes(self) -> int:
        """Crashes so far (drawn, armed, or between steps)."""
        return self.switch.crashes

    # ------------------------------------------------------------- plumbing for the parts
    def note(self, line: str) -> None:
        self.trace.append(f"{stamp(self.clock.now())} {line}")

    def violation(self, code: str, detail: str) -> InvariantError:
        return InvariantError(
            f"{code} ({INVARIANTS.get(code, '?')})",
            detail,
            at=self.clock.now(),
            replay=self.replay,
            trace=self.trace,
        )

    def new_id(self) -> str:
        """A random (version 4) UUID drawn from the run's one random source."""
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _new_engine(self) -> Engine:
        return Engine(
            config=self.config,
            store=ObservedStore(self.inner, self.switch, self.monitor),
            spawner=ObservedSpawner(self.spawner, self.switch, self.monitor),
            clock=self.clock,
            inbox=FakeInbox(self.clock),
            catalog=ScriptingCatalog(self),
            draw=self.rng.random,
            new_id=self.new_id,
            environ={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )

    async def _open_store(self) -> Store:
        if self.store_kind != "sqlite":
            return self.inner
        from ductile.adapters.sqlite import SqliteStore

        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="ductile-sim-"))
        # A simulated kill -9 loses no committed unit in any synchronous mode (PITFALLS);
        # OFF only spares the disk.
        return await SqliteStore.open(self._directory / "ductile.db", synchronous="OFF")

    # ------------------------------------------------------------- steps
    async def step(
        self, action: Callable[[], Awaitable[None]], *, retry: Callable[[], None] | None = None
    ) -> bool:
        """Run one step; a crash inside it restarts the process. True when it completed."""
        try:
            await self._drive(action)
        except SimulatedCrash as crash:
            if retry is not None:
                retry()
            await self._restart(crash)
            return False
        self.monitor.after_step()
        return True

    async def _restart(self, crash: SimulatedCrash | None) -> None:
        """kill -9 and start again: a new engine on the same store; ``start()`` recovers."""
        if self.workers is not None:
            await self.workers.kill()
        while True:
            self.switch.crashed()
            self.engine = None
            what = f"{crash.point} call {crash.call} ({crash.name})" if crash is not None else "while idle"
            self.note(f"crash {what}")
            self.monitor.event("crash", None, f"simulated crash {what}")
            if self.store_kind == "sqlite":
                await self.inner.close()
                self.inner = await self._open_store()
            if self.faults.downtime and self.switch.active():
                self.clock.advance(self.faults.downtime * self.rng.random())
            self.note("restart")
            try:
                self.engine = self._new_engine()
                await self._drive(self.engine.start)
            except SimulatedCrash as again:
                crash = again
                continue
            break
        self.next_tick = self.clock.now()
        self.idle = False
        await self.monitor.full_check()
        self.monitor.after_step()

    async def _drive(self, action: Callable[[], Awaitable[T]]) -> T:
        """``action`` as a step runs it: alone (one job at a time), or with the runs in flight."""
        return await (action() if self.workers is None else self.workers.drive(action))

    async def tick_action(self) -> None:
        assert self.engine is not None
        self.next_tick = await self.engine.tick()

    async def _dispatch_action(self) -> None:
        assert self.engine is not None
        self.idle = not await self.engine.dispatch_one()

    async def apply_next(self) -> None:
        item = self.agenda.pop()
        self.idle = False
        if item.kind == "reload":
            await self.step(lambda: self.agenda.reload(item))
        else:
            await self.step(
                lambda: self.agenda.arrive(item), retry=lambda: self.agenda.push(self.clock.now(), item)
            )

    async def _arrive_while_running(self, end: datetime) -> None:
        """Deliveries and ``ductile run`` calls due before a running plugin ends arrive at their
        instants, while the job is ``running`` in the store, as they do at a daemon whose
        dispatcher is busy (a redelivery then meets the running job: D1). A reload waits for
        the run to end, and so does everything after it; an arrival a crash cuts short is sent
        again, as a client would."""
        while self.agenda.next_kind() in ("webhook", "cli"):
            due = self.agenda.next_at()
            assert due is not None
            if due >= end:
                return
            if due > self.clock.now():
                self.clock.set(due)
            item = self.agenda.pop()
            try:
                await self.agenda.arrive(item)
            except SimulatedCrash:
                self.agenda.push(self.clock.now(), item)
                raise

    async def apply_reload(self, config: Config, label: str) -> None:
        """Switch to ``config`` within the current step, as SIGHUP would."""
        assert self.engine is not None
        self.config = config  # the operator edited the file first: a restart reads the new one
        self.note(f"reload {label}")
        self.monitor.event("reload", None, f"configuration reloaded: {label}")
        await self.engine.reload(config)

    async def next_retry(self) -> datetime | None:
        return await self.inner.next_retry_at()

    async def _loop(self, end: datetime | None) -> None:
        """Step until ``end``; ``end`` None: drain until every pending job ended. A loop that
        makes no progress (no job run, no time passing) for :data:`STALL_LIMIT` steps is stuck."""
        stall = 0
        while not self._finished(end):
            stall += 1
            if stall > STALL_LIMIT:
                at = stamp(self.clock.now())
                raise Violation(self.violation("I8", f"no progress after {STALL_LIMIT} steps at {at}"))
            if await self._next_step(end):
                stall = 0
            if self.progress is not None:
                self.progress(self.clock.now())

    def _finished(self, end: datetime | None) -> bool:
        if end is not None:
            return self.clock.now() >= end
        return all(self.monitor.jobs[i].job.status in TERMINAL for i in self.monitor.deadlines)

    async def _next_step(self, end: datetime | None) -> bool:
        """Tick when due, else apply what arrived, else dispatch until idle, else jump to the
        next instant anything can happen. True when that was progress (a job ran, time moved)."""
        if self.workers is not None:
            return await self.workers.next_step(end)
        now = self.clock.now()
        if now >= self.next_tick:
            await self.step(self.tick_action)
            return False
        due = self.agenda.next_at()
        if due is not None and due <= now:
            await self.apply_next()
            return False
        if not self.idle:
            return await self.step(self._dispatch_action) and not self.idle
        candidates = [self.next_tick]
        retry_at = await self.next_retry()
        if retry_at is not None:
            candidates.append(retry_at)
        if due is not None:
            candidates.append(due)
        if end is not None:
            candidates.append(end)
        target = min(candidates)
        moved = target > now
        if moved:
            self.clock.set(target)
        self.idle = False
        return moved

    # ------------------------------------------------------------- the public steps
    async def open(self) -> None:
        """Open the store (a fresh one). Call :meth:`boot` next."""
        if self._opened:
            raise RuntimeError("this simulation was already opened")
        self._opened = True
        self.inner = await self._open_store()

    async def boot(self) -> None:
        """The first start: discovery, init, schedules (crashes restart it)."""
        try:
            self.note(f"boot seed {self.seed}")
            with quiet_log(self.quiet):
                self.engine = self._new_engine()
                try:
                    await self._drive(self.engine.start)
                except SimulatedCrash as crash:
                    await self._restart(crash)
                self.monitor.after_step()
                self.next_tick = self.clock.now()
        except Violation as v:
            raise v.error from None

    async def tick(self) -> None:
        await self._public(lambda: self.step(self.tick_action))

    async def dispatch(self, behaviour: Behaviour | None = None) -> bool:
        """Run the oldest runnable job (the next spawn follows ``behaviour`` if given).
        True when a job was taken (False when idle or a crash cut the step short)."""
        if behaviour is not None:
            self.plugins.forced = [behaviour]
        completed = await self._public(lambda: self.step(self._dispatch_action))
        self.plugins.forced = []
        return completed and not self.idle

    async def submit(
        self,
        plugin: str,
        *,
        command: str = Command.POLL,
        dedupe_key: str | None = None,
        submitted_by: SubmittedBy = SubmittedBy.CLI,
        strict: bool = False,
    ) -> EnqueueResult | None:
        """An enqueue from outside (webhook, CLI, API); None when refused or cut by a crash."""
        answer: list[EnqueueResult] = []

        async def action() -> None:
            assert self.engine is not None
            try:
                result = await self.engine.enqueue(
                    plugin, command=command, dedupe_key=dedupe_key, submitted_by=submitted_by, strict=strict
                )
            except EnqueueRefusedError as e:
                self.note(f"enqueue {plugin}.{command} refused: {e}")
                return
            self.monitor.ack(result.job_id, submitted_by.value)
            answer.append(result)

        await self._public(lambda: self.step(action))
        return answer[0] if answer else None

    async def reload(self, config: Config, label: str = "reload") -> None:
        await self._public(lambda: self.step(lambda: self.apply_reload(config, label)))

    async def crash(self) -> None:
        """kill -9 between steps, and restart."""
        await self._public(lambda: self._restart(None))

    def advance(self, delta: timedelta) -> None:
        """Let simulated time pass (nothing runs meanwhile)."""
        self.clock.advance(delta)
        self.idle = False

    def arm_crash(self, calls_from_now: int, point: CrashPoint) -> None:
        """Crash at the ``calls_from_now``-th port call from now (1: the next one)."""
        self.switch.arm(calls_from_now, point)

    def disarm(self) -> None:
        self.switch.disarm()

    async def drain(self) -> None:
        """Stop faults and arrivals, then run until every unfinished job has ended,
        each before its I8 deadline; then check everything."""
        self.switch.on = False
        self.switch.disarm()
        dropped = self.agenda.clear()
        dropped_text = f", {dropped} pending arrival(s) dropped" if dropped else ""
        self.note(f"end of run: faults off{dropped_text}; draining")
        pending = [
            t.job for t in self.monitor.jobs.values() if not t.deleted and t.job.status not in TERMINAL
        ]
        self.monitor.deadlines = liveness_deadlines(pending, self.config, now=self.clock.now())
        await self._public(lambda: self._loop(None))
        self.monitor.deadlines = {}
        await self.check()

    async def check(self) -> None:
        """Every invariant against the whole store, now."""
        await self._public(self.monitor.full_check)

    async def _public(self, action: Callable[[], Awaitable[T]]) -> T:
        try:
            with quiet_log(self.quiet):
                return await action()
        except Violation as v:
            raise v.error from None

    async def close(self) -> None:
        if self.workers is not None:
            await self.workers.kill()
        if self.store_kind == "sqlite" and self._opened:
            await self.inner.close()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    async def run(self, until: datetime | timedelta) -> SimulationResult:
        """Simulate from the start to ``until``, then drain without faults or arrivals
        until every job has ended (I8), check everything, and report."""
        end = self.start + until if isinstance(until, timedelta) else until.astimezone(UTC)
        if end <= self.start:
            raise ValueError("a simulation must end after it starts")
        self._end = end
        with paced_collector():
            await self.open()
            try:
                self.agenda.plan(end)
                await self.boot()
                await self._public(lambda: self._loop(end))
                await self.drain()
            finally:
                await self.close()
            return self.result()

    def _widths(self, jobs: Sequence[JobReport]) -> dict[str, int]:
        """Each plugin's lane width, as the engine last saw it (1 once it is gone)."""
        lanes = self.engine.runtime.lanes() if self.engine is not None else None
        return {j.plugin: (lanes.width(j.plugin) if lanes else None) or 1 for j in jobs}

    def result(self) -> SimulationResult:
        """What the run did, as the monitor saw it (after :meth:`run`, or at any point between steps)."""
        jobs = tuple(job_report(t) for t in self.monitor.jobs.values())
        return SimulationResult(
            seed=self.seed,
            store=self.store_kind,
            start=self.start,
            end=self._end or self.clock.now(),
            finished=self.clock.now(),
            trace=tuple(self.trace),
            trace_hash=trace_hash(self.trace),
            jobs=jobs,
            events=tuple(self.monitor.events),
            stats=plugin_stats(jobs, self._widths(jobs), (self.clock.now() - self.start).total_seconds()),
            crashes=self.crashes,
            checks=self.monitor.checks,
            calls=self.switch.calls,
            config=self.config,
        )
