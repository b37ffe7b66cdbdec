"""Crash at every port call, on real SQLite: nothing acknowledged is lost, nothing runs wild.

One canonical flow (the engine the daemon runs, on a real :class:`SqliteStore`
file, a :class:`ScriptedSpawner` and a :class:`FakeClock`):

    start -> enqueue "p" (dedupe key) -> tick -> claim p -> get_state -> spawn p
    (on_start: record_process) -> settle p (state {"count": n+1} merged, one
    event routed to h1, h2, h3: three children; claims h1 in the same unit, as
    the daemon's worker does, ADR 0068) -> each child: spawn, settle (claiming
    the next).

Every call the engine makes on the Store or the Spawner goes through a
:class:`Ports` proxy that numbers it. The uncrashed flow is measured first
(``N`` calls); then, for each index ``k`` and each variant, the flow is run
again with a :class:`SimulatedCrash` raised at call ``k``:

* ``before``: the call never happened (the process died just before it);
* ``after``: the call happened (committed, or the plugin ran) but the caller
  never learned of it.

``SimulatedCrash`` is a ``BaseException``, so no ``except Exception`` of the
engine can swallow it: like ``kill -9``, the process just stops. The engine is
then abandoned, its SqliteStore closed (a process kill loses no committed unit;
nothing was in flight), the file reopened by a fresh store and a fresh engine
whose ``start()`` runs crash recovery, the client re-submits its enqueue if it
was never acknowledged (same dedupe key: at-least-once intake), and the
engine drains until quiescent. :func:`violations` then checks the invariants;
every index must pass.

A second sweep crashes twice: at every call of the first life and, for each,
at every call of the recovering life (a crash during crash recovery).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import random
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from contextlib import closing
from pathlib import Path
from typing import Any, Literal, cast

import attrs
import pytest

from ductile.adapters.sqlite import SqliteStore
from ductile.app.engine import Engine
from ductile.domain.config import Config, PluginConfig
from ductile.domain.job import TERMINAL, TRANSIENT, TRANSITIONS, Actor, Job, JobStatus
from ductile.domain.outcome import SpawnOutcome
from ductile.domain.retry import RetryPolicy
from ductile.domain.routing import event_id_for
from ductile.fakes import FakeClock, FakeInbox, ScriptedSpawner
from ductile.fakes.catalog import DictCatalog
from ductile.fakes.spawner import ok
from ductile.ports.spawner import Spawner, SpawnRequest
from ductile.ports.store import Store
from tests.support.builders import executable, make_config, manifest, route
from tests.support.rigs import T0

Variant = Literal["before", "after"]
VARIANTS: tuple[Variant, ...] = ("before", "after")

PARENT = "p"
HANDLERS = ("h1", "h2", "h3")
DEDUPE_KEY = "order-42"
EVENT_TYPE = "order.paid"
MAX_ATTEMPTS = 4
#: Legal moves of the machine, as (from, to) pairs of the transition log.
LEGAL_MOVES = frozenset((src, dst) for (src, _), dst in TRANSITIONS.items())
#: Port methods the canonical flow must exercise for the sweep to mean anything.
EXPECTED_CALLS = {
    "store.running",
    "store.recover",
    "store.enqueue",
    "store.claim_next",
    "store.get_state",
    "spawner.run",
    "store.record_process",
    "store.settle",
}


class SimulatedCrash(BaseException):
    """The process died here. A BaseException: ``except Exception`` cannot swallow it."""


@attrs.frozen
class Crash:
    at: int
    when: Variant

    def __str__(self) -> str:
        return f"{self.when}#{self.at}"


# --------------------------------------------------------------------------- the counting proxy


class Ports:
    """Numbers every call the engine makes on its Store and Spawner; raises
    :class:`SimulatedCrash` at the planned one."""

    def __init__(self, crash: Crash | None) -> None:
        self.crash = crash
        self.calls: list[str] = []

    def wrap(self, port: str, target: object) -> Any:
        return _Proxy(self, port, target)

    async def call(self, name: str, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        index = len(self.calls)
        self.calls.append(name)
        if self.crash is not None and self.crash == Crash(index, "before"):
            raise SimulatedCrash(f"crash before {name} (call {index})")
        result = await fn(*args, **kwargs)
        if self.crash is not None and self.crash == Crash(index, "after"):
            raise SimulatedCrash(f"crash after {name} (call {index})")
        return result


class _Proxy:
    def __init__(self, ports: Ports, port: str, target: object) -> None:
        self._ports = ports
        self._port = port
        self._target = target

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._ports.call(f"{self._port}.{name}", attr, *args, **kwargs)

        return call


# --------------------------------------------------------------------------- the world that outlives crashes


def config() -> Config:
    retry = RetryPolicy(max_attempts=MAX_ATTEMPTS)
    return make_config(
        PluginConfig(name=PARENT, retry=retry),
        *(PluginConfig(name=h, retry=retry) for h in HANDLERS),
        routes=[route(PARENT, EVENT_TYPE, h) for h in HANDLERS],
    )


def catalog() -> DictCatalog:
    return DictCatalog(manifest(PARENT, "poll"), *(manifest(h, "handle") for h in HANDLERS))


class World:
    """Everything that survives a crash: the database file, the clock, the plugins'
    own record of their executions, and what the client was told."""

    def __init__(self, db: Path, store_class: type[SqliteStore] = SqliteStore) -> None:
        self.db = db
        self.store_class = store_class
        self.clock = FakeClock(T0)
        self.spawner = ScriptedSpawner(clock=self.clock)
        self.catalog = catalog()
        self.config = config()
        self.ids = itertools.count(1)
        #: Executions per plugin: (job id, attempt) each time a plugin process really ran.
        self.executions: dict[str, list[tuple[str, int]]] = {name: [] for name in (PARENT, *HANDLERS)}
        #: The job id the client got back from its enqueue (None: never acknowledged).
        self.acked: str | None = None
        self.submissions = 0
        for name in (PARENT, *HANDLERS):
            self.spawner.script(executable(name), self._script(name))

    def _script(self, name: str) -> Callable[[SpawnRequest], SpawnOutcome]:
        def run(request: SpawnRequest) -> SpawnOutcome:
            body = json.loads(request.stdin)
            self.executions[name].append((body["job_id"], int(request.env["DUCTILE_ATTEMPT"])))
            count = int(body["state"].get("count", 0))
            events = []
            if name == PARENT:
                events = [{"type": EVENT_TYPE, "payload": {"order": 42, "seen": count}}]
            return ok(state_updates={"count": count + 1}, events=events)

        return run

    def new_id(self) -> str:
        return f"job-{next(self.ids):04d}"


async def drain(engine: Engine, raw: Store, clock: FakeClock) -> None:
    """What the daemon's loops do: tick, claim and run until idle, each settle claiming the next
    job in its own unit (the daemon's worker, ADR 0068), wait for retry times."""
    for _ in range(50):
        await engine.tick()
        claimed = await engine.claim_one()
        while claimed is not None:
            claimed = await engine.run_claimed(claimed, chain=True)
        if await raw.queue_depth() == 0:
            return
        due = await raw.next_retry_at()
        assert due is not None, "jobs are queued and due, yet dispatch_one found nothing to claim"
        clock.set(max(due, clock.now()))
    raise AssertionError("the engine did not become quiescent")


async def life(world: World, crash: Crash | None) -> tuple[list[str], bool]:
    """One process lifetime: open, recover, (re-)submit, drain; or die at ``crash``.

    Returns the numbered calls and whether it crashed.
    """
    store = await world.store_class.open(world.db)
    ports = Ports(crash)
    engine = Engine(
        config=world.config,
        store=cast(Store, ports.wrap("store", store)),
        spawner=cast(Spawner, ports.wrap("spawner", world.spawner)),
        clock=world.clock,
        inbox=FakeInbox(world.clock),
        catalog=world.catalog,
        draw=lambda: 0.5,
        new_id=world.new_id,
        environ={"PATH": "/usr/bin:/bin"},
    )
    crashed = False
    try:
        await engine.start()
        if world.acked is None:
            # The client retries until acknowledged; the dedupe key makes the retry safe.
            world.submissions += 1
            result = await engine.enqueue(PARENT, command="poll", dedupe_key=DEDUPE_KEY)
            world.acked = result.job_id
        await drain(engine, store, world.clock)
    except SimulatedCrash:
        crashed = True
    finally:
        # kill -9: the engine is gone; every unit it had committed is in the file,
        # and nothing was in flight (the crash happened between port calls).
        await store.close()
    return ports.calls, crashed


async def scenario(world: World, crashes: Iterable[Crash]) -> tuple[list[list[str]], int]:
    """Lives with the given crashes, then one clean life. Returns the calls of every
    life and the number of crashes that really happened."""
    calls: list[list[str]] = []
    happened = 0
    for crash in crashes:
        made, crashed = await life(world, crash)
        calls.append(made)
        happened += crashed
    made, crashed = await life(world, None)
    assert not crashed
    calls.append(made)
    return calls, happened


# --------------------------------------------------------------------------- the invariants


def transition_problems(job: Job, log: list[tuple[str | None, str, str, str]]) -> list[str]:
    """The job's history must be one legal walk of the machine ending at its status."""
    problems: list[str] = []
    if not log or log[0][0] is not None or log[0][1] != JobStatus.QUEUED.value:
        problems.append(f"{job.id}: history does not start with a creation line: {log[:1]}")
        return problems
    for i, (src, dst, _, at) in enumerate(log[1:], start=1):
        prev_dst = log[i - 1][1]
        if src != prev_dst:
            problems.append(f"{job.id}: line {i} moves from {src} but the job was {prev_dst}")
        if src is None or (JobStatus(src), JobStatus(dst)) not in LEGAL_MOVES:
            problems.append(f"{job.id}: line {i} {src} -> {dst} is not a legal move")
        if src is not None and JobStatus(src) in TRANSIENT and at != log[i - 1][3]:
            problems.append(f"{job.id}: rested in {src} (left at {at}, entered at {log[i - 1][3]})")
    if JobStatus(log[-1][1]) in TRANSIENT:
        problems.append(f"{job.id}: history ends in transient {log[-1][1]}")
    if log[-1][1] != job.status.value:
        problems.append(f"{job.id}: row says {job.status.value}, history ends at {log[-1][1]}")
    return problems


def integrity_problems(db: Path) -> list[str]:
    with closing(sqlite3.connect(db)) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchall()
    return [] if integrity == [("ok",)] else [f"integrity_check: {integrity}"]


async def leftover_problems(store: SqliteStore, jobs: dict[str, Job]) -> list[str]:
    """Nothing is left running or queued."""
    problems: list[str] = []
    running = [j.id for j in jobs.values() if j.status is JobStatus.RUNNING]
    if running:
        problems.append(f"jobs left running: {running}")
    if await store.queue_depth():
        problems.append(f"jobs left queued: {await store.queue_depth()}")
    return problems


def client_job_problems(world: World, parents: list[Job], jobs: dict[str, Job]) -> list[str]:
    """The client's job: acknowledged, present, the only one of its identity."""
    problems: list[str] = []
    if world.acked is None:
        problems.append("the enqueue was never acknowledged")
    elif world.acked not in jobs:
        problems.append(f"the acknowledged job {world.acked} is not in the store")
    if len(parents) != 1:
        problems.append(
            f"{len(parents)} jobs of {PARENT!r} (one dedupe key): {sorted(p.id for p in parents)}"
        )
    if parents and world.acked is not None and parents[0].id != world.acked:
        problems.append(f"the client was told {world.acked}, the store holds {parents[0].id}")
    return problems


async def job_problems(store: SqliteStore, job: Job, crashes: int) -> list[str]:
    """One job: a legal history, attempts within bounds, one run record per attempt."""
    log = [
        (t.from_status and t.from_status.value, t.to_status.value, t.actor.value, t.at.isoformat())
        for t in await store.transitions(job.id)
    ]
    problems = transition_problems(job, log)
    if job.status not in TERMINAL:
        problems.append(f"{job.id} ({job.plugin}) ended {job.status.value}, not terminal")
    elif job.status is not JobStatus.SUCCEEDED:
        problems.append(f"{job.id} ({job.plugin}) is {job.status.value}: {job.last_error}")
    if job.attempt > job.max_attempts:
        problems.append(f"{job.id}: attempt {job.attempt} > max_attempts {job.max_attempts}")
    if job.attempt > crashes + 1:
        problems.append(f"{job.id}: attempt {job.attempt} after only {crashes} crash(es)")
    recoveries = sum(1 for line in log if line[2] == Actor.RECOVERY.value)
    if recoveries > crashes:
        problems.append(f"{job.id}: {recoveries} recovery moves after {crashes} crash(es)")
    runs = await store.runs(job.id)
    if job.status in TERMINAL and len(runs) != job.attempt:
        problems.append(f"{job.id}: {len(runs)} run records for {job.attempt} attempt(s)")
    succeeded_runs = [r for r in runs if r.error is None]
    if len(succeeded_runs) != (1 if job.status is JobStatus.SUCCEEDED else 0):
        problems.append(f"{job.id}: {len(succeeded_runs)} successful run records")
    return problems


async def state_problems(store: SqliteStore, world: World, jobs: dict[str, Job], crashes: int) -> list[str]:
    """State merged exactly with the success: count == successful runs of the plugin."""
    problems: list[str] = []
    for name in (PARENT, *HANDLERS):
        successes = 0
        for j in (j for j in jobs.values() if j.plugin == name):
            successes += sum(1 for r in await store.runs(j.id) if r.error is None)
        state = await store.get_state(name)
        if state.get("count", 0) != successes:
            problems.append(f"{name}: state count {state.get('count')} != {successes} successful run(s)")
        executed = len(world.executions[name])
        if executed > crashes + 1:
            problems.append(f"{name} executed {executed} times with {crashes} crash(es)")
        if successes and executed < 1:
            problems.append(f"{name} succeeded without ever running")
    return problems


def children_problems(jobs: dict[str, Job], parent: Job) -> list[str]:
    """Children: one per route, linked to the parent and its one event."""
    problems: list[str] = []
    children = [j for j in jobs.values() if j.parent_job_id is not None]
    by_plugin = sorted(c.plugin for c in children)
    if by_plugin != sorted(HANDLERS):
        problems.append(f"children {by_plugin}, expected one per route {sorted(HANDLERS)}")
    if len(jobs) != 1 + len(HANDLERS):
        problems.append(f"{len(jobs)} jobs in all, expected {1 + len(HANDLERS)}")
    event_id = event_id_for(parent.id, 0)
    for child in children:
        if child.parent_job_id != parent.id or child.source_event_id != event_id:
            problems.append(
                f"{child.id}: parent {child.parent_job_id}/{child.source_event_id}, "
                f"expected {parent.id}/{event_id}"
            )
        if child.command != "handle" or child.payload.get("source") != PARENT:
            problems.append(f"{child.id}: {child.command} of event {child.payload}")
    return problems


async def violations(world: World, crashes: int) -> list[str]:
    """Everything wrong with the database and the plugins' record after a scenario."""
    problems = integrity_problems(world.db)
    store = await SqliteStore.open(world.db)
    try:
        jobs = {j.id: j for j in await store.list_jobs(limit=1000)}
        problems += await leftover_problems(store, jobs)
        parents = [j for j in jobs.values() if j.plugin == PARENT]
        problems += client_job_problems(world, parents, jobs)
        if not parents:
            return problems
        for job in jobs.values():
            problems += await job_problems(store, job, crashes)
        problems += await state_problems(store, world, jobs, crashes)
        problems += children_problems(jobs, parents[0])
    finally:
        await store.close()
    return problems


# --------------------------------------------------------------------------- running sweeps


def reset(db: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)


async def run_one(db: Path, crashes: list[Crash], store_class: type[SqliteStore] = SqliteStore) -> list[str]:
    reset(db)
    world = World(db, store_class)
    _, happened = await scenario(world, crashes)
    if happened != len(crashes):
        return [f"planned {len(crashes)} crash(es), {happened} happened"]
    return await violations(world, happened)


async def measure(db: Path, crashes: list[Crash], store_class: type[SqliteStore] = SqliteStore) -> list[str]:
    """The calls of the first clean life after ``crashes``."""
    reset(db)
    world = World(db, store_class)
    calls, _ = await scenario(world, crashes)
    return calls[len(crashes)]


@attrs.define
class SweepReport:
    calls: list[str]
    scenarios: int = 0
    failures: dict[str, list[str]] = attrs.field(factory=dict)

    def describe(self) -> str:
        lines = [f"{k}: {'; '.join(v[:4])}" for k, v in list(self.failures.items())[:15]]
        return f"{len(self.failures)} of {self.scenarios} scenarios failed:\n" + "\n".join(lines)


async def single_sweep(db: Path, store_class: type[SqliteStore] = SqliteStore) -> SweepReport:
    report = SweepReport(calls=await measure(db, [], store_class))
    for k, name in enumerate(report.calls):
        for when in VARIANTS:
            crash = Crash(k, when)
            report.scenarios += 1
            problems = await run_one(db, [crash], store_class)
            if problems:
                report.failures[f"{crash} {name}"] = problems
    return report


async def double_sweep(db: Path, sample: int | None, seed: int = 5) -> SweepReport:
    """Crash at every first-life call and then at every call of the recovering life;
    or, with ``sample``, at that many seeded random pairs (each first crash drawn
    uniformly, then a call of its recovering life)."""
    first = await measure(db, [])
    firsts = [Crash(k, when) for k in range(len(first)) for when in VARIANTS]
    seconds: dict[Crash, list[str]] = {}

    async def recovering_life(crash: Crash) -> list[str]:
        if crash not in seconds:
            seconds[crash] = await measure(db, [crash])
        return seconds[crash]

    pairs: list[tuple[Crash, Crash]] = []
    if sample is None:
        for one in firsts:
            pairs += [(one, Crash(j, w)) for j in range(len(await recovering_life(one))) for w in VARIANTS]
    else:
        rng = random.Random(seed)
        for _ in range(sample):
            one = rng.choice(firsts)
            pairs.append((one, Crash(rng.randrange(len(await recovering_life(one))), rng.choice(VARIANTS))))
    report = SweepReport(calls=first)
    for one, two in pairs:
        report.scenarios += 1
        problems = await run_one(db, [one, two])
        if problems:
            name = f"{one} {first[one.at]} / {two} {seconds[one][two.at]}"
            report.failures[name] = problems
    return report


# --------------------------------------------------------------------------- the tests


def test_the_uncrashed_flow_exercises_every_port_call_of_the_path(tmp_path: Path) -> None:
    db = tmp_path / "ductile.db"
    calls = asyncio.run(measure(db, []))
    assert set(calls) >= EXPECTED_CALLS, f"missing: {EXPECTED_CALLS - set(calls)} in {calls}"
    # Four jobs, each: claim, read state, spawn, record its process group, settle.
    assert calls.count("spawner.run") == 4
    assert calls.count("store.settle") == 4
    assert calls.count("store.record_process") == 4
    # The parent is claimed alone; each child by the settle before it, in that settle's unit
    # (ADR 0068), so a crash before or after a settle is also one before or after a claim.
    assert calls.count("store.claim_next") == 1
    assert asyncio.run(run_one(db, [])) == []


def test_a_crash_at_every_port_call_before_or_after_it_loses_nothing(tmp_path: Path) -> None:
    report = asyncio.run(single_sweep(tmp_path / "ductile.db"))
    n = len(report.calls)
    print(f"\ncrash-point sweep: N = {n} port calls, {report.scenarios} scenarios (before/after each)")
    assert report.scenarios == 2 * n
    assert not report.failures, report.describe()


def test_a_second_crash_during_recovery_loses_nothing_sampled(tmp_path: Path) -> None:
    report = asyncio.run(double_sweep(tmp_path / "ductile.db", sample=60))
    print(f"\ndouble-crash sweep (sample): {report.scenarios} scenarios")
    assert not report.failures, report.describe()


@pytest.mark.slow  # all ~2,300 pairs take ~4 min: run with -m slow
@pytest.mark.timeout(900)
def test_a_second_crash_at_every_call_of_the_recovering_life_loses_nothing(tmp_path: Path) -> None:
    report = asyncio.run(double_sweep(tmp_path / "ductile.db", sample=None))
    print(f"\ndouble-crash sweep (all pairs): {report.scenarios} scenarios")
    assert not report.failures, report.describe()


def test_recovery_kills_the_recorded_process_group_before_it_requeues_the_job(tmp_path: Path) -> None:
    db = tmp_path / "ductile.db"
    calls = asyncio.run(measure(db, []))
    # The parent ran and its process group was recorded; the daemon dies before settling it.
    settle = calls.index("store.settle")
    reset(db)
    world = World(db)
    lives, crashes = asyncio.run(scenario(world, [Crash(settle, "before")]))

    assert crashes == 1
    [handle] = world.spawner.killed
    recovering = lives[1]
    assert recovering.index("spawner.kill_orphan") < recovering.index("store.recover"), recovering
    assert world.executions[PARENT] == [(world.acked, 1), (world.acked, 2)]
    assert handle.pgid == handle.pid
    assert asyncio.run(violations(world, crashes)) == []


# --------------------------------------------------------------------------- the sweep has teeth


class ForgetfulRecoveryStore(SqliteStore):
    """Mutant: crash recovery does nothing, so orphans stay running forever."""

    async def recover(self, now: Any, **_: Any) -> list[Any]:
        return []


class NoDedupeStore(SqliteStore):
    """Mutant: enqueue ignores the dedupe key, so a client's retry makes a second job."""

    async def enqueue(self, job: Job, *, actor: Actor, now: Any, dedupe_ttl: Any) -> Any:
        return await super().enqueue(
            attrs.evolve(job, dedupe_key=None), actor=actor, now=now, dedupe_ttl=dedupe_ttl
        )


@pytest.mark.parametrize(
    ("mutant", "crash_at", "symptom"),
    [
        (ForgetfulRecoveryStore, "store.claim_next", "jobs left running"),
        (NoDedupeStore, "store.enqueue", "jobs of 'p' (one dedupe key)"),
    ],
)
def test_the_sweep_catches_a_broken_store(
    tmp_path: Path, mutant: type[SqliteStore], crash_at: str, symptom: str
) -> None:
    db = tmp_path / "ductile.db"
    calls = asyncio.run(measure(db, [], mutant))
    k = calls.index(crash_at)
    problems = asyncio.run(run_one(db, [Crash(k, "after")], mutant))
    assert any(symptom in p for p in problems), problems
