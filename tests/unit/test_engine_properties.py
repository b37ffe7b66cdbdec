"""Properties of the engine on fakes: whatever plugins answer, no job is left
running, attempts never exceed the limit, and the end of a job follows D3."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ductile.domain.config import PluginConfig
from ductile.domain.job import JobStatus
from ductile.domain.outcome import SpawnOutcome
from ductile.domain.retry import RetryPolicy
from ductile.fakes.catalog import DictCatalog
from ductile.fakes.spawner import error, ok
from ductile.ports.spawner import SpawnRequest
from tests.support.builders import every, make_config, manifest
from tests.support.rigs import Rig

#: What a run may end in; ``raise`` is a spawner bug.
KINDS = ("ok", "fail", "fatal", "exit78", "timeout", "garbage", "raise", "signal")
RETRYABLE = {"fail", "timeout", "garbage", "raise", "signal"}


def outcome_of(kind: str, n: int) -> SpawnOutcome:
    if kind == "ok":
        return ok(state_updates={"n": n})
    if kind == "fail":
        return error("upstream 503")
    if kind == "fatal":
        return error("account closed", retry=False)
    if kind == "exit78":
        return SpawnOutcome(exit_code=78)
    if kind == "timeout":
        return SpawnOutcome(timed_out=True, duration=60.0)
    if kind == "garbage":
        return SpawnOutcome(exit_code=0, stdout=b"<html>oops</html>")
    if kind == "signal":
        return SpawnOutcome(signal=9)
    raise RuntimeError("spawner bug")


class Script:
    """Answers with the kinds in turn (cycling), counting the spawns."""

    def __init__(self, kinds: list[str]) -> None:
        self.kinds = kinds
        self.n = 0

    def __call__(self, _: SpawnRequest) -> SpawnOutcome:
        kind = self.kinds[self.n % len(self.kinds)]
        self.n += 1
        return outcome_of(kind, self.n)


steps = st.lists(
    st.one_of(
        st.just(("tick", 0)),
        st.just(("dispatch", 0)),
        st.tuples(st.just("advance"), st.integers(min_value=1, max_value=3 * 3600)),
    ),
    min_size=1,
    max_size=40,
)


async def check_invariants(rig: Rig, where: str) -> None:
    assert await rig.store.running() == [], f"a job was left running after {where}"
    runs_total = 0
    outstanding_polls = 0
    for job in await rig.jobs():
        assert 1 <= job.attempt <= job.max_attempts, f"{job.id}: attempt {job.attempt} of {job.max_attempts}"
        assert job.status in (JobStatus.QUEUED, JobStatus.SUCCEEDED, JobStatus.DEAD), job
        assert (job.completed_at is not None) == job.terminal, job
        runs = len(await rig.store.runs(job.id))
        expected = job.attempt - 1 if job.status is JobStatus.QUEUED else job.attempt
        assert runs == expected, f"{job.id}: {runs} runs recorded for {job.status} attempt {job.attempt}"
        runs_total += runs
        outstanding_polls += job.status is JobStatus.QUEUED
    assert outstanding_polls <= 1, "the poll guard let a second poll in"
    assert runs_total == len(rig.spawner.calls), "every spawn is one recorded run"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=12),
    plan=steps,
    max_attempts=st.integers(min_value=1, max_value=4),
)
def test_a_scheduled_plugin_never_leaves_a_job_running_nor_exceeds_its_attempts(
    kinds: list[str], plan: list[tuple[str, int]], max_attempts: int
) -> None:
    async def body() -> None:
        catalog = DictCatalog(manifest("alpha", "poll"))
        pc = PluginConfig(
            name="alpha",
            schedule=every(timedelta(minutes=10)),
            retry=RetryPolicy(max_attempts=max_attempts, backoff_base=timedelta(seconds=30)),
        )
        rig = Rig(make_config(pc), catalog)
        rig.script("alpha", Script(kinds))
        await rig.engine.start()
        for action, seconds in plan:
            if action == "tick":
                await rig.engine.tick()
            elif action == "dispatch":
                await rig.engine.dispatch_one()
            else:
                rig.clock.advance(timedelta(seconds=seconds))
            await check_invariants(rig, action)

    asyncio.run(body())


def model(kinds: list[str], max_attempts: int) -> tuple[JobStatus, int]:
    """D3 by hand: the final status and the number of runs."""
    for attempt in range(1, max_attempts + 1):
        kind = kinds[(attempt - 1) % len(kinds)]
        if kind == "ok":
            return JobStatus.SUCCEEDED, attempt
        if kind not in RETRYABLE:
            return JobStatus.DEAD, attempt
    return JobStatus.DEAD, max_attempts


@settings(max_examples=80, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=8),
    max_attempts=st.integers(min_value=1, max_value=6),
)
def test_a_job_ends_as_the_retry_rules_say_within_max_attempts(kinds: list[str], max_attempts: int) -> None:
    async def body() -> None:
        catalog = DictCatalog(manifest("alpha", "poll"))
        pc = PluginConfig(name="alpha", retry=RetryPolicy(max_attempts=max_attempts))
        rig = Rig(make_config(pc), catalog)
        rig.script("alpha", Script(kinds))
        await rig.engine.start()
        job_id = (await rig.engine.enqueue("alpha")).job_id
        for _ in range(max_attempts + 1):
            job = await rig.job(job_id)
            if job.terminal:
                break
            if job.next_retry_at is not None:
                assert not await rig.engine.dispatch_one(), "claimed before its retry time"
                rig.clock.set(job.next_retry_at)
            assert await rig.engine.dispatch_one()
            assert await rig.store.running() == []

        job = await rig.job(job_id)
        status, runs = model(kinds, max_attempts)
        assert (job.status, job.attempt) == (status, runs)
        assert len(rig.spawner.calls) == runs
        assert (await rig.store.get_state("alpha") != {}) == (status is JobStatus.SUCCEEDED)

    asyncio.run(body())
