"""Engine.start / recover / _run_inits / reload on fakes (D5 init, D6, D13)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

import pytest

from ductile.app.engine import EnqueueRefusedError
from ductile.app.runtime import init_fingerprint
from ductile.domain.config import Config, PluginConfig
from ductile.domain.job import Actor, Job, JobStatus
from ductile.domain.lanes import UNLIMITED, Lanes
from ductile.domain.lifecycle import Alerts
from ductile.domain.retry import RetryPolicy
from ductile.domain.schedule import CatchUp, PlannedRun
from ductile.fakes import InMemoryStore, ScriptedSpawner
from ductile.fakes.catalog import DictCatalog
from ductile.fakes.spawner import error, ok
from ductile.ports.spawner import ProcessHandle
from tests.support.builders import every, make_config, manifest, route, two_plugins
from tests.support.rigs import T0, GatedSpawner, Rig, async_test, by_command, records

HOUR = timedelta(hours=1)


# =========================================================================== crash recovery (D6)


class KillingSpawner(ScriptedSpawner):
    """Reports a kill, and what the store said about the job at that moment."""

    def __init__(self, store: InMemoryStore) -> None:
        super().__init__()
        self.store = store
        self.status_at_kill: list[JobStatus] = []

    async def kill_orphan(self, handle: ProcessHandle) -> bool:
        await super().kill_orphan(handle)
        [orphan] = [r for r in await self.store.running() if r.process == handle]
        self.status_at_kill.append(orphan.job.status)
        return True


async def crashed_daemon_leftovers(store: InMemoryStore) -> tuple[Job, Job, ProcessHandle]:
    """Two jobs left running by a daemon that died: one with attempts left and a
    recorded process group, one on its last attempt without one."""
    at = T0 - timedelta(minutes=3)
    spare = Job(id="orphan-1", plugin="alpha", command="poll", max_attempts=4, created_at=at)
    last = Job(id="orphan-2", plugin="beta", command="poll", max_attempts=1, created_at=at)
    for job in (spare, last):
        await store.enqueue(job, actor=Actor.SCHEDULER, now=at, dedupe_ttl=timedelta(hours=24))
        assert await store.claim(job.id, at) is not None
    handle = ProcessHandle(pid=4242, pgid=4242, start_time=987654)
    await store.record_process(spare.id, handle, token=1)
    return spare, last, handle


@async_test
async def test_start_kills_orphaned_process_groups_then_requeues_or_buries_their_jobs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    store = InMemoryStore()
    spare, last, handle = await crashed_daemon_leftovers(store)
    config, catalog = two_plugins()
    spawner = KillingSpawner(store)
    rig = Rig(config, catalog, store=store, spawner=spawner)

    settlements = await rig.engine.start()

    assert spawner.killed == [handle]  # only the job with a recorded group
    assert spawner.status_at_kill == [JobStatus.RUNNING]  # killed before the job was moved
    assert [s.job.id for s in settlements] == [spare.id, last.id]
    requeued = await rig.job(spare.id)
    assert (requeued.status, requeued.attempt, requeued.started_at) == (JobStatus.QUEUED, 2, None)
    assert requeued.last_error == "interrupted: the daemon stopped while the job was running"
    assert (await rig.history(spare.id))[-1] == ("running", "queued", Actor.RECOVERY.value)
    buried = await rig.job(last.id)
    assert (buried.status, buried.attempt, buried.completed_at) == (JobStatus.DEAD, 1, T0)
    assert (await rig.history(last.id))[-1] == ("running", "dead", Actor.RECOVERY.value)
    assert await rig.store.running() == []
    assert rig.inbox.notifications == 1

    [killed] = records(caplog, component="recovery", message="killed")
    assert (killed.levelno, killed.job_id, killed.fields["pgid"]) == (logging.WARNING, spare.id, 4242)
    [again] = records(caplog, component="recovery", job_id=spare.id, message="re-queued")
    assert (again.levelno, again.plugin) == (logging.WARNING, "alpha")
    assert again.getMessage() == "orphaned job re-queued (attempt 2 of 4)"
    [dead] = records(caplog, component="recovery", job_id=last.id)
    assert dead.levelno == logging.ERROR
    assert (
        dead.getMessage() == "orphaned job is dead: interrupted: the daemon stopped while the job was running"
    )

    # The re-queued orphan runs again, as attempt 2.
    rig.script("alpha", ok())
    assert await rig.engine.dispatch_one()
    assert rig.spawns("alpha")[0].env["DUCTILE_ATTEMPT"] == "2"
    assert (await rig.job(spare.id)).status is JobStatus.SUCCEEDED


@async_test
async def test_recovery_is_idempotent_and_quiet_when_nothing_was_running() -> None:
    config, catalog = two_plugins()
    rig = Rig(config, catalog)
    assert await rig.engine.start() == []
    assert await rig.engine.recover() == []
    assert rig.spawner.killed == []
    assert rig.inbox.notifications == 0


# =========================================================================== init (D5)


def init_config(**alpha: object) -> tuple[Config, DictCatalog]:
    catalog = DictCatalog(manifest("alpha", "poll", "init"), manifest("beta", "poll"))
    alpha.setdefault("schedule", every(HOUR))
    alpha.setdefault("config", {"client_id": "abc"})
    config = make_config(PluginConfig(name="alpha", **alpha), PluginConfig(name="beta"))  # type: ignore[arg-type]
    return config, catalog


def init_requests(rig: Rig) -> list[dict[str, object]]:
    return [r for r in rig.requests("alpha") if r["command"] == "init"]


@async_test
async def test_start_runs_init_once_and_a_successful_init_leaves_the_plugin_scheduled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    config, catalog = init_config()
    rig = Rig(config, catalog)
    rig.script("alpha", by_command(init=ok(state_updates={"ready": True}), poll=ok()))

    await rig.engine.start()

    [request] = init_requests(rig)
    assert request["config"] == {"client_id": "abc"}
    assert request["state"] == {}
    assert "event" not in request
    assert request["deadline_at"] == "2026-03-02T09:00:30Z"  # the init timeout: 30 s
    [spawn] = rig.spawns("alpha")
    assert spawn.timeout == 30.0
    assert rig.spawns("beta") == []  # no init in beta's manifest
    [job] = await rig.jobs("alpha")
    assert (job.command, job.max_attempts, job.status) == ("init", 1, JobStatus.SUCCEEDED)
    assert await rig.store.get_state("alpha") == {"ready": True}
    record = await rig.store.get_init("alpha")
    assert record is not None
    plugin = rig.engine.runtime.plugins["alpha"]
    assert (record.ok, record.error, record.at) == (True, None, T0)
    assert record.fingerprint == init_fingerprint(plugin, config.plugin("alpha"))
    assert rig.engine.runtime.unhealthy == {}
    assert await rig.store.planned("alpha/default") is not None
    [line] = records(caplog, component="plugins", plugin="alpha", message="initialized")
    assert line.job_id == job.id


@async_test
async def test_a_failed_init_makes_the_plugin_unhealthy_unscheduled_and_its_jobs_fail_fast(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    config, catalog = init_config(retry=RetryPolicy(max_attempts=5))
    rig = Rig(config, catalog)
    rig.script("alpha", by_command(init=error("bad credentials"), poll=ok()))

    await rig.engine.start()

    [init_job] = await rig.jobs("alpha")
    assert (init_job.status, init_job.attempt) == (JobStatus.DEAD, 1)  # init is never retried
    record = await rig.store.get_init("alpha")
    assert record is not None
    assert (record.ok, record.error) == (False, "bad credentials")
    assert rig.engine.runtime.unhealthy == {"alpha": "init failed: bad credentials"}
    assert await rig.store.planned("alpha/default") is None
    [line] = records(caplog, component="plugins", plugin="alpha", levelno=logging.ERROR)
    assert line.getMessage() == "plugin unhealthy, not scheduled: init failed: bad credentials"

    rig.clock.advance(2 * HOUR)
    await rig.engine.tick()
    assert len(await rig.jobs("alpha")) == 1  # nothing scheduled

    with pytest.raises(
        EnqueueRefusedError, match=r"plugin 'alpha' is unhealthy: init failed: bad credentials"
    ):
        await rig.engine.enqueue("alpha")
    job_id = (await rig.engine.enqueue("alpha", strict=False)).job_id
    assert await rig.engine.dispatch_one()
    job = await rig.job(job_id)
    assert (job.status, job.attempt) == (JobStatus.DEAD, 1)
    assert job.last_error == "plugin 'alpha' is unhealthy: init failed: bad credentials"
    assert [r["command"] for r in rig.requests("alpha")] == ["init"]


@async_test
async def test_an_unchanged_successful_init_is_not_rerun_on_restart_or_reload() -> None:
    config, catalog = init_config()
    rig = Rig(config, catalog)
    rig.script("alpha", by_command(init=ok(), poll=ok()))
    await rig.engine.start()
    assert len(init_requests(rig)) == 1

    restarted = rig.new_engine(config)
    await restarted.start()
    await restarted.reload(config)
    # A change elsewhere (another plugin's config) does not touch alpha's fingerprint.
    other = make_config(config.plugin("alpha"), PluginConfig(name="beta", config={"x": 1}))
    await restarted.reload(other)

    assert len(init_requests(rig)) == 1
    assert restarted.runtime.unhealthy == {}
    assert await rig.store.planned("alpha/default") is not None


@async_test
async def test_a_changed_plugin_config_reruns_init_with_the_new_config() -> None:
    config, catalog = init_config()
    rig = Rig(config, catalog)
    rig.script("alpha", by_command(init=ok(), poll=ok()))
    await rig.engine.start()
    changed, _ = init_config(config={"client_id": "xyz"})

    rig.clock.advance(timedelta(minutes=1))
    await rig.engine.reload(changed)

    assert [r["config"] for r in init_requests(rig)] == [{"client_id": "abc"}, {"client_id": "xyz"}]
    record = await rig.store.get_init("alpha")
    assert record is not None
    assert record.ok
    assert record.at == T0 + timedelta(minutes=1)
    assert record.fingerprint == init_fingerprint(
        rig.engine.runtime.plugins["alpha"], changed.plugin("alpha")
    )

    # A restart with the new config does not run it a third time; a new manifest version does.
    await rig.new_engine(changed).start()
    assert len(init_requests(rig)) == 2
    catalog.add(manifest("alpha", "poll", "init", version="1.1.0"))
    await rig.new_engine(changed).start()
    assert len(init_requests(rig)) == 3


@async_test
async def test_a_failed_init_is_retried_on_reload_and_a_fixed_plugin_becomes_schedulable() -> None:
    config, catalog = init_config()
    rig = Rig(config, catalog)
    rig.script("alpha", by_command(init=error("server unreachable"), poll=ok()))
    await rig.engine.start()
    assert "alpha" in rig.engine.runtime.unhealthy

    await rig.engine.reload(config)  # same config, still failing: tried again
    assert len(init_requests(rig)) == 2
    report = await rig.engine.reload(config)
    assert report.unhealthy == {"alpha": "init failed: server unreachable"}

    rig.script("alpha", by_command(init=ok(), poll=ok()))
    report = await rig.engine.reload(config)
    assert len(init_requests(rig)) == 4
    assert report.unhealthy == {}
    assert rig.engine.runtime.unhealthy == {}
    assert await rig.store.planned("alpha/default") is not None
    await rig.engine.tick()
    assert [j.command for j in await rig.jobs("alpha")][-1] == "poll"


@async_test
async def test_a_failed_init_is_retried_on_restart() -> None:
    config, catalog = init_config()
    rig = Rig(config, catalog)
    rig.script("alpha", by_command(init=error("server unreachable"), poll=ok()))
    await rig.engine.start()
    rig.script("alpha", by_command(init=ok(), poll=ok()))
    restarted = rig.new_engine(config)
    await restarted.start()
    assert len(init_requests(rig)) == 2
    assert restarted.runtime.unhealthy == {}


# =========================================================================== reload (D13)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("remove", "plugin removed"),
        ("disable", "plugin disabled"),
        ("refuse", "plugin refused: manifest.yaml is missing"),
    ],
)
@async_test
async def test_reload_cancels_the_queued_jobs_of_a_plugin_that_went_away(
    change: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    config, catalog = two_plugins()
    rig = Rig(config, catalog)
    rig.script("beta", ok())
    await rig.engine.start()
    done = (await rig.engine.enqueue("beta", payload={"n": 0})).job_id
    await rig.engine.dispatch_one()
    queued = [(await rig.engine.enqueue("beta", payload={"n": n})).job_id for n in (1, 2)]
    kept = (await rig.engine.enqueue("alpha")).job_id
    rig.clock.advance(timedelta(seconds=5))

    if change == "remove":
        catalog.remove("beta")
        new = make_config(config.plugin("alpha"))
    elif change == "disable":
        new = make_config(config.plugin("alpha"), PluginConfig(name="beta", enabled=False))
    else:
        catalog.refusals["beta"] = "manifest.yaml is missing"
        new = config
    report = await rig.engine.reload(new)

    assert report.cancelled == {"beta": tuple(queued)}
    assert report.removed == ("beta",)
    assert report.added == ()
    for job_id in queued:
        job = await rig.job(job_id)
        assert (job.status, job.last_error, job.completed_at) == (
            JobStatus.DEAD,
            reason,
            T0 + timedelta(seconds=5),
        )
        [*_, last] = await rig.store.transitions(job_id)
        assert (last.from_status, last.to_status, last.actor, last.reason) == (
            JobStatus.QUEUED,
            JobStatus.DEAD,
            Actor.RELOAD,
            reason,
        )
    assert (await rig.job(done)).status is JobStatus.SUCCEEDED
    assert (await rig.job(kept)).status is JobStatus.QUEUED
    [line] = records(caplog, component="reload", plugin="beta")
    assert (line.levelno, line.getMessage()) == (logging.WARNING, f"{reason}: 2 queued job(s) cancelled")
    with pytest.raises(EnqueueRefusedError):
        await rig.engine.enqueue("beta")


@async_test
async def test_reload_drops_the_plan_of_a_removed_schedule() -> None:
    catalog = DictCatalog(manifest("alpha", "poll"), manifest("beta", "poll"))
    config = make_config(
        PluginConfig(name="alpha", schedule=every(HOUR)), PluginConfig(name="beta", schedule=every(HOUR))
    )
    rig = Rig(config, catalog)
    await rig.engine.start()
    assert [p.key for p in await rig.store.all_planned()] == ["alpha/default", "beta/default"]

    catalog.remove("beta")
    await rig.engine.reload(make_config(PluginConfig(name="alpha", schedule=every(HOUR))))
    assert [p.key for p in await rig.store.all_planned()] == ["alpha/default"]
    await rig.engine.reload(make_config(PluginConfig(name="alpha")))  # schedule removed from config
    assert await rig.store.all_planned() == []


@async_test
async def test_reload_replans_a_changed_schedule_and_keeps_an_unchanged_one() -> None:
    catalog = DictCatalog(manifest("alpha", "poll"), manifest("beta", "poll"))
    config = make_config(
        PluginConfig(name="alpha", schedule=every(HOUR)), PluginConfig(name="beta", schedule=every(HOUR))
    )
    rig = Rig(config, catalog)
    await rig.engine.start()
    await rig.engine.tick()  # both fire at T0; next at T0 + 1h
    before = {p.key: p for p in await rig.store.all_planned()}
    rig.clock.advance(timedelta(minutes=10))

    await rig.engine.reload(config)
    assert {p.key: p for p in await rig.store.all_planned()} == before

    two_hourly = every(2 * HOUR)
    # catch_up and command are read at fire time: changing them keeps the plan
    relaxed = every(HOUR, catch_up=CatchUp.RUN_ONCE)
    await rig.engine.reload(
        make_config(
            PluginConfig(name="alpha", schedule=two_hourly), PluginConfig(name="beta", schedule=relaxed)
        )
    )
    alpha = await rig.store.planned("alpha/default")
    assert alpha is not None
    assert alpha.fingerprint == two_hourly.fingerprint() != before["alpha/default"].fingerprint
    assert (alpha.nominal_at, alpha.planned_at) == (T0 + timedelta(minutes=10), T0 + timedelta(minutes=10))
    assert await rig.store.planned("beta/default") == before["beta/default"]


@async_test
async def test_reload_discovers_a_new_plugin_runs_its_init_and_schedules_it() -> None:
    config, catalog = two_plugins()
    rig = Rig(config, catalog)
    await rig.engine.start()
    catalog.add(manifest("gamma", "poll", "init"))
    rig.script("gamma", by_command(init=ok(), poll=ok()))
    new = make_config(
        *config.plugins.values(), PluginConfig(name="gamma", schedule=every(HOUR), config={"k": 1})
    )

    report = await rig.engine.reload(new)

    assert report.added == ("gamma",)
    assert report.removed == ()
    assert [r["command"] for r in rig.requests("gamma")] == ["init"]
    assert rig.requests("gamma")[0]["config"] == {"k": 1}
    record = await rig.store.get_init("gamma")
    assert record is not None
    assert record.ok
    assert await rig.store.planned("gamma/default") is not None
    assert (await rig.engine.enqueue("gamma")).created


@async_test
async def test_an_in_flight_job_finishes_with_the_runtime_it_was_claimed_with() -> None:
    old_retry = RetryPolicy(max_attempts=3, backoff_base=timedelta(seconds=10))
    new_retry = RetryPolicy(max_attempts=3, backoff_base=timedelta(hours=1))
    catalog = DictCatalog(manifest("alpha", "poll"))
    old = make_config(PluginConfig(name="alpha", config={"v": 1}, retry=old_retry))
    new = make_config(PluginConfig(name="alpha", config={"v": 2}, retry=new_retry))
    spawner = GatedSpawner()
    rig = Rig(old, catalog, spawner=spawner)
    rig.script("alpha", error("try later"))
    await rig.engine.start()
    job_id = (await rig.engine.enqueue("alpha")).job_id

    dispatch = asyncio.create_task(rig.engine.dispatch_one())
    await spawner.started.wait()
    report = await rig.engine.reload(new)  # the reload does not wait for the job
    assert report.cancelled == {}
    assert rig.engine.runtime.config == new
    spawner.gate.set()
    assert await dispatch

    assert rig.requests("alpha")[0]["config"] == {"v": 1}
    job = await rig.job(job_id)
    # settled with the old policy: 10 s + 0.5 * 10 s, not an hour and a half
    assert job.next_retry_at == T0 + timedelta(seconds=15)
    rig.clock.advance(timedelta(seconds=15))
    spawner.gate = asyncio.Event()
    spawner.gate.set()
    assert await rig.engine.dispatch_one()
    assert rig.requests("alpha")[1]["config"] == {"v": 2}  # the next dispatch uses the new config
    assert (await rig.job(job_id)).next_retry_at == rig.clock.now() + timedelta(hours=2, minutes=30)


# =========================================================================== serialization


class GatedDueStore(InMemoryStore):
    """``due`` (asked by tick under the engine lock) waits for :attr:`gate`."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.in_due = asyncio.Event()
        self.log: list[str] = []

    async def due(self, start: datetime, end: datetime) -> list[PlannedRun]:
        self.log.append("tick:due")
        self.in_due.set()
        await self.gate.wait()
        return await super().due(start, end)

    async def put_planned(self, run: PlannedRun) -> None:
        self.log.append(f"put_planned:{run.key}")
        await super().put_planned(run)


@async_test
async def test_a_reload_waits_for_a_running_tick_and_ticks_wait_for_a_reload() -> None:
    store = GatedDueStore()
    catalog = DictCatalog(manifest("alpha", "poll"))
    config = make_config(PluginConfig(name="alpha", schedule=every(HOUR)))
    rig = Rig(config, catalog, store=store)
    store.gate.set()
    await rig.engine.start()
    store.gate.clear()
    store.in_due.clear()
    store.log.clear()
    discovered = catalog.discover_calls

    tick = asyncio.create_task(rig.engine.tick())
    await store.in_due.wait()
    reload = asyncio.create_task(
        rig.engine.reload(make_config(PluginConfig(name="alpha", schedule=every(2 * HOUR))))
    )
    for _ in range(20):
        await asyncio.sleep(0)
    assert not reload.done()
    assert catalog.discover_calls == discovered  # the reload has not begun

    store.gate.set()
    await asyncio.gather(tick, reload)
    # the tick's two questions to the index (what is due; when is the next run), then the reload
    assert store.log == ["tick:due", "tick:due", "put_planned:alpha/default"]
    # tick fired first (planning T0 + 1h), then the reload re-planned the changed schedule
    entry = await store.planned("alpha/default")
    assert entry is not None
    assert entry.fingerprint == every(2 * HOUR).fingerprint()
    assert len(await rig.jobs()) == 1


@async_test
async def test_two_reloads_never_interleave() -> None:
    config, catalog = init_config()
    spawner = GatedSpawner()
    spawner.gate.set()
    rig = Rig(config, catalog, spawner=spawner)
    rig.script("alpha", by_command(init=ok(), poll=ok()))
    await rig.engine.start()
    spawner.gate.clear()
    spawner.started.clear()

    first_config, _ = init_config(config={"client_id": "one"})
    second_config, _ = init_config(config={"client_id": "two"})
    first = asyncio.create_task(rig.engine.reload(first_config))
    await spawner.started.wait()  # the first reload is inside alpha's init
    second = asyncio.create_task(rig.engine.reload(second_config))
    tick = asyncio.create_task(rig.engine.tick())
    for _ in range(20):
        await asyncio.sleep(0)
    assert catalog.discover_calls == 2  # start and the first reload only
    assert not tick.done()
    spawner.gate.set()
    await asyncio.gather(first, second, tick)

    assert [r["config"] for r in init_requests(rig)] == [
        {"client_id": "abc"},
        {"client_id": "one"},
        {"client_id": "two"},
    ]
    assert rig.engine.runtime.config == second_config


class YieldingStore(InMemoryStore):
    """Like a store on a writer thread: every job operation lets the loop run first."""

    async def enqueue(self, job: Job, **kw: object) -> object:  # type: ignore[override]
        await asyncio.sleep(0)
        return await super().enqueue(job, **kw)  # type: ignore[arg-type]

    async def claim(self, job_id: str, now: datetime, *, lanes: Lanes = UNLIMITED) -> Job | None:
        await asyncio.sleep(0)
        return await super().claim(job_id, now, lanes=lanes)

    async def claim_next(self, now: datetime, *, lanes: Lanes = UNLIMITED) -> Job | None:
        await asyncio.sleep(0)
        return await super().claim_next(now, lanes=lanes)


@async_test
async def test_a_reload_init_is_never_claimed_by_the_running_dispatcher() -> None:
    # The dispatcher keeps polling while a reload runs a new plugin's init: the
    # init job must be run by the reload, with the new runtime, and recorded.
    config, catalog = two_plugins()
    rig = Rig(config, catalog, store=YieldingStore())
    await rig.engine.start()
    catalog.add(manifest("gamma", "poll", "init"))
    rig.script("gamma", by_command(init=ok(), poll=ok()))
    new = make_config(*config.plugins.values(), PluginConfig(name="gamma"))
    stop = asyncio.Event()

    async def dispatcher() -> None:
        while not stop.is_set():
            if not await rig.engine.dispatch_one():
                await asyncio.sleep(0)

    loop = asyncio.create_task(dispatcher())
    try:
        report = await rig.engine.reload(new)
    finally:
        stop.set()
        await loop

    assert report.unhealthy == {}
    [init_job] = await rig.jobs("gamma")
    assert (init_job.command, init_job.status, init_job.last_error) == ("init", JobStatus.SUCCEEDED, None)
    assert [r["command"] for r in rig.requests("gamma")] == ["init"]
    record = await rig.store.get_init("gamma")
    assert record is not None
    assert record.ok


@async_test
async def test_an_in_flight_job_routes_with_its_old_runtime_and_a_child_for_a_removed_plugin_fails_fast() -> (
    None
):
    catalog = DictCatalog(manifest("alpha", "poll"), manifest("beta", "handle"))
    old = make_config(
        PluginConfig(name="alpha"), PluginConfig(name="beta"), routes=[route("alpha", "e", "beta")]
    )
    spawner = GatedSpawner()
    rig = Rig(old, catalog, spawner=spawner)
    rig.script("alpha", ok(events=[{"type": "e"}]))
    rig.script("beta", ok())
    await rig.engine.start()
    parent = (await rig.engine.enqueue("alpha")).job_id

    dispatch = asyncio.create_task(rig.engine.dispatch_one())
    await spawner.started.wait()
    catalog.remove("beta")
    report = await rig.engine.reload(make_config(PluginConfig(name="alpha")))
    assert report.removed == ("beta",)
    spawner.gate.set()
    assert await dispatch

    # The parent settled with the routes it started with: the child exists
    # (nothing is silently dropped) and fails fast with the reason.
    [child] = await rig.jobs("beta")
    assert child.parent_job_id == parent
    assert await rig.engine.dispatch_one()
    child = await rig.job(child.id)
    assert child.status is JobStatus.DEAD
    assert child.last_error == "plugin 'beta' is not loaded (no such plugin in /srv/ductile/plugins)"
    assert rig.spawns("beta") == []


class _FlakyCancelStore(InMemoryStore):
    """Fails cancel_queued a given number of times (a locked database, a full disk)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def cancel_queued(
        self, plugin: str, *, reason: str, now: datetime, alerts: Alerts | None = None
    ) -> list[str]:
        if self.failures:
            self.failures -= 1
            raise OSError("database is locked")
        return await super().cancel_queued(plugin, reason=reason, now=now, alerts=alerts)


@async_test
async def test_a_reload_whose_store_work_fails_is_whole_and_finished_by_the_next_tick(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    config, catalog = two_plugins()
    store = _FlakyCancelStore(failures=1)
    rig = Rig(config, catalog, store=store)
    await rig.engine.start()
    queued = (await rig.engine.enqueue("beta")).job_id
    catalog.remove("beta")
    new = make_config(config.plugin("alpha"))

    report = await rig.engine.reload(new)

    # The new configuration is in force at once, whole ...
    assert rig.engine.runtime.config is new
    assert report.cancelled == {}
    with pytest.raises(EnqueueRefusedError):
        await rig.engine.enqueue("beta")
    assert records(caplog, component="reload", message="retrying at the next tick")
    # ... and what it implies for the store is carried out by the next tick.
    assert (await rig.job(queued)).status is JobStatus.QUEUED
    await rig.engine.tick()
    job = await rig.job(queued)
    assert (job.status, job.last_error) == (JobStatus.DEAD, "plugin removed")
