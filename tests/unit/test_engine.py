"""The engine on fakes: intake (enqueue) and the dispatcher's idle wait.

The rig the ``test_engine_*`` modules share is in :mod:`tests.support.rigs`,
the configs and manifests they build in :mod:`tests.support.builders`.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import attrs
import pytest

from ductile.app.engine import EnqueueRefusedError
from ductile.domain.config import PluginConfig
from ductile.domain.job import Actor, JobStatus, SubmittedBy
from ductile.domain.retry import RetryPolicy
from ductile.domain.routing import arrival_event_id
from ductile.fakes import DictCatalog
from ductile.fakes.spawner import error, ok
from tests.support.builders import PLUGINS_DIR, make_config, manifest, two_plugins
from tests.support.rigs import T0, Rig, async_test, by_command, records

# =========================================================================== enqueue


@async_test
async def test_enqueue_stores_a_queued_job_with_the_plugins_retry_limit_and_notifies_the_inbox(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="ductile")
    config, catalog = two_plugins(retry=RetryPolicy(max_attempts=7))
    rig = Rig(config, catalog)
    await rig.engine.start()
    before = rig.inbox.notifications

    result = await rig.engine.enqueue(
        "alpha", command="handle", payload={"n": 1}, submitted_by=SubmittedBy.CLI
    )

    assert result.created
    job = await rig.job(result.job_id)
    assert (job.plugin, job.command, job.status) == ("alpha", "handle", JobStatus.QUEUED)
    assert job.payload == {  # a handle job's payload is its event: the given payload, wrapped
        "type": "manual",
        "payload": {"n": 1},
        "source": "cli",
        "timestamp": "2026-03-02T09:00:00Z",
        "event_id": arrival_event_id(job.id),
    }
    assert (job.attempt, job.max_attempts, job.submitted_by) == (1, 7, SubmittedBy.CLI)
    assert job.created_at == T0
    assert await rig.history(job.id) == [(None, "queued", Actor.CLI.value)]
    assert rig.inbox.notifications == before + 1
    [line] = records(caplog, component="intake", job_id=job.id)
    assert line.levelno == logging.INFO
    assert line.plugin == "alpha"
    assert line.getMessage() == "job queued (handle)"


@pytest.mark.parametrize(
    ("setup", "plugin", "command", "reason"),
    [
        ("none", "ghost", "poll", f"plugin 'ghost' is not loaded (no such plugin in {PLUGINS_DIR})"),
        ("refused", "beta", "poll", "plugin 'beta' is refused: entrypoint is not executable"),
        ("disabled", "beta", "poll", "plugin 'beta' is disabled"),
        ("unhealthy", "beta", "poll", "plugin 'beta' is unhealthy: init failed: no token"),
        (
            "none",
            "alpha",
            "health",
            "plugin 'alpha' does not support 'health' (its manifest lists: handle, poll)",
        ),
    ],
)
@async_test
async def test_strict_enqueue_refuses_what_cannot_run_naming_the_reason(
    setup: str, plugin: str, command: str, reason: str
) -> None:
    catalog = DictCatalog(manifest("alpha", "poll", "handle"), manifest("beta", "poll", "init"))
    beta = PluginConfig(name="beta", enabled=setup != "disabled")
    if setup == "refused":
        catalog.refusals["beta"] = "entrypoint is not executable"
    rig = Rig(make_config(PluginConfig(name="alpha"), beta), catalog)
    rig.script("beta", by_command(init=error("no token"), poll=ok()))
    await rig.engine.start()

    with pytest.raises(EnqueueRefusedError) as caught:
        await rig.engine.enqueue(plugin, command=command)

    assert str(caught.value) == reason
    assert [j for j in await rig.jobs() if j.command != "init"] == []
    assert rig.inbox.notifications == 0


@pytest.mark.parametrize("plugin", ["ghost", "beta"])
@async_test
async def test_non_strict_enqueue_keeps_the_job_even_when_its_plugin_cannot_run(plugin: str) -> None:
    config, catalog = two_plugins()
    catalog.refusals["beta"] = "directory is world-writable"
    rig = Rig(config, catalog)
    await rig.engine.start()

    result = await rig.engine.enqueue(
        plugin, payload={"x": 1}, submitted_by=SubmittedBy.WEBHOOK, strict=False
    )

    assert result.created
    job = await rig.job(result.job_id)
    assert (job.status, job.submitted_by) == (JobStatus.QUEUED, SubmittedBy.WEBHOOK)
    assert await rig.history(job.id) == [(None, "queued", "webhook")]
    assert rig.inbox.notifications == 1


@async_test
async def test_dedupe_returns_the_existing_id_without_a_second_job_or_wake_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    config, catalog = two_plugins()
    rig = Rig(config, catalog)
    await rig.engine.start()

    first = await rig.engine.enqueue("alpha", command="handle", dedupe_key="delivery-1")
    again = await rig.engine.enqueue("alpha", command="handle", dedupe_key="delivery-1")
    other_target = await rig.engine.enqueue("beta", command="handle", dedupe_key="delivery-1")

    assert first.created
    assert (again.job_id, again.created) == (first.job_id, False)
    assert other_target.created  # identity is (plugin, command, key): fan-out never collapses
    assert other_target.job_id != first.job_id
    assert len(await rig.jobs("alpha")) == 1
    assert rig.inbox.notifications == 2
    [line] = records(caplog, component="intake", message="duplicate dropped")
    assert line.job_id == first.job_id
    assert "'delivery-1'" in line.getMessage()


@async_test
async def test_a_duplicate_of_a_job_that_succeeded_is_dropped_but_one_that_died_is_not() -> None:
    config, catalog = two_plugins()
    rig = Rig(config, catalog)
    rig.script("alpha", ok())
    rig.script("beta", error("nope", retry=False))
    await rig.engine.start()

    done = await rig.engine.enqueue("alpha", dedupe_key="k")
    dead = await rig.engine.enqueue("beta", dedupe_key="k")
    assert await rig.drain() == 2
    assert (await rig.job(dead.job_id)).status is JobStatus.DEAD

    rig.clock.advance(timedelta(hours=1))
    assert (await rig.engine.enqueue("alpha", dedupe_key="k")).job_id == done.job_id
    assert (await rig.engine.enqueue("beta", dedupe_key="k")).created


# =========================================================================== idle_wait


@async_test
async def test_idle_wait_is_one_second_when_no_retry_is_pending() -> None:
    config, catalog = two_plugins()
    rig = Rig(config, catalog)
    await rig.engine.start()
    assert await rig.engine.idle_wait() == 1.0
    await rig.engine.enqueue("alpha")  # due now, no retry time: the inbox wakes the dispatcher
    assert await rig.engine.idle_wait() == 1.0


@async_test
async def test_idle_wait_is_shorter_when_a_retry_is_due_sooner_and_never_negative() -> None:
    config, catalog = two_plugins(retry=RetryPolicy(max_attempts=3, backoff_base=timedelta(seconds=2)))
    rig = Rig(config, catalog)
    rig.script("alpha", error("flaky"))
    await rig.engine.start()
    await rig.engine.enqueue("alpha")
    assert await rig.engine.dispatch_one()
    # draw 0.5: the retry is due 2 s + 1 s after the failure
    [job] = await rig.jobs("alpha")
    assert job.next_retry_at == T0 + timedelta(seconds=3)

    assert await rig.engine.idle_wait() == 1.0
    rig.clock.advance(timedelta(seconds=2.75))
    assert await rig.engine.idle_wait() == pytest.approx(0.25)
    rig.clock.advance(timedelta(seconds=5))
    assert await rig.engine.idle_wait() == 0.0
    assert await rig.engine.dispatch_one()


@async_test
async def test_idle_wait_does_not_spin_on_a_due_retry_whose_lane_is_full() -> None:
    # A retry that is due but passed by (its plugin's lane is full) is no reason to claim again
    # at once: the worker that holds the lane ends, or the inbox rings, or a second passes.
    config, catalog = two_plugins(retry=RetryPolicy(max_attempts=3, backoff_base=timedelta(seconds=2)))
    config = attrs.evolve(config, service=attrs.evolve(config.service, max_workers=2))
    rig = Rig(config, catalog)
    rig.script("alpha", error("flaky"))
    await rig.engine.start()
    await rig.engine.enqueue("alpha")
    assert await rig.engine.dispatch_one()  # fails: its retry is due at +3 s
    await rig.engine.enqueue("alpha")
    holder = await rig.engine.claim_one()  # alpha's lane (1 wide) is taken until this one ends
    assert holder is not None
    rig.clock.advance(timedelta(seconds=5))
    assert await rig.engine.claim_one() is None
    assert await rig.engine.idle_wait() == 1.0
    await rig.engine.run_claimed(holder)
    retried = await rig.engine.claim_one()
    assert retried is not None
    assert retried.job.attempt == 2
