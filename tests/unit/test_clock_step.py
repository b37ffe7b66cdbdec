"""A backward step of the wall clock (issue 19, item 9; ADR 0045).

Before: a -1 h step (NTP, a restored VM) stalled every schedule and every retry
for an hour, because every pending instant is stored as wall time. Now the
clock notices the step (wall vs monotonic) and the next tick moves every
pending instant back by it: each keeps the real time it had left; a cron run
lands back on its grid, never on a wall time it already fired.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ductile.adapters import system_clock
from ductile.adapters.system_clock import SystemClock
from ductile.domain import clock_step
from ductile.domain.breaker import Breaker, BreakerStatus
from ductile.domain.config import PluginConfig
from ductile.domain.job import JobStatus, SubmittedBy
from ductile.domain.retry import RetryPolicy
from ductile.domain.schedule import PlannedRun, Schedule, Window, cron_fires, plan_next
from ductile.fakes.catalog import DictCatalog
from ductile.fakes.spawner import error, ok
from tests.support import builders
from tests.support.builders import BERLIN, make_config, manifest
from tests.support.rigs import T0, Rig, async_test, records, sequence

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


def first_plan(schedule: Schedule, now: datetime = T0) -> PlannedRun:
    return plan_next(schedule, key="p", previous=None, now=now, draw=0.5)


# --------------------------------------------------------------------------- the domain's rule


def test_an_every_run_keeps_its_remaining_real_time() -> None:
    schedule = Schedule(tz=UTC, every=5 * MINUTE, jitter=MINUTE)
    entry = plan_next(schedule, key="p", previous=first_plan(schedule), now=T0, draw=0.9)
    moved = clock_step.planned_run(schedule, entry, HOUR)
    assert moved.nominal_at == entry.nominal_at - HOUR
    assert moved.planned_at == entry.planned_at - HOUR
    assert moved.offset == entry.offset


def test_a_frequent_cron_keeps_its_cadence_on_the_new_clock() -> None:
    schedule = Schedule(tz=UTC, cron="*/5 * * * *")
    fired = datetime(2026, 3, 2, 12, 30, tzinfo=UTC)
    entry = plan_next(schedule, key="p", previous=first_plan(schedule, fired - MINUTE), now=fired, draw=0.5)
    assert entry.planned_at == datetime(2026, 3, 2, 12, 35, tzinfo=UTC)
    # at 12:32 the clock steps back to 11:32: the next run is at 11:35, 3 minutes away as before
    moved = clock_step.planned_run(schedule, entry, HOUR)
    assert moved.planned_at == datetime(2026, 3, 2, 11, 35, tzinfo=UTC)


def test_a_daily_cron_never_fires_twice_for_one_day() -> None:
    schedule = Schedule(tz=BERLIN, cron="30 7 * * *")
    fired = datetime(2026, 3, 2, 7, 30, tzinfo=BERLIN)
    entry = plan_next(schedule, key="p", previous=first_plan(schedule, fired - MINUTE), now=fired, draw=0.5)
    tomorrow = datetime(2026, 3, 3, 7, 30, tzinfo=BERLIN)
    assert entry.planned_at == tomorrow
    for step in (timedelta(minutes=15), HOUR, 3 * HOUR):
        # 07:30 fired; the clock steps back: today's 07:30 must not come again
        assert clock_step.planned_run(schedule, entry, step).planned_at == tomorrow


def test_a_windowed_run_moved_out_of_its_window_snaps_to_the_next_one() -> None:
    schedule = Schedule(tz=UTC, every=HOUR, window=Window.parse("09:00", "17:00"))
    entry = plan_next(schedule, key="p", previous=None, now=T0 + 5 * MINUTE, draw=0.5)  # 09:05
    moved = clock_step.planned_run(schedule, entry, HOUR)  # 08:05 is outside the window
    assert moved.planned_at == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    assert Window.parse("09:00", "17:00").contains(moved.planned_at, UTC)


def test_a_run_of_another_version_of_the_schedule_is_left_for_the_next_tick() -> None:
    entry = first_plan(Schedule(tz=UTC, every=HOUR))
    assert clock_step.planned_run(Schedule(tz=UTC, every=2 * HOUR), entry, HOUR) == entry


@settings(max_examples=100, deadline=None)
@given(
    cron=st.sampled_from(["*/5 * * * *", "0 * * * *", "30 7 * * *", "15 3 * * 1-5", "0 0 1 * *"]),
    minutes=st.integers(0, 60 * 24 * 10),
    step_minutes=st.integers(1, 60 * 48),
)
def test_a_cron_run_after_a_step_is_on_the_grid_and_never_sooner_in_real_time(
    cron: str, minutes: int, step_minutes: int
) -> None:
    schedule = Schedule(tz=BERLIN, cron=cron)
    now = T0 + timedelta(minutes=minutes)
    entry = first_plan(schedule, now)
    step = timedelta(minutes=step_minutes)
    moved = clock_step.planned_run(schedule, entry, step)
    left_before = entry.planned_at - now
    left_after = moved.planned_at - (now - step)
    assert left_after >= left_before, "never sooner, in real time, than it was planned"
    # on the grid: the first fire at or after the shifted instant
    shifted = entry.nominal_at - step
    assert moved.nominal_at >= shifted
    assert next(cron_fires(cron, shifted - timedelta(microseconds=1), BERLIN)) == moved.nominal_at


def test_an_at_one_shot_keeps_its_wall_instant_and_a_done_one_stays_done() -> None:
    """Merged with issue 13's one-shots: ``at`` names a wall instant (like cron); a done
    one-shot is planned at the end of time, which moving back would have revived."""
    schedule = Schedule(tz=UTC, at=T0 + 3 * HOUR)
    entry = first_plan(schedule)
    assert clock_step.planned_run(schedule, entry, HOUR) == entry
    done = plan_next(schedule, key="p", previous=entry, now=T0 + 3 * HOUR, draw=0.5)
    assert done.done
    assert clock_step.planned_run(schedule, done, HOUR) == done


def test_an_after_one_shot_keeps_its_remaining_real_time() -> None:
    schedule = Schedule(tz=UTC, after=2 * HOUR)
    entry = first_plan(schedule)
    moved = clock_step.planned_run(schedule, entry, HOUR)
    assert (moved.planned_at, moved.done) == (entry.planned_at - HOUR, False)


def test_a_run_never_moves_onto_a_not_on_day() -> None:
    schedule = Schedule(tz=UTC, every=HOUR, not_on=frozenset({6}))  # never on Sundays
    monday = datetime(2026, 3, 2, tzinfo=UTC)
    at = monday + 30 * MINUTE
    entry = PlannedRun(
        key="p", fingerprint=schedule.fingerprint(), nominal_at=at, planned_at=at, offset=timedelta(0)
    )
    assert clock_step.planned_run(schedule, entry, HOUR) == entry  # 23:30 on Sunday: kept at 00:30
    later = attrs.evolve(entry, nominal_at=at + 2 * HOUR, planned_at=at + 2 * HOUR)
    assert clock_step.planned_run(schedule, later, HOUR).planned_at == at + HOUR


def test_retry_times_and_breakers_move_back_by_the_step() -> None:
    job = builders.job("j", "p", "poll", status=JobStatus.QUEUED, next_retry_at=T0 + MINUTE)
    assert clock_step.retry(job, HOUR).next_retry_at == T0 + MINUTE - HOUR
    plain = builders.job("k", "p", "poll")
    assert clock_step.retry(plain, HOUR) == plain
    opened = Breaker(plugin="p", command="poll", status=BreakerStatus.OPEN, failures=3, opened_at=T0)
    assert clock_step.breaker(opened, HOUR).opened_at == T0 - HOUR
    probing = Breaker(plugin="p", command="poll", status=BreakerStatus.HALF_OPEN, opened_at=T0, probe_at=T0)
    assert clock_step.breaker(probing, HOUR).probe_at == T0 - HOUR


# --------------------------------------------------------------------------- noticing the step


class Sources:
    """A wall clock and a monotonic clock that move only when told."""

    def __init__(self) -> None:
        self.wall = T0.timestamp()
        self.mono = 1000.0

    def elapse(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def test_the_system_clock_notices_a_backward_step_once() -> None:
    src = Sources()
    clock = SystemClock(wall=lambda: src.wall, monotonic=lambda: src.mono)
    assert clock.stepped_back() == timedelta(0)
    src.elapse(10)
    src.wall -= 0.3  # noise and slewing: not a step
    assert clock.stepped_back() == timedelta(0)
    src.wall += 7200  # forward steps need nothing
    assert clock.stepped_back() == timedelta(0)
    src.wall -= 3600
    assert clock.now() == datetime.fromtimestamp(src.wall, UTC)
    src.elapse(5)
    assert clock.stepped_back() == timedelta(seconds=3600)
    assert clock.stepped_back() == timedelta(0), "reported once"


def test_a_sleep_is_cut_short_by_a_backward_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system_clock, "SLICE", 0.05)  # the sleep looks at the clock every slice
    src = Sources()
    clock = SystemClock(wall=lambda: src.wall, monotonic=lambda: src.mono)

    async def main() -> None:
        sleeper = asyncio.ensure_future(clock.sleep_until(clock.now() + timedelta(seconds=600)))
        await asyncio.sleep(0.01)
        assert not sleeper.done()
        src.wall -= 3600
        await asyncio.wait_for(sleeper, timeout=5.0)

    asyncio.run(main())
    assert clock.stepped_back() == timedelta(seconds=3600)


# --------------------------------------------------------------------------- the engine


@async_test
async def test_after_a_step_back_schedules_and_retries_keep_their_real_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    catalog = DictCatalog(manifest("tick", "poll"), manifest("flaky", "poll"))
    config = make_config(
        PluginConfig(name="tick", schedule=Schedule(tz=UTC, every=5 * MINUTE)),
        PluginConfig(name="flaky", retry=RetryPolicy(max_attempts=3, backoff_base=timedelta(seconds=30))),
    )
    rig = Rig(config, catalog, draw=lambda: 0.0)
    rig.script("tick", ok())
    rig.script("flaky", sequence(error("down"), ok()))
    await rig.engine.start()
    await rig.engine.tick()  # tick's first run, at T0
    await rig.drain()
    await rig.engine.enqueue("flaky", submitted_by=SubmittedBy.CLI)
    await rig.drain()  # fails: retry in 30 s
    [flaky] = await rig.jobs("flaky")
    assert flaky.next_retry_at == T0 + timedelta(seconds=30)

    rig.clock.advance(timedelta(seconds=10))
    rig.clock.step_back(HOUR)  # 09:00:10 -> 08:00:10
    await rig.engine.tick()

    [flaky] = await rig.jobs("flaky")
    assert flaky.next_retry_at == T0 + timedelta(seconds=30) - HOUR  # still 20 s away
    planned = await rig.store.planned("tick/default")
    assert planned is not None
    assert planned.planned_at == T0 + 5 * MINUTE - HOUR  # still 4 min 50 s away
    [line] = records(caplog, component="scheduler", message="the wall clock stepped back by 1h")
    assert "re-planned 1 schedule(s), moved 1 retry time(s)" in line.getMessage()

    rig.clock.advance(timedelta(seconds=20))
    assert await rig.drain() == 1  # the retry runs on time
    rig.clock.set(planned.planned_at)
    await rig.engine.tick()
    await rig.drain()
    ticks = [j for j in await rig.jobs("tick") if j.submitted_by is SubmittedBy.SCHEDULER]
    assert len(ticks) == 2  # on time, once
    # an hour of real time on the new clock, past the wall times the old clock had reached:
    # one run every 5 minutes, none twice
    for k in range(1, 13):
        rig.clock.set(planned.planned_at + k * 5 * MINUTE)
        await rig.engine.tick()
        await rig.drain()
    created = [j.created_at for j in await rig.jobs("tick") if j.submitted_by is SubmittedBy.SCHEDULER]
    # (the wall time 09:00 comes twice: once on each side of the step, an hour of real time apart)
    assert sorted(created) == sorted([T0] + [planned.planned_at + k * 5 * MINUTE for k in range(13)])
