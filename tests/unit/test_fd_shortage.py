"""A spawn that fails for lack of resources is not an attempt of the plugin (issue 19, item 11).

Before: 600 idle connections under a 512-fd limit made spawns fail with "Too
many open files", and the job was retried as a failure of the plugin (its
attempts spent, its breaker counting). Now the spawner says the machine was
short (``out_of_resources``), the dispatcher releases the job: back to the
queue, the same attempt, a few seconds later; the breaker is not touched.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from ductile.domain.breaker import BreakerPolicy, BreakerStatus
from ductile.domain.config import PluginConfig
from ductile.domain.job import Actor, JobEvent, JobStatus, SubmittedBy, apply
from ductile.domain.outcome import NotStarted, SpawnOutcome
from ductile.domain.settle import SettleContext, settle
from ductile.fakes.catalog import DictCatalog
from ductile.fakes.spawner import ok
from tests.support import builders
from tests.support.builders import every, make_config, manifest
from tests.support.rigs import T0, Rig, async_test, records, sequence

EMFILE = SpawnOutcome(
    spawn_error="/plugins/p/run: Too many open files (EMFILE)", out_of_resources=True, duration=0.001
)


def running(attempt: int = 2) -> builders.Job:
    job = builders.job("j", "p", "poll", attempt=attempt, max_attempts=4, submitted_by=SubmittedBy.SCHEDULER)
    claimed, _ = apply(job, JobEvent.CLAIM, at=T0, actor=Actor.DISPATCHER, reason="claimed")
    return claimed


def test_a_release_keeps_the_attempt_and_touches_no_breaker() -> None:
    s = settle(running(), NotStarted(reason="Too many open files (EMFILE)"), ctx=SettleContext(now=T0))
    assert s.job.status is JobStatus.QUEUED
    assert s.job.attempt == 2
    assert s.job.next_retry_at == T0 + timedelta(seconds=5)
    assert s.breaker is None
    [t] = s.transitions
    assert (t.from_status, t.to_status, t.actor) == (JobStatus.RUNNING, JobStatus.QUEUED, Actor.DISPATCHER)
    assert "not counted as an attempt" in t.reason
    assert s.run.error == "not started: Too many open files (EMFILE); not counted as an attempt"


def test_even_the_last_attempt_is_released_not_buried() -> None:
    s = settle(running(attempt=4), NotStarted(reason="no memory"), ctx=SettleContext(now=T0))
    assert (s.job.status, s.job.attempt) == (JobStatus.QUEUED, 4)


@async_test
async def test_the_engine_releases_a_job_it_could_not_spawn_and_runs_it_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    catalog = DictCatalog(manifest("p", "poll"))
    one_failure_opens = BreakerPolicy(threshold=1, reset_after=timedelta(hours=1))
    config = make_config(
        PluginConfig(name="p", schedule=every(timedelta(hours=1)), circuit_breaker=one_failure_opens)
    )
    rig = Rig(config, catalog)
    rig.script("p", sequence(EMFILE, EMFILE, ok()))
    await rig.engine.start()
    await rig.engine.tick()

    assert await rig.drain() == 1  # not started; its retry is 5 s away
    [job] = await rig.jobs("p")
    assert (job.status, job.attempt) == (JobStatus.QUEUED, 1)
    assert await rig.store.get_breaker("p", "poll") is None  # no failure counted
    [line] = records(caplog, component="dispatcher", plugin="p", levelno=logging.WARNING)
    assert line.getMessage().startswith("poll not started: /plugins/p/run: Too many open files (EMFILE)")

    rig.clock.advance(timedelta(seconds=5))
    assert await rig.drain() == 1  # short again
    rig.clock.advance(timedelta(seconds=5))
    assert await rig.drain() == 1
    [job] = await rig.jobs("p")
    assert (job.status, job.attempt) == (JobStatus.SUCCEEDED, 1)
    breaker = await rig.store.get_breaker("p", "poll")
    assert breaker is None or breaker.status is BreakerStatus.CLOSED
    assert [r.error for r in await rig.store.runs(job.id)][:2] == [
        "not started: /plugins/p/run: Too many open files (EMFILE); not counted as an attempt"
    ] * 2
