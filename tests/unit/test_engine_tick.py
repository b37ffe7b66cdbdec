"""Engine.tick on fakes: the scheduler runner (D17, D21), breaker admission (D3), retention (D19)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from ductile.domain.breaker import BreakerPolicy, BreakerStatus
from ductile.domain.config import PluginConfig
from ductile.domain.job import Actor, JobStatus, SubmittedBy
from ductile.domain.protocol import EmittedEvent
from ductile.domain.retry import RetryPolicy
from ductile.domain.routing import child_job_id
from ductile.domain.schedule import CatchUp, PlannedRun, Schedule, timer_event_id
from ductile.fakes.catalog import DictCatalog
from ductile.fakes.spawner import error, ok
from tests.support.builders import BERLIN, every, make_config, manifest, route
from tests.support.rigs import T0, Rig, async_test, records, sequence

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


def draws(*values: float) -> Callable[[], float]:
    """A draw function returning ``values`` in turn, then 0.5 forever."""
    it: Iterator[float] = iter(values)
    return lambda: next(it, 0.5)


def scheduled(schedule: Schedule, **settings: object) -> tuple[PluginConfig, DictCatalog]:
    catalog = DictCatalog(manifest("alpha", "poll", "handle"))
    return PluginConfig(name="alpha", schedule=schedule, **settings), catalog  # type: ignore[arg-type]


# =========================================================================== planning and firing


@async_test
async def test_start_plans_the_schedule_and_a_due_tick_enqueues_a_scheduler_poll_on_the_same_grid(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    schedule = every(HOUR, jitter=timedelta(minutes=10))
    pc, catalog = scheduled(schedule, retry=RetryPolicy(max_attempts=6))
    # draws: the first plan (+4 min), the next plan (-4 min)
    rig = Rig(make_config(pc), catalog, draw=draws(0.9, 0.1))
    await rig.engine.start()

    first = await rig.store.planned("alpha/default")
    assert first is not None
    assert first.fingerprint == schedule.fingerprint()
    assert first.nominal_at == T0 + timedelta(minutes=5)  # anchored at now + jitter / 2
    assert first.planned_at == T0 + timedelta(minutes=9)
    [planned_log] = records(caplog, component="scheduler", plugin="alpha")
    assert planned_log.getMessage() == "schedule planned: next run at 2026-03-02T09:09:00+00:00"

    rig.clock.set(first.planned_at - timedelta(seconds=1))
    await rig.engine.tick()
    assert await rig.jobs() == []

    rig.clock.set(first.planned_at)
    before = rig.inbox.notifications
    await rig.engine.tick()

    [job] = await rig.jobs()
    assert (job.plugin, job.command, job.status) == ("alpha", "poll", JobStatus.QUEUED)
    assert (job.submitted_by, job.max_attempts, job.created_at) == (
        SubmittedBy.SCHEDULER,
        6,
        first.planned_at,
    )
    assert await rig.history(job.id) == [(None, "queued", Actor.SCHEDULER.value)]
    assert rig.inbox.notifications == before + 1
    nxt = await rig.store.planned("alpha/default")
    assert nxt is not None
    assert nxt.nominal_at == first.nominal_at + HOUR  # the grid, not "last run + interval"
    assert nxt.planned_at == nxt.nominal_at - timedelta(minutes=4)
    [fired] = records(caplog, component="scheduler", plugin="alpha", message="enqueued")
    assert fired.getMessage() == "scheduled run enqueued; next at 2026-03-02T10:01:00+00:00"
    assert fired.fields["jobs"] == [job.id]

    await rig.engine.tick()  # the same instant again: nothing more is due
    assert len(await rig.jobs()) == 1


@async_test
async def test_runs_stay_on_the_grid_however_late_the_job_runs() -> None:
    pc, catalog = scheduled(every(HOUR))
    rig = Rig(make_config(pc), catalog)
    rig.script("alpha", ok())
    await rig.engine.start()
    nominals = []
    for _ in range(4):
        entry = await rig.store.planned("alpha/default")
        assert entry is not None
        nominals.append(entry.nominal_at)
        rig.clock.set(entry.planned_at + timedelta(seconds=40))  # a late tick, within the grace
        await rig.engine.tick()
        rig.clock.advance(timedelta(minutes=7))  # a slow job
        await rig.drain()
    assert nominals == [T0 + k * HOUR for k in range(4)]
    assert [j.status for j in await rig.jobs()] == [JobStatus.SUCCEEDED] * 4


@async_test
async def test_tick_returns_the_earlier_of_the_next_planned_run_and_now_plus_tick_interval() -> None:
    pc, catalog = scheduled(every(HOUR))
    rig = Rig(make_config(pc, tick_interval=timedelta(seconds=90)), catalog)
    await rig.engine.start()

    assert await rig.engine.tick() == T0 + timedelta(seconds=90)  # fired at T0, next at T0 + 1h
    rig.clock.set(T0 + HOUR - timedelta(seconds=30))
    assert await rig.engine.tick() == T0 + HOUR


@async_test
async def test_tick_without_schedules_wakes_after_tick_interval() -> None:
    catalog = DictCatalog(manifest("alpha", "poll"))
    rig = Rig(make_config(PluginConfig(name="alpha"), tick_interval=timedelta(seconds=15)), catalog)
    await rig.engine.start()
    assert await rig.store.all_planned() == []
    assert await rig.engine.tick() == T0 + timedelta(seconds=15)


@async_test
async def test_a_planned_row_whose_plugin_disappeared_is_deleted_and_fires_nothing() -> None:
    pc, catalog = scheduled(every(HOUR))
    rig = Rig(make_config(pc), catalog)
    await rig.engine.start()
    ghost = PlannedRun(
        key="ghost/default",
        fingerprint="x",
        nominal_at=T0 - MINUTE,
        planned_at=T0 - MINUTE,
        offset=timedelta(0),
    )
    await rig.store.put_planned(ghost)

    await rig.engine.tick()

    assert await rig.store.planned("ghost/default") is None
    assert [j.plugin for j in await rig.jobs()] == ["alpha"]


# =========================================================================== poll guard (D21)


@async_test
async def test_the_poll_guard_skips_a_run_while_a_poll_is_outstanding_and_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    pc, catalog = scheduled(every(HOUR))
    rig = Rig(make_config(pc), catalog)
    rig.script("alpha", ok())
    await rig.engine.start()
    await rig.engine.tick()
    [job] = await rig.jobs()

    rig.clock.set(T0 + HOUR)
    await rig.engine.tick()

    assert await rig.jobs() == [job]
    entry = await rig.store.planned("alpha/default")
    assert entry is not None
    assert entry.nominal_at == T0 + 2 * HOUR  # the skipped run is not retried: the plan moves on
    [skip] = records(caplog, component="scheduler", plugin="alpha", message="skipped")
    assert skip.levelno == logging.INFO
    assert skip.getMessage() == "scheduled run skipped: a job of this schedule is still queued or running"

    await rig.drain()
    rig.clock.set(T0 + 2 * HOUR)
    await rig.engine.tick()
    assert len(await rig.jobs()) == 2


@async_test
async def test_max_outstanding_polls_allows_that_many() -> None:
    pc, catalog = scheduled(every(HOUR), max_outstanding_polls=2)
    rig = Rig(make_config(pc), catalog)
    await rig.engine.start()
    for k in range(4):
        rig.clock.set(T0 + k * HOUR)
        await rig.engine.tick()
    assert len(await rig.jobs()) == 2


@async_test
async def test_the_poll_guard_does_not_count_other_commands_or_other_plugins() -> None:
    pc, catalog = scheduled(every(HOUR))
    rig = Rig(make_config(pc), catalog)
    await rig.engine.start()
    await rig.engine.enqueue("alpha", command="handle")
    await rig.engine.tick()
    assert sorted(j.command for j in await rig.jobs()) == ["handle", "poll"]


# =========================================================================== circuit breaker (D3)


async def fail_three_scheduled_runs(rig: Rig) -> None:
    for k in range(3):
        rig.clock.set(T0 + k * 10 * MINUTE)
        await rig.engine.tick()
        assert await rig.engine.dispatch_one()


@async_test
async def test_three_failed_scheduled_runs_open_the_breaker_and_ticks_skip_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    pc, catalog = scheduled(every(10 * MINUTE), retry=RetryPolicy(max_attempts=1))
    rig = Rig(make_config(pc), catalog)
    rig.script("alpha", error("API down"))
    await rig.engine.start()

    await fail_three_scheduled_runs(rig)

    breaker = await rig.store.get_breaker("alpha", "poll")
    assert breaker is not None
    assert (breaker.status, breaker.failures, breaker.opened_at) == (BreakerStatus.OPEN, 3, T0 + 20 * MINUTE)
    for k in (3, 4):
        rig.clock.set(T0 + k * 10 * MINUTE)
        await rig.engine.tick()
    assert len(await rig.jobs()) == 3
    skips = records(caplog, component="scheduler", plugin="alpha", message="circuit breaker open")
    assert [(r.levelno, r.getMessage()) for r in skips] == [
        (logging.WARNING, "scheduled run skipped: circuit breaker open")
    ] * 2
    entry = await rig.store.planned("alpha/default")
    assert entry is not None
    assert entry.nominal_at == T0 + 50 * MINUTE  # skipped runs still advance the plan

    # D3: the breaker blocks only the scheduler: an operator's run still goes.
    rig.script("alpha", ok())
    await rig.engine.enqueue("alpha")
    assert await rig.engine.dispatch_one()
    assert (await rig.jobs())[-1].status is JobStatus.SUCCEEDED
    breaker = await rig.store.get_breaker("alpha", "poll")
    assert breaker is not None
    assert breaker.status is BreakerStatus.OPEN


@pytest.mark.parametrize("probe_succeeds", [True, False])
@async_test
async def test_after_reset_after_one_half_open_probe_goes_and_its_result_closes_or_reopens(
    probe_succeeds: bool,
) -> None:
    policy = BreakerPolicy(threshold=3, reset_after=30 * MINUTE)
    pc, catalog = scheduled(every(10 * MINUTE), retry=RetryPolicy(max_attempts=1), circuit_breaker=policy)
    rig = Rig(make_config(pc), catalog)
    rig.script("alpha", error("API down"))
    await rig.engine.start()
    await fail_three_scheduled_runs(rig)  # opened at T0 + 20 min

    rig.clock.set(T0 + 40 * MINUTE)
    await rig.engine.tick()
    assert len(await rig.jobs()) == 3
    rig.clock.set(T0 + 50 * MINUTE)  # opened_at + reset_after
    await rig.engine.tick()
    jobs = await rig.jobs()
    assert len(jobs) == 4
    probe = jobs[-1]
    breaker = await rig.store.get_breaker("alpha", "poll")
    assert breaker is not None
    assert (breaker.status, breaker.probe_at) == (BreakerStatus.HALF_OPEN, T0 + 50 * MINUTE)

    rig.script("alpha", ok() if probe_succeeds else error("still down"))
    assert await rig.engine.dispatch_one()
    breaker = await rig.store.get_breaker("alpha", "poll")
    assert breaker is not None
    rig.clock.set(T0 + 60 * MINUTE)
    await rig.engine.tick()
    if probe_succeeds:
        assert (await rig.job(probe.id)).status is JobStatus.SUCCEEDED
        assert breaker.status is BreakerStatus.CLOSED
        assert len(await rig.jobs()) == 5
    else:
        assert (breaker.status, breaker.opened_at) == (BreakerStatus.OPEN, T0 + 50 * MINUTE)
        assert len(await rig.jobs()) == 4


# =========================================================================== missed runs


@pytest.mark.parametrize(
    ("catch_up", "jobs"),
    [(CatchUp.SKIP, 0), (CatchUp.RUN_ONCE, 1)],
)
@async_test
async def test_runs_missed_beyond_the_grace_are_skipped_or_run_once(
    catch_up: CatchUp, jobs: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    pc, catalog = scheduled(every(HOUR, catch_up=catch_up))
    rig = Rig(make_config(pc), catalog)
    await rig.engine.start()  # planned at T0
    rig.clock.set(T0 + 5 * HOUR + 30 * MINUTE)  # the daemon "slept" through six runs

    await rig.engine.tick()

    assert len(await rig.jobs()) == jobs
    entry = await rig.store.planned("alpha/default")
    assert entry is not None
    assert entry.nominal_at == T0 + 6 * HOUR  # the next grid point after now, never a backlog
    missed = records(caplog, component="scheduler", message="missed run")
    if catch_up is CatchUp.SKIP:
        [line] = missed
        assert line.getMessage() == "missed run at 2026-03-02T09:00:00+00:00 skipped (catch_up: skip)"
        assert line.fields["late_seconds"] == 5.5 * 3600
    else:
        assert missed == []
    rig.script("alpha", ok())
    await rig.drain()  # out of the poll guard's way
    rig.clock.set(T0 + 6 * HOUR)
    await rig.engine.tick()
    assert len(await rig.jobs()) == jobs + 1


@async_test
async def test_a_run_late_by_less_than_the_grace_still_fires() -> None:
    # grace = max(2 * tick_interval, 60 s) = 120 s
    pc, catalog = scheduled(every(HOUR))
    rig = Rig(make_config(pc), catalog)
    await rig.engine.start()
    rig.clock.set(T0 + timedelta(seconds=120))
    await rig.engine.tick()
    assert len(await rig.jobs()) == 1


@async_test
async def test_a_run_late_by_just_over_the_grace_is_skipped() -> None:
    pc, catalog = scheduled(every(HOUR))
    rig = Rig(make_config(pc, tick_interval=timedelta(minutes=5)), catalog)  # grace 10 min
    await rig.engine.start()
    rig.clock.set(T0 + timedelta(minutes=10, seconds=1))
    await rig.engine.tick()
    assert await rig.jobs() == []


# =========================================================================== timer triggers


@async_test
async def test_a_timer_schedule_fans_its_event_out_into_handle_jobs_with_a_derived_event_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    digest = EmittedEvent(type="morning.digest", payload={"lang": "de"})
    timer = Schedule(tz=BERLIN, cron="30 7 * * *", emit=digest)
    catalog = DictCatalog(
        manifest("clock", "poll"), manifest("mailer", "handle"), manifest("notes", "handle")
    )
    config = make_config(
        PluginConfig(name="clock", schedule=timer),
        PluginConfig(name="mailer", retry=RetryPolicy(max_attempts=2)),
        PluginConfig(name="notes"),
        routes=[
            route("clock", "morning.digest", "mailer"),
            route("clock", "morning.digest", "notes"),
            route("clock", "morning.digest", "ghost"),
            route("clock", "evening.digest", "notes"),
        ],
    )
    rig = Rig(config, catalog)
    rig.script("mailer", ok())
    rig.script("notes", ok())
    await rig.engine.start()
    entry = await rig.store.planned("clock/default")
    assert entry is not None
    nominal = T0.replace(day=3, hour=6, minute=30)  # 07:30 in Berlin (UTC+1) the next morning
    assert entry.planned_at == nominal

    rig.clock.set(nominal)
    await rig.engine.tick()

    jobs = await rig.jobs()
    event_id = timer_event_id("clock/default", nominal)
    envelope = {
        "type": "morning.digest",
        "payload": {"lang": "de"},
        "source": "clock",
        "timestamp": "2026-03-03T06:30:00Z",
        "event_id": event_id,
    }
    assert [(j.plugin, j.command) for j in jobs] == [("mailer", "handle"), ("notes", "handle")]
    for job in jobs:
        assert job.id == child_job_id(event_id, event_id, job.plugin, "handle")
        assert job.payload == envelope
        assert (job.submitted_by, job.parent_job_id, job.source_event_id) == (
            SubmittedBy.ROUTE,
            None,
            event_id,
        )
    assert [j.max_attempts for j in jobs] == [2, 4]
    [unroutable] = records(caplog, component="router", plugin="clock")
    assert unroutable.levelno == logging.WARNING
    assert unroutable.getMessage() == "timer event 'morning.digest' routed to 'ghost', which is not loaded"

    assert await rig.drain() == 2
    assert rig.requests("mailer")[0]["event"] == envelope
    assert rig.spawns("clock") == []  # a timer runs no command of its own

    # The next morning: a new event id, so new jobs, and no poll guard in the way.
    rig.clock.set(nominal + timedelta(days=1))
    await rig.engine.tick()
    later = await rig.jobs()
    assert len(later) == 4
    assert {j.source_event_id for j in later[2:]} == {
        timer_event_id("clock/default", nominal + timedelta(days=1))
    }


# =========================================================================== retention (D19)


@async_test
async def test_retention_deletes_old_finished_jobs_at_most_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    catalog = DictCatalog(manifest("alpha", "poll"))
    rig = Rig(make_config(PluginConfig(name="alpha"), retention=HOUR), catalog)
    rig.script("alpha", sequence(ok(), ok(), error("x", retry=False)))
    await rig.engine.start()
    old = (await rig.engine.enqueue("alpha")).job_id
    await rig.engine.dispatch_one()  # succeeded at T0
    rig.clock.set(T0 + timedelta(seconds=10))
    newer = (await rig.engine.enqueue("alpha")).job_id
    await rig.engine.dispatch_one()  # succeeded at T0 + 10 s
    dead = (await rig.engine.enqueue("alpha")).job_id
    await rig.engine.dispatch_one()  # dead at T0 + 10 s
    waiting = (await rig.engine.enqueue("alpha", command="poll", payload={"w": 1})).job_id  # stays queued
    await rig.engine.tick()  # retention runs now: nothing is old enough

    rig.clock.set(T0 + HOUR + timedelta(seconds=5))
    await rig.engine.tick()
    assert await rig.store.get_job(old) is None
    assert await rig.store.transitions(old) == []
    assert {j.id for j in await rig.jobs()} == {newer, dead, waiting}
    [line] = records(caplog, component="retention")
    assert line.getMessage() == "retention: deleted 1 finished job(s) older than 2026-03-02T09:00:05+00:00"

    rig.clock.set(T0 + HOUR + timedelta(seconds=35))  # old enough now, but retention ran 30 s ago
    await rig.engine.tick()
    assert {j.id for j in await rig.jobs()} == {newer, dead, waiting}

    rig.clock.set(T0 + HOUR + timedelta(seconds=65))
    await rig.engine.tick()
    assert {j.id for j in await rig.jobs()} == {waiting}
    assert (await rig.job(waiting)).status is JobStatus.QUEUED
