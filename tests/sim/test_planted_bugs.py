"""The invariants can fail: each planted bug is caught by the invariant that names it.

A sweep that never fails proves nothing unless its checks bite. Each test here
plants one bug in a store (or the spawner) the engine runs on, runs a short
simulation of the canonical scenario, and expects :class:`InvariantError` with
that invariant's code and the command that replays it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest

from ductile.app.sim import (
    Faults,
    InvariantError,
    Scenario,
    Simulation,
    quiet_scenario,
    sweep_scenario,
)
from ductile.domain import lifecycle
from ductile.domain.job import Actor, Job, JobStatus, Transition
from ductile.domain.outcome import SpawnOutcome
from ductile.domain.routing import Envelope
from ductile.domain.schedule import PlannedRun
from ductile.domain.settle import SettleContext, Settlement
from ductile.fakes import InMemoryStore, ScriptedSpawner
from ductile.fakes.memory_tx import MemoryTx
from ductile.ports.spawner import OnStart, SpawnRequest
from ductile.ports.store import Committed, EnqueueResult, FireResult, Guard
from ductile.units import insert_jobs


class LossyInserts(MemoryTx):
    """Acknowledges every 7th new job without keeping it."""

    def __init__(self) -> None:
        super().__init__()
        self.inserts = 0
        self.lost: set[str] = set()

    def insert_job(self, job: Job) -> None:
        self.inserts += 1
        if self.inserts % 7:
            super().insert_job(job)
        else:
            self.lost.add(job.id)

    def add_transition(self, transition: Transition) -> None:
        if transition.job_id not in self.lost:
            super().add_transition(transition)


class NoRecovery(InMemoryStore):
    """Crash recovery that leaves orphans running."""

    async def recover(self, now: datetime, **_: Any) -> list[Settlement]:
        return []


class ImpatientClaims(MemoryTx):
    """A dispatcher query that ignores retry times."""

    def oldest_runnable(self, now: datetime, **skips: Any) -> Job | None:
        return super().oldest_runnable(datetime.max.replace(tzinfo=UTC), **skips)


class ForgetfulState(MemoryTx):
    """Settles a success without merging its state updates."""

    def put_state(self, plugin: str, state: dict[str, Any]) -> None:
        pass


class NoDedupe(MemoryTx):
    """Never finds a duplicate."""

    def dedupe_candidates(self, plugin: str, command: str, key: str) -> list[Job]:
        return []


class BlindToBreakers(InMemoryStore):
    """Fires scheduled jobs without consulting the breaker."""

    async def fire(self, *, guard: Guard | None, **kw: Any) -> FireResult:
        if guard is not None:
            guard = attrs.evolve(guard, breaker=None)
        return await super().fire(guard=guard, **kw)


class StarvesRetries(MemoryTx):
    """A dispatcher query that never takes a job back after a failure."""

    def oldest_runnable(self, now: datetime, **skips: Any) -> Job | None:
        job = super().oldest_runnable(now, **skips)
        return None if job is not None and job.attempt > 1 else job  # the retry waits forever


class Untold(InMemoryStore):
    """Settles every run without its lifecycle events (a death no one hears of)."""

    async def settle(
        self, job_id: str, end: Any, *, ctx: SettleContext, dedupe_ttl: timedelta, token: int, **claim: Any
    ) -> Committed:
        quiet = attrs.evolve(ctx, alerts=None)
        return await super().settle(job_id, end, ctx=quiet, dedupe_ttl=dedupe_ttl, token=token, **claim)


class Chatty(InMemoryStore):
    """Tells of its notifier's own deaths too (the alert storm of a broken notifier)."""

    async def settle(
        self, job_id: str, end: Any, *, ctx: SettleContext, dedupe_ttl: timedelta, token: int, **claim: Any
    ) -> Committed:
        committed = await super().settle(job_id, end, ctx=ctx, dedupe_ttl=dedupe_ttl, token=token, **claim)
        job = committed.settlement.job
        if ctx.alerts is not None and lifecycle.is_lifecycle_job(job) and job.status is JobStatus.DEAD:
            about = Envelope(
                type="job.dead",
                payload={"job_id": job.id},
                source=lifecycle.SOURCE,
                timestamp=ctx.now,
                event_id=f"storm-{job.id}",
            )
            with self.tx.atomic() as tx:
                storm = lifecycle.children([about], ctx.alerts, at=ctx.now)
                told = insert_jobs(tx, storm, actor=Actor.ROUTE, now=ctx.now, ttl=dedupe_ttl)
            return attrs.evolve(committed, alerts=(*committed.alerts, *told))
        return committed


class TwiceRunningSpawner(ScriptedSpawner):
    """Runs every plugin twice per request (as if a retry loop re-spawned it)."""

    async def run(self, request: SpawnRequest, *, on_start: OnStart | None = None) -> SpawnOutcome:
        await super().run(request, on_start=on_start)
        return await super().run(request, on_start=None)


def _simulate(scenario: Scenario, seed: int, days: float, **overrides: Any) -> None:
    sim = scenario.simulation(seed, days=days, **overrides)
    asyncio.run(sim.run(scenario.until(days)))


def _expect(
    code: str, scenario: Scenario, seed: int = 3, days: float = 1.0, **overrides: Any
) -> InvariantError:
    with pytest.raises(InvariantError) as caught:
        _simulate(scenario, seed, days, **overrides)
    error = caught.value
    assert error.code.startswith(code), f"expected {code}, got: {error}"
    assert f"--seed {seed} --scenario {scenario.name}" in str(error), str(error)
    assert "last steps:" in str(error)
    return error


def test_the_planted_bugs_do_not_fire_on_the_honest_store() -> None:
    _simulate(sweep_scenario(), 3, 1.0)


def test_i1_catches_an_acknowledged_job_that_was_not_kept() -> None:
    error = _expect("I1", quiet_scenario(), memory_store=InMemoryStore(LossyInserts()))
    assert "is not in the store" in error.detail


def test_i2_catches_orphans_left_running_after_a_crash() -> None:
    faults = Faults(crash_rate=0.02, max_crashes=3)
    _expect("I2", quiet_scenario(), faults=faults, memory_store=NoRecovery())


def test_i3_catches_a_retry_run_before_its_backoff() -> None:
    _expect("I3", quiet_scenario(), memory_store=InMemoryStore(ImpatientClaims()))


def test_i4_catches_a_success_whose_state_update_was_lost() -> None:
    _expect("I4", quiet_scenario(), memory_store=InMemoryStore(ForgetfulState()))


def test_i5_catches_a_store_that_never_deduplicates() -> None:
    _expect("I5", quiet_scenario(), memory_store=InMemoryStore(NoDedupe()))


def test_i6_catches_a_plugin_run_twice_for_one_attempt() -> None:
    scenario = quiet_scenario()
    sim = scenario.simulation(3, days=1.0)
    sim.spawner = TwiceRunningSpawner(clock=sim.clock)
    with pytest.raises(InvariantError) as caught:
        asyncio.run(sim.run(scenario.until(1.0)))
    assert caught.value.code.startswith("I6"), str(caught.value)
    assert "ran 2 times" in caught.value.detail


def test_i7_catches_scheduled_jobs_enqueued_while_the_breaker_is_open() -> None:
    _expect("I7", quiet_scenario(), memory_store=BlindToBreakers())


def test_i11_catches_a_death_no_one_was_told_of() -> None:
    _expect("I11", sweep_scenario(), memory_store=Untold())


def test_i11_catches_a_notifier_told_of_its_own_death() -> None:
    error = _expect("I11", sweep_scenario(), memory_store=Chatty())
    assert "a job made from a lifecycle event" in str(error)


def test_i8_catches_jobs_that_never_finish() -> None:
    _expect("I8", quiet_scenario(), memory_store=InMemoryStore(StarvesRetries()))


def test_an_invariant_error_names_the_command_that_replays_it() -> None:
    error = _expect("I5", quiet_scenario(), seed=11, memory_store=InMemoryStore(NoDedupe()))
    assert "replay: python -m ductile.app.sim --seed 11 --scenario quiet --days 1" in str(error)
    # the replay is faithful: the same seed fails the same way, at the same instant
    again = _expect("I5", quiet_scenario(), seed=11, memory_store=InMemoryStore(NoDedupe()))
    assert (again.at, again.detail) == (error.at, error.detail)


def test_a_simulation_refuses_a_memory_store_with_sqlite() -> None:
    with pytest.raises(ValueError, match="memory_store"):
        Simulation(quiet_scenario().config, seed=1, store="sqlite", memory_store=InMemoryStore())


# keep the imports the planted stores use visible to type checkers
_ = (EnqueueResult, PlannedRun)
