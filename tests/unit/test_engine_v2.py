"""The engine on fakes, for what protocol v2's users rely on.

Several schedules per plugin (each keyed, fired, guarded and paused on its
own; one-shots done for good; ``after`` again at each start; ``run_all``),
``if_running: cancel`` stopping a running job, the v2 request (payload,
context) beside the unchanged v1 one, environment pass-through, facts, a
routing loop stopped at ``service.max_route_depth``, ``debug`` log lines, a
``result`` reaching the routed handler, custom-command timeouts, and an alias
with its own state.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, timedelta

import attrs
import pytest

from ductile.domain.config import EnvSettings, PluginConfig, ServiceConfig, Timeouts
from ductile.domain.job import JobStatus, SubmittedBy
from ductile.domain.outcome import SpawnOutcome
from ductile.domain.plugin import FactOutput
from ductile.domain.schedule import CatchUp, IfRunning, Schedule, plan_next, schedule_key, weekdays
from ductile.fakes.catalog import DictCatalog
from ductile.fakes.spawner import ok
from ductile.ports.spawner import SpawnRequest
from ductile.ports.store_values import ROUTE_DEPTH_DROPS
from tests.support.builders import BERLIN, make_config, manifest, route, v2_manifest
from tests.support.rigs import T0, GatedSpawner, Rig, async_test, records

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)

MORNING = Schedule(tz=BERLIN, cron="30 7 * * *", payload={"scope": "daily"}, id="morning")
HOURLY = Schedule(tz=BERLIN, every=HOUR, not_on=weekdays(["sat", "sun"]), id="hourly")
ONCE = Schedule(tz=UTC, at=T0 + 3 * HOUR, command="sync", id="once")
WARMUP = Schedule(tz=UTC, after=2 * MINUTE, id="warmup")


def feeds(*schedules: Schedule, **settings: object) -> tuple[PluginConfig, DictCatalog]:
    catalog = DictCatalog(v2_manifest("feeds", "poll", "sync", "handle"))
    return PluginConfig(name="feeds", schedules=schedules, **settings), catalog  # type: ignore[arg-type]


def body(request: SpawnRequest) -> dict[str, object]:
    decoded: dict[str, object] = json.loads(request.stdin)
    return decoded


# =========================================================================== several schedules


@async_test
async def test_each_schedule_is_planned_and_fired_on_its_own_key_with_its_payload_and_command() -> None:
    pc, catalog = feeds(MORNING, HOURLY, ONCE, WARMUP)
    rig = Rig(make_config(pc), catalog)
    await rig.engine.start()
    planned = {p.key: p for p in await rig.store.all_planned()}
    assert set(planned) == {f"feeds/{i}" for i in ("morning", "hourly", "once", "warmup")}
    for schedule in (MORNING, HOURLY, ONCE, WARMUP):
        expected = plan_next(
            schedule, key=schedule_key("feeds", schedule.id), previous=None, now=T0, draw=0.5
        )
        assert planned[expected.key] == expected
    assert planned["feeds/warmup"].planned_at == T0 + 2 * MINUTE
    assert planned["feeds/once"].planned_at == T0 + 3 * HOUR

    for at in (T0, T0 + 2 * MINUTE, T0 + HOUR, T0 + 2 * HOUR, T0 + 3 * HOUR):
        rig.clock.set(at)
        await rig.engine.tick()
    by_schedule: dict[str | None, list[str]] = {}
    for job in await rig.jobs():
        assert job.submitted_by is SubmittedBy.SCHEDULER
        by_schedule.setdefault(job.schedule_id, []).append(job.command)
    # hourly fired once: its job is still queued (nothing dispatched), so its poll guard held later runs
    assert by_schedule == {"hourly": ["poll"], "warmup": ["poll"], "once": ["sync"]}
    done = await rig.store.planned("feeds/once")
    assert done is not None
    assert done.done
    assert (await rig.store.planned("feeds/warmup")).done  # type: ignore[union-attr]

    rig.clock.set(T0 + 4 * HOUR)
    await rig.engine.tick()
    assert sorted(j.schedule_id or "" for j in await rig.jobs()) == ["hourly", "once", "warmup"]

    # The next morning's run carries the schedule's payload.
    morning = await rig.store.planned("feeds/morning")
    assert morning is not None
    rig.clock.set(morning.planned_at)
    await rig.engine.tick()
    [job] = [j for j in await rig.jobs() if j.schedule_id == "morning"]
    assert job.payload == {"scope": "daily"}


@async_test
async def test_a_restart_plans_after_again_but_never_a_one_shot_that_fired() -> None:
    pc, catalog = feeds(ONCE, WARMUP)
    rig = Rig(make_config(pc), catalog)
    rig.script("feeds", ok())
    await rig.engine.start()
    for at in (T0 + 2 * MINUTE, T0 + 3 * HOUR):
        rig.clock.set(at)
        await rig.engine.tick()
        await rig.drain()
    assert len(await rig.jobs()) == 2
    rig.clock.set(T0 + 5 * HOUR)
    rig.engine = rig.new_engine(make_config(pc))
    await rig.engine.start()
    warm = await rig.store.planned("feeds/warmup")
    assert warm is not None
    assert warm.planned_at == T0 + 5 * HOUR + 2 * MINUTE  # from this start
    assert (await rig.store.planned("feeds/once")).done  # type: ignore[union-attr]
    rig.clock.set(T0 + 5 * HOUR + 2 * MINUTE)
    await rig.engine.tick()
    assert sorted(j.schedule_id or "" for j in await rig.jobs()) == ["once", "warmup", "warmup"]


@async_test
async def test_run_all_makes_one_job_per_missed_run_and_plans_after_now() -> None:
    hourly = Schedule(tz=UTC, every=HOUR, catch_up=CatchUp.RUN_ALL, id="hourly")
    pc, catalog = feeds(hourly, max_outstanding_polls=1)
    rig = Rig(make_config(pc), catalog)
    await rig.engine.start()
    rig.clock.set(T0 + 5 * HOUR + 10 * MINUTE)  # down for five hours: runs at T0 .. T0+5h were missed
    await rig.engine.tick()
    jobs = await rig.jobs()
    assert len(jobs) == 6
    assert {j.schedule_id for j in jobs} == {"hourly"}
    nxt = await rig.store.planned("feeds/hourly")
    assert nxt is not None
    assert nxt.planned_at == T0 + 6 * HOUR


@async_test
async def test_a_paused_schedule_enqueues_nothing_and_a_resumed_one_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    hourly = Schedule(tz=UTC, every=HOUR, id="hourly")
    pc, catalog = feeds(hourly, Schedule(tz=UTC, every=HOUR, id="other"))
    rig = Rig(make_config(pc), catalog)
    rig.script("feeds", ok())
    await rig.engine.start()
    assert await rig.store.pause("feeds", "hourly", now=T0)
    await rig.engine.tick()
    await rig.drain()
    assert [j.schedule_id for j in await rig.jobs()] == ["other"]
    [skipped] = records(caplog, component="scheduler", plugin="feeds", message="skipped: paused")
    assert skipped.fields["schedule"] == "hourly"  # type: ignore[attr-defined]
    await rig.store.resume("feeds", "hourly")
    rig.clock.set(T0 + HOUR)
    await rig.engine.tick()
    assert sorted(j.schedule_id or "" for j in await rig.jobs()) == ["hourly", "other", "other"]


@async_test
async def test_the_poll_guard_of_one_schedule_never_holds_back_another() -> None:
    pc, catalog = feeds(Schedule(tz=UTC, every=HOUR, id="a"), Schedule(tz=UTC, every=HOUR, id="b"))
    rig = Rig(make_config(pc), catalog)
    await rig.engine.start()
    await rig.engine.tick()  # both fire at T0; nothing runs them
    rig.clock.set(T0 + HOUR)
    await rig.engine.tick()  # both still outstanding: both skipped, neither blocks the other
    assert sorted(j.schedule_id or "" for j in await rig.jobs()) == ["a", "b"]


# =========================================================================== if_running: cancel


@async_test
async def test_if_running_cancel_stops_the_running_job_and_buries_the_queued_ones() -> None:
    cancel = Schedule(tz=UTC, every=HOUR, if_running=IfRunning.CANCEL, id="sync")
    pc, catalog = feeds(cancel)
    spawner = GatedSpawner()
    rig = Rig(make_config(pc), catalog, spawner=spawner)
    rig.script("feeds", SpawnOutcome(signal=9, duration=1.0))  # what a stopped process ends with
    await rig.engine.start()
    await rig.engine.tick()
    [first] = await rig.jobs()
    running = asyncio.create_task(rig.engine.dispatch_one())
    await spawner.started.wait()
    assert (await rig.job(first.id)).status is JobStatus.RUNNING
    rig.clock.set(T0 + HOUR)
    await rig.engine.tick()
    assert len(spawner.killed) == 1  # the scheduler stopped its process group
    spawner.gate.set()
    await running
    stopped = await rig.job(first.id)
    assert stopped.status is JobStatus.DEAD  # not retried
    assert stopped.last_error == "cancelled: schedule 'sync' fired again (if_running: cancel)"
    [_, second] = await rig.jobs()
    assert second.status is JobStatus.QUEUED
    rig.clock.set(T0 + 2 * HOUR)
    await rig.engine.tick()  # the second is still queued: cancelled, and a third takes its place
    assert (await rig.job(second.id)).status is JobStatus.DEAD
    assert [j.status for j in await rig.jobs()][-1] is JobStatus.QUEUED


# =========================================================================== the request of each protocol


@async_test
async def test_a_v2_plugin_gets_payload_and_context_and_a_v1_plugin_the_old_request() -> None:
    catalog = DictCatalog(v2_manifest("feeds", "poll", "handle"), manifest("old", "poll", "handle"))
    config = make_config(PluginConfig(name="feeds"), PluginConfig(name="old"))
    rig = Rig(config, catalog)
    rig.script("feeds", ok(events=[{"type": "item", "payload": {"url": "u"}}], result="1 item"))
    rig.script("old", ok())
    await rig.engine.start()
    await rig.engine.enqueue("feeds", payload={"scope": "all"})
    await rig.engine.enqueue("old", payload={"scope": "all"})
    await rig.drain()
    [v2] = rig.requests("feeds")
    assert (v2["protocol"], v2["payload"], v2["context"]) == (
        2,
        {"scope": "all"},
        {"ductile_plugin": "feeds"},
    )
    [v1] = rig.requests("old")
    assert list(v1) == ["protocol", "job_id", "command", "config", "state", "deadline_at"]


@async_test
async def test_a_routed_v2_handler_gets_the_upstream_plugin_the_depth_and_the_result() -> None:
    catalog = DictCatalog(v2_manifest("feeds", "poll"), v2_manifest("notify", "handle"))
    config = make_config(
        PluginConfig(name="feeds"), PluginConfig(name="notify"), routes=[route("feeds", "item", "notify")]
    )
    rig = Rig(config, catalog)
    rig.script("feeds", ok(events=[{"type": "item", "payload": {"url": "u"}}], result="1 new item"))
    rig.script("notify", ok())
    await rig.engine.start()
    await rig.engine.enqueue("feeds")
    await rig.drain()
    [handle] = rig.requests("notify")
    assert handle["event"]["payload"] == {"url": "u", "result": "1 new item"}  # type: ignore[index]
    assert handle["context"] == {
        "ductile_plugin": "notify",
        "ductile_upstream_plugin": "feeds",
        "ductile_route_depth": 1,
        "ductile_route_max_depth": 20,
    }
    assert "payload" not in handle
    [run] = await rig.store.runs((await rig.jobs("feeds"))[0].id)
    assert run.result == "1 new item"


@async_test
async def test_a_plugin_logging_at_debug_succeeds_and_its_line_is_logged_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="ductile")
    catalog = DictCatalog(v2_manifest("quiet", "poll"))
    rig = Rig(make_config(PluginConfig(name="quiet")), catalog)
    rig.script(
        "quiet", ok(logs=[{"level": "debug", "message": "no new rows"}, {"level": "trace", "message": "t"}])
    )
    await rig.engine.start()
    await rig.engine.enqueue("quiet")
    await rig.drain()
    [job] = await rig.jobs()
    assert job.status is JobStatus.SUCCEEDED
    [line] = records(caplog, component="plugin", message="no new rows")
    assert line.levelno == logging.DEBUG
    [kept] = records(caplog, component="plugin", message="[level 'trace'] t")
    assert kept.levelno == logging.INFO


@async_test
async def test_a_custom_command_gets_its_own_timeout_or_sixty_seconds() -> None:
    catalog = DictCatalog(v2_manifest("feeds", "poll", "sync", "report"))
    timeouts = Timeouts(custom={"sync": 90 * timedelta(seconds=1)})
    rig = Rig(make_config(PluginConfig(name="feeds", timeouts=timeouts)), catalog)
    rig.script("feeds", ok())
    await rig.engine.start()
    await rig.engine.enqueue("feeds", command="sync")
    await rig.engine.enqueue("feeds", command="report")
    await rig.drain()
    assert [s.timeout for s in rig.spawns("feeds")] == [90.0, 60.0]
    assert [body(s)["command"] for s in rig.spawns("feeds")] == ["sync", "report"]


# =========================================================================== the environment


@async_test
async def test_env_passes_named_variables_and_sets_others_and_nothing_else_leaks() -> None:
    catalog = DictCatalog(manifest("git", "poll"), manifest("plain", "poll"))
    service = ServiceConfig(state_dir="/srv/ductile/state", plugin_env=EnvSettings(values={"SHARED": "1"}))
    env = EnvSettings(passed=("GITHUB_TOKEN", "NOT_SET_ANYWHERE"), values={"GIT_AUTHOR_NAME": "ductile"})
    config = attrs.evolve(
        make_config(PluginConfig(name="git", env=env), PluginConfig(name="plain")), service=service
    )
    rig = Rig(config, catalog)
    rig.script("git", ok())
    rig.script("plain", ok())
    await rig.engine.start()
    await rig.engine.enqueue("git")
    await rig.engine.enqueue("plain")
    await rig.drain()
    [git] = rig.spawns("git")
    assert git.env["GITHUB_TOKEN"] == "ghp_s3cr3t"
    assert git.env["GIT_AUTHOR_NAME"] == "ductile"
    assert "SHARED" not in git.env  # the plugin's own set replaces the service's
    assert "NOT_SET_ANYWHERE" not in git.env
    assert "AWS_SECRET_ACCESS_KEY" not in git.env
    assert git.env["DUCTILE_PLUGIN"] == "git"
    assert "DUCTILE_CONFIG" not in git.env
    [plain] = rig.spawns("plain")
    assert "GITHUB_TOKEN" not in plain.env
    assert plain.env["SHARED"] == "1"
    for job in await rig.jobs():
        assert "ghp_s3cr3t" not in json.dumps(job.payload)


# =========================================================================== facts, loops, aliases


@async_test
async def test_facts_are_recorded_and_the_state_mirrors_the_latest() -> None:
    rule = FactOutput(command="poll", fact_type="feeds.snapshot")
    catalog = DictCatalog(v2_manifest("feeds", "poll", facts=(rule,)))
    rig = Rig(make_config(PluginConfig(name="feeds")), catalog)
    rig.script("feeds", ok(state_updates={"seen": 1, "cursor": "a"}))
    await rig.engine.start()
    await rig.engine.enqueue("feeds")
    await rig.drain()
    rig.script("feeds", ok(state_updates={"seen": 2}))
    await rig.engine.enqueue("feeds")
    await rig.drain()
    assert await rig.store.get_state("feeds") == {"seen": 2}
    assert [f.body for f in await rig.store.facts("feeds")] == [{"seen": 2}, {"seen": 1, "cursor": "a"}]


@async_test
async def test_a_routing_loop_stops_at_the_depth_limit_logs_the_chain_and_counts_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    catalog = DictCatalog(manifest("a", "poll", "handle"), manifest("b", "handle"))
    config = make_config(
        PluginConfig(name="a"),
        PluginConfig(name="b"),
        routes=[route("a", "ping", "b"), route("b", "pong", "a")],
    )
    config = attrs.evolve(config, service=attrs.evolve(config.service, max_route_depth=3))
    rig = Rig(config, catalog)
    rig.script("a", ok(events=[{"type": "ping"}]))
    rig.script("b", ok(events=[{"type": "pong"}]))
    await rig.engine.start()
    await rig.engine.enqueue("a")
    assert await rig.drain() == 4  # a (root), b (1), a (2), b (3): the chain stops there
    jobs = await rig.jobs()
    assert [(j.plugin, j.route_depth) for j in jobs] == [("a", 0), ("b", 1), ("a", 2), ("b", 3)]
    assert all(j.status is JobStatus.SUCCEEDED for j in jobs)
    assert await rig.store.counts() == {ROUTE_DEPTH_DROPS: 1}
    [warning] = records(caplog, component="router", message="not routed to 'a'")
    assert warning.levelno == logging.WARNING
    assert warning.fields["chain"] == "a -> b -> a -> b"
    assert "the limit (service.max_route_depth) is 3" in warning.getMessage()


@async_test
async def test_an_alias_runs_its_base_with_its_own_config_state_and_name() -> None:
    catalog = DictCatalog(v2_manifest("switch", "handle", "poll"))
    config = make_config(
        PluginConfig(name="switch", config={"field": "a"}),
        PluginConfig(name="check", uses="switch", config={"field": "b"}),
    )
    rig = Rig(config, catalog)
    rig.script("switch", lambda r: ok(state_updates={"me": body(r)["context"]["ductile_plugin"]}))  # type: ignore[index]
    await rig.engine.start()
    await rig.engine.enqueue("switch")
    await rig.engine.enqueue("check")
    await rig.drain()
    requests = rig.requests("switch")  # one executable, two instances
    assert [(r["config"], r["context"]) for r in requests] == [
        ({"field": "a"}, {"ductile_plugin": "switch"}),
        ({"field": "b"}, {"ductile_plugin": "check"}),
    ]
    assert [s.env["DUCTILE_PLUGIN"] for s in rig.spawns("switch")] == ["switch", "check"]
    assert await rig.store.get_state("switch") == {"me": "switch"}
    assert await rig.store.get_state("check") == {"me": "check"}
