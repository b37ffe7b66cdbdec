"""The simulation: the real engine on fakes, driven step by step by one seed."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import heapq
import json
import logging
import random
import shutil
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

import attrs

from ductile.app.engine import Engine, EnqueueRefusedError
from ductile.app.sim.behaviour import GARBAGE, Behaviour, Kind, behaviour_for
from ductile.app.sim.catalog import SimCatalog
from ductile.app.sim.faults import (
    CRASH_POINTS,
    NO_ARRIVALS,
    NO_FAULTS,
    Arrivals,
    CrashPoint,
    Faults,
    Reload,
    SimulatedCrash,
)
from ductile.app.sim.invariants import INVARIANTS, Expectation, InvariantError, Violation, backoff_bound
from ductile.app.sim.monitor import Monitor
from ductile.app.sim.proxies import CrashSwitch, ObservedSpawner, ObservedStore, ScriptingCatalog
from ductile.app.sim.results import JobReport, SimulationResult, plugin_stats
from ductile.app.sim.trace import ref, stamp
from ductile.domain.config import KILL_GRACE, Config, Endpoint, Timeouts
from ductile.domain.job import TERMINAL, Command, Job, SubmittedBy
from ductile.domain.outcome import SpawnOutcome
from ductile.domain.protocol import EmittedEvent
from ductile.domain.routing import Route, event_id_for
from ductile.fakes import FakeClock, FakeInbox, InMemoryStore, ScriptedSpawner
from ductile.fakes.indexed_store import IndexedMemoryStore
from ductile.ports.spawner import SpawnRequest
from ductile.ports.store import EnqueueResult, Store

T = TypeVar("T")

#: Where a simulation starts unless told: a Friday before Europe's spring-forward
#: weekend, so a two-day run crosses a DST change in Europe/Berlin.
DEFAULT_START = datetime(2026, 3, 27, 0, 0, tzinfo=UTC)

#: A loop that makes no progress this many times in a row is stuck (an engine bug).
STALL_LIMIT = 1000


@attrs.define(eq=False)
class _Item:
    """Something due at an instant: an arrival or a reload."""

    kind: Literal["webhook", "cli", "reload"]
    data: Any = None


@contextlib.contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """Silence the engine's log while simulating (its lines would be the daemon's)."""
    logger = logging.getLogger("ductile")
    before = logger.disabled
    logger.disabled = enabled or before
    try:
        yield
    finally:
        logger.disabled = before


#: Collector thresholds while a run lasts: a run allocates millions of small objects and keeps most
#: of them (the ledger, the store, the trace), so at the default 700 the young collections keep
#: re-examining survivors; 30 simulated days ran ~20% faster with these. Cycles are still collected.
RUN_GC_THRESHOLD = (100_000, 50, 1000)


@contextlib.contextmanager
def _paced_collector() -> Iterator[None]:
    """Raise the collector's thresholds (never lower them) for a run; restore them after."""
    before = gc.get_threshold()
    gc.set_threshold(*(max(mine, theirs) for mine, theirs in zip(RUN_GC_THRESHOLD, before, strict=False)))
    try:
        yield
    finally:
        gc.set_threshold(*before)


#: ``memory``: the InMemoryStore fake as it is; ``indexed``: the same with indexes
#: (:class:`IndexedMemoryStore`, for long runs); ``sqlite``: the real adapter on a temp file.
StoreKind = Literal["memory", "indexed", "sqlite"]

STORE_KINDS: tuple[StoreKind, ...] = ("memory", "indexed", "sqlite")


class Simulation:
    """The engine on fakes, one seed, faults and invariants. See the module's docs.

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
    ) -> None:
        """``memory_store``: use this InMemoryStore (a test plants a bug in one)."""
        if store not in STORE_KINDS:
            raise ValueError(f"store must be one of {', '.join(STORE_KINDS)}, not {store!r}")
        if start.tzinfo is None:
            raise ValueError("the simulation's start must be an aware datetime")
        self.config = config
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
        self.spawner = ScriptedSpawner(clock=self.clock)
        self.switch = CrashSwitch(self)
        self.monitor = Monitor(self)
        self.replay = replay or f"python -m ductile.app.sim --seed {seed}"
        self.quiet = quiet
        self.trace: list[str] = []
        self.crashes = 0
        self.engine: Engine | None = None
        if memory_store is not None and store == "sqlite":
            raise ValueError("memory_store goes with store='memory' or 'indexed'")
        self.inner: Store = memory_store or (IndexedMemoryStore() if store == "indexed" else InMemoryStore())
        self._directory: Path | None = None
        self._opened = False
        self._faults_on = True
        self._faults_until: datetime | None = self.start + faults.until if faults.until is not None else None
        self._armed: tuple[int, CrashPoint] | None = None
        self._may_crash = faults.crash_at is not None or bool(faults.crash_rate)
        self._texts: dict[int, tuple[Behaviour, str]] = {}
        self._auto_emit: tuple[tuple[Route, ...], dict[str, tuple[str, ...]]] = (config.routes, {})
        self._forced: list[Behaviour] = []
        self._agenda: list[tuple[datetime, int, _Item]] = []
        self._seq = 0
        self._next_tick = self.start
        self._idle = False
        self._webhooks_sent = 0
        self._keys: list[str] = []
        self._end: datetime | None = None
        self._last_crash = self.start

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

    def crash_decision(self, index: int) -> CrashPoint | None:
        if self._armed is not None and self._armed[0] == index:
            point = self._armed[1]
            self._armed = None
            return point
        if not self._may_crash:  # neither crash_at nor crash_rate: nothing below can fire or draw
            return None
        if not self._faults_active():
            return None
        if self.faults.crash_at == index:
            return self.faults.crash_point
        if self.faults.crash_rate and self.rng.random() < self.faults.crash_rate:
            return self.rng.choice(CRASH_POINTS)
        return None

    def _faults_active(self) -> bool:
        if not self._faults_on or self.crashes >= self.faults.max_crashes:
            return False
        now = self.clock.now()
        if self.faults.spacing and now < self._last_crash + self.faults.spacing:
            return False
        return self._faults_until is None or now < self._faults_until

    def script_for(self, plugin: str) -> Callable[[SpawnRequest], SpawnOutcome]:
        def run(request: SpawnRequest) -> SpawnOutcome:
            return self._perform(plugin, request)

        return run

    def auto_emit(self, plugin: str) -> tuple[str, ...]:
        """The event types the plugin's routes listen for (the default of ``ok``)."""
        routes, cache = self._auto_emit
        if routes is not self.config.routes:  # a reload: derive again
            routes, cache = self.config.routes, {}
            self._auto_emit = (routes, cache)
        found = cache.get(plugin)
        if found is None:
            found = cache[plugin] = tuple(sorted({r.event_type for r in routes if r.source == plugin}))
        return found

    def _perform(self, plugin: str, request: SpawnRequest) -> SpawnOutcome:
        body = json.loads(request.stdin)
        command = str(body["command"])
        job_id = str(body["job_id"])
        attempt = int(request.env.get("DUCTILE_ATTEMPT", "0"))
        behaviour = self._forced.pop(0) if self._forced else behaviour_for(self.behaviours, plugin, command)
        state = body.get("state") or {}
        outcome, expectation = self._outcome(plugin, command, behaviour, state, request.timeout)
        self.monitor.on_spawned(job_id, attempt, expectation)
        self.note(f"run {ref(job_id)} {plugin}.{command} [{expectation.behaviour}] -> {expectation.verdict}")
        return outcome

    def _outcome(
        self, plugin: str, command: str, behaviour: Behaviour, state: Mapping[str, Any], timeout: float
    ) -> tuple[SpawnOutcome, Expectation]:
        took = behaviour.duration.total_seconds()
        kind = behaviour.kind
        known = self._texts.get(id(behaviour))
        if known is None or known[0] is not behaviour:  # str() once per behaviour, not per run
            known = self._texts[id(behaviour)] = (behaviour, str(behaviour))
        text = known[1]
        if kind is Kind.TIMEOUT:
            return SpawnOutcome(timed_out=True, duration=timeout), Expectation("retryable", behaviour=text)
        if kind is Kind.EXIT78:
            outcome = SpawnOutcome(
                exit_code=78, stderr_tail=b"simulated: exit 78 (EX_CONFIG)\n", duration=took
            )
            return outcome, Expectation("fatal", behaviour=text)
        if kind is Kind.GARBAGE:
            outcome = SpawnOutcome(exit_code=0, stdout=self.rng.choice(GARBAGE), duration=took)
            return outcome, Expectation("retryable", behaviour=text)
        failing = kind is Kind.ERROR or (kind is Kind.FLAKY and self.rng.random() < behaviour.rate)
        if failing:
            fatal = kind is Kind.ERROR and behaviour.fatal
            body: dict[str, Any] = {
                "status": "error",
                "error": f"simulated {kind} failure",
                "retry": not fatal,
            }
            outcome = SpawnOutcome(exit_code=0, stdout=json.dumps(body).encode(), duration=took)
            verdict: Literal["ok", "retryable", "fatal"] = "fatal" if fatal else "retryable"
            if took > timeout:
                verdict = "retryable"
            return outcome, Expectation(verdict, behaviour=text)
        body = {"status": "ok"}
        events: tuple[EmittedEvent, ...] = ()
        if command != Command.INIT:
            count = state.get("count", 0)
            count = count + 1 if isinstance(count, int) else 1
            if behaviour.emit is not None:
                types = behaviour.emit
            else:  # by default only polls emit: a handler that re-emitted could loop forever
                types = self.auto_emit(plugin) if command == Command.POLL else ()
            events = tuple(
                EmittedEvent(
                    type=t,
                    payload={"n": count},
                    dedupe_key=f"{t}-{count // behaviour.dedupe}" if behaviour.dedupe else None,
                )
                for t in types
            )
            body["state_updates"] = {"count": count}
            body["events"] = [
                {
                    "type": e.type,
                    "payload": e.payload,
                    **({"dedupe_key": e.dedupe_key} if e.dedupe_key else {}),
                }
                for e in events
            ]
        outcome = SpawnOutcome(exit_code=0, stdout=json.dumps(body).encode(), duration=took)
        if took > timeout:  # the spawner kills it at the deadline: a timeout, whatever it would have said
            return outcome, Expectation("retryable", behaviour=text)
        return outcome, Expectation("ok", events=events, behaviour=text)

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
        from ductile.adapters.sqlite_store import SqliteStore

        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="ductile-sim-"))
        # A simulated kill -9 loses no committed unit in any synchronous mode (PITFALLS);
        # OFF only spares the disk.
        return await SqliteStore.open(self._directory / "ductile.db", synchronous="OFF")

    # ------------------------------------------------------------- steps
    async def _step(
        self, action: Callable[[], Awaitable[None]], *, retry: Callable[[], None] | None = None
    ) -> bool:
        """Run one step; a crash inside it restarts the process. True when it completed."""
        try:
            await action()
        except SimulatedCrash as crash:
            if retry is not None:
                retry()
            await self._restart(crash)
            return False
        self.monitor.after_step()
        return True

    async def _restart(self, crash: SimulatedCrash | None) -> None:
        """kill -9 and start again: a new engine on the same store; ``start()`` recovers."""
        while True:
            self.crashes += 1
            self._last_crash = self.clock.now()
            self.engine = None
            what = f"{crash.point} call {crash.call} ({crash.name})" if crash is not None else "while idle"
            self.note(f"crash {what}")
            self.monitor.event("crash", None, f"simulated crash {what}")
            if self.store_kind == "sqlite":
                await self.inner.close()
                self.inner = await self._open_store()
            if self.faults.downtime and self._faults_active():
                self.clock.advance(self.faults.downtime * self.rng.random())
            self.note("restart")
            try:
                self.engine = self._new_engine()
                await self.engine.start()
            except SimulatedCrash as again:
                crash = again
                continue
            break
        self._next_tick = self.clock.now()
        self._idle = False
        await self.monitor.full_check()
        self.monitor.after_step()

    async def _tick_action(self) -> None:
        assert self.engine is not None
        self._next_tick = await self.engine.tick()

    async def _dispatch_action(self) -> None:
        assert self.engine is not None
        self._idle = not await self.engine.dispatch_one()

    def _push(self, at: datetime, item: _Item) -> None:
        self._seq += 1
        heapq.heappush(self._agenda, (at, self._seq, item))

    async def _apply_next(self) -> None:
        _, _, item = heapq.heappop(self._agenda)
        self._idle = False
        if item.kind == "reload":
            await self._step(lambda: self._reload_action(item))
        else:
            await self._step(lambda: self._arrive(item), retry=lambda: self._push(self.clock.now(), item))

    async def _reload_action(self, item: _Item) -> None:
        if not isinstance(item.data, tuple):
            reload: Reload = item.data
            item.data = reload.choices[self.rng.randrange(len(reload.choices))]
        label, config = item.data
        await self._reload_to(config, label)

    async def _reload_to(self, config: Config, label: str) -> None:
        assert self.engine is not None
        self.config = config  # the operator edited the file first: a restart reads the new one
        self.note(f"reload {label}")
        self.monitor.event("reload", None, f"configuration reloaded: {label}")
        await self.engine.reload(config)

    async def _arrive(self, item: _Item) -> None:
        assert self.engine is not None
        if item.kind == "webhook":
            hooks = self.config.webhooks
            endpoints = hooks.endpoints if hooks is not None else ()
            if item.data is None:
                if not endpoints:
                    self.note("webhook dropped: no endpoint configured")
                    return
                endpoint = endpoints[self.rng.randrange(len(endpoints))]
                key = None
                if self.rng.random() < self.arrivals.keyed:
                    if self._keys and self.rng.random() < self.arrivals.redeliver:
                        key = self._keys[self.rng.randrange(len(self._keys))]
                    else:
                        key = f"delivery-{len(self._keys) + 1}"
                        self._keys.append(key)
                self._webhooks_sent += 1
                item.data = (endpoint.path, key, self._webhooks_sent)
            path, key, number = item.data
            found = next((e for e in endpoints if e.path == path), None)
            if found is None:
                self.note(f"webhook {path} -> 404 (endpoint gone)")
                return
            await self._deliver(found, key, number)
        else:
            if item.data is None:
                names = sorted(n for n, p in self.config.plugins.items() if p.schedule is not None) or sorted(
                    self.config.plugins
                )
                if not names:
                    return
                item.data = names[self.rng.randrange(len(names))]
            try:
                result = await self.engine.enqueue(
                    item.data, command=Command.POLL, submitted_by=SubmittedBy.CLI
                )
            except EnqueueRefusedError as e:
                self.note(f"cli run {item.data} refused: {e}")
                return
            self.monitor.ack(result.job_id, "cli")

    async def _deliver(self, endpoint: Endpoint, key: str | None, number: int) -> None:
        assert self.engine is not None
        now = self.clock.now()
        event: dict[str, Any] = {
            "type": endpoint.event_type,
            "payload": {"delivery": number},
            "headers": {},
            "source": f"webhook:{endpoint.path}",
            "timestamp": stamp(now),
            "event_id": event_id_for(f"webhook:{self.new_id()}", 0),
        }
        if key is not None:
            event["dedupe_key"] = key
        result = await self.engine.enqueue(
            endpoint.plugin,
            command=Command.HANDLE,
            payload=event,
            dedupe_key=key,
            submitted_by=SubmittedBy.WEBHOOK,
            strict=False,
        )
        self.monitor.ack(result.job_id, "webhook")

    async def _next_retry(self) -> datetime | None:
        return await self.inner.next_retry_at()

    async def _loop(self, end: datetime | None) -> None:
        """Tick when due, apply what arrived, dispatch until idle, jump to the next
        instant anything can happen. ``end`` None: drain until every pending job ended."""
        stall = 0
        while True:
            now = self.clock.now()
            if end is not None and now >= end:
                return
            if end is None and all(
                self.monitor.jobs[i].job.status in TERMINAL for i in self.monitor.deadlines
            ):
                return
            stall += 1
            if stall > STALL_LIMIT:
                raise Violation(
                    self.violation("I8", f"no progress after {STALL_LIMIT} steps at {stamp(now)}")
                )
            if now >= self._next_tick:
                await self._step(self._tick_action)
                continue
            if self._agenda and self._agenda[0][0] <= now:
                await self._apply_next()
                continue
            if not self._idle:
                worked = await self._step(self._dispatch_action) and not self._idle
                if worked:
                    stall = 0
                continue
            candidates = [self._next_tick]
            retry_at = await self._next_retry()
            if retry_at is not None:
                candidates.append(retry_at)
            if self._agenda:
                candidates.append(self._agenda[0][0])
            if end is not None:
                candidates.append(end)
            target = min(candidates)
            if target > now:
                self.clock.set(target)
                stall = 0
            self._idle = False

    def _plan_agenda(self, end: datetime) -> None:
        span = end - self.start
        streams = (("webhook", self.arrivals.webhooks_per_day), ("cli", self.arrivals.cli_per_day))
        for kind, per_day in streams:
            if per_day <= 0:
                continue
            at = self.start
            while True:
                at += timedelta(seconds=self.rng.expovariate(per_day / 86400.0))
                if at >= end:
                    break
                self._push(at, _Item(kind=kind))  # type: ignore[arg-type]
        for reload in self.reloads:
            offset = reload.at if reload.at is not None else span * (0.1 + 0.8 * self.rng.random())
            self._push(self.start + offset, _Item(kind="reload", data=reload))

    def _deadlines(self) -> dict[str, datetime]:
        """I8: for each unfinished job, when it must have ended at the latest."""
        stop = self.clock.now()
        pending = [
            t.job for t in self.monitor.jobs.values() if not t.deleted and t.job.status not in TERMINAL
        ]
        grace = KILL_GRACE
        timeouts = [self.config.plugin(name).timeouts for name in self.config.plugins] + [Timeouts()]
        longest = max(max(t.poll, t.handle, t.health, t.init) for t in timeouts)

        def left(job: Job) -> int:
            return job.max_attempts - job.attempt + 1

        def timeout(job: Job) -> timedelta:
            return self.config.plugin(job.plugin).timeouts.for_command(job.command)

        ahead = sum((left(j) * (timeout(j) + grace) for j in pending), timedelta(0))
        out = {}
        for job in pending:
            policy = self.config.plugin(job.plugin).retry
            waits = sum(
                (backoff_bound(policy, n) for n in range(job.attempt, job.max_attempts)), timedelta(0)
            )
            begin = max(stop, job.next_retry_at or stop)
            out[job.id] = begin + ahead + waits + left(job) * (longest + grace)
        return out

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
            with _quiet(self.quiet):
                self.engine = self._new_engine()
                try:
                    await self.engine.start()
                except SimulatedCrash as crash:
                    await self._restart(crash)
                self.monitor.after_step()
                self._next_tick = self.clock.now()
        except Violation as v:
            raise v.error from None

    async def tick(self) -> None:
        await self._public(lambda: self._step(self._tick_action))

    async def dispatch(self, behaviour: Behaviour | None = None) -> bool:
        """Run the oldest runnable job (the next spawn follows ``behaviour`` if given).
        True when a job was taken (False when idle or a crash cut the step short)."""
        if behaviour is not None:
            self._forced = [behaviour]
        completed = await self._public(lambda: self._step(self._dispatch_action))
        self._forced = []
        return completed and not self._idle

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

        await self._public(lambda: self._step(action))
        return answer[0] if answer else None

    async def reload(self, config: Config, label: str = "reload") -> None:
        await self._public(lambda: self._step(lambda: self._reload_to(config, label)))

    async def crash(self) -> None:
        """kill -9 between steps, and restart."""
        await self._public(lambda: self._restart(None))

    def advance(self, delta: timedelta) -> None:
        """Let simulated time pass (nothing runs meanwhile)."""
        self.clock.advance(delta)
        self._idle = False

    def arm_crash(self, calls_from_now: int, point: CrashPoint) -> None:
        """Crash at the ``calls_from_now``-th port call from now (1: the next one)."""
        self._armed = (self.switch.calls + calls_from_now, point)

    def disarm(self) -> None:
        self._armed = None

    async def drain(self) -> None:
        """Stop faults and arrivals, then run until every unfinished job has ended,
        each before its I8 deadline; then check everything."""
        self._faults_on = False
        self._armed = None
        dropped = len(self._agenda)
        self._agenda = []
        dropped_text = f", {dropped} pending arrival(s) dropped" if dropped else ""
        self.note(f"end of run: faults off{dropped_text}; draining")
        self.monitor.deadlines = self._deadlines()
        await self._public(lambda: self._loop(None))
        self.monitor.deadlines = {}
        await self.check()

    async def check(self) -> None:
        """Every invariant against the whole store, now."""
        await self._public(self.monitor.full_check)

    async def _public(self, action: Callable[[], Awaitable[T]]) -> T:
        try:
            with _quiet(self.quiet):
                return await action()
        except Violation as v:
            raise v.error from None

    async def close(self) -> None:
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
        with _paced_collector():
            await self.open()
            try:
                self._plan_agenda(end)
                await self.boot()
                await self._public(lambda: self._loop(end))
                await self.drain()
            finally:
                await self.close()
            return self.result()

    def result(self) -> SimulationResult:
        jobs = tuple(
            JobReport(
                id=t.job.id,
                plugin=t.job.plugin,
                command=t.job.command,
                submitted_by=t.job.submitted_by,
                status=t.job.status,
                attempt=t.job.attempt,
                max_attempts=t.job.max_attempts,
                created_at=t.job.created_at,
                completed_at=t.job.completed_at,
                last_error=t.job.last_error,
                dedupe_key=t.job.dedupe_key,
                parent_job_id=t.job.parent_job_id,
                event_type=t.job.payload.get("type") if t.job.command == Command.HANDLE else None,
                plan=t.plan,
                runs=tuple(t.runs),
                children=tuple(t.children),
                waits=tuple(t.waits),
                deleted=t.deleted,
            )
            for t in self.monitor.jobs.values()
        )
        digest = hashlib.sha256("\n".join(self.trace).encode()).hexdigest()
        return SimulationResult(
            seed=self.seed,
            store=self.store_kind,
            start=self.start,
            end=self._end or self.clock.now(),
            finished=self.clock.now(),
            trace=tuple(self.trace),
            trace_hash=digest,
            jobs=jobs,
            events=tuple(self.monitor.events),
            stats=plugin_stats(jobs),
            crashes=self.crashes,
            checks=self.monitor.checks,
            calls=self.switch.calls,
            config=self.config,
        )
