"""FakeClock specifics beyond the Clock contract: it never goes backwards, jumps to the
next wake-up, fires timers in order of their instants, and ``run_until`` drives tasks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ductile.fakes.clock import FakeClock

START = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


def sec(n: float) -> timedelta:
    return timedelta(seconds=n)


# --------------------------------------------------------------------------- never backwards


def test_it_starts_where_told_in_utc() -> None:
    berlin_summer = timezone(timedelta(hours=2))
    clock = FakeClock(datetime(2026, 5, 1, 11, 0, tzinfo=berlin_summer))
    assert clock.now() == START
    assert clock.now().tzinfo == UTC


def test_a_naive_start_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        FakeClock(datetime(2026, 5, 1, 9, 0))


def test_it_never_goes_backwards() -> None:
    clock = FakeClock(START)
    clock.advance(10)
    with pytest.raises(ValueError, match="backwards"):
        clock.set(START)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(sec(-0.001))
    assert clock.now() == START + sec(10)
    clock.set(clock.now())  # standing still is fine
    clock.advance(0)
    assert clock.now() == START + sec(10)


def test_set_keeps_now_in_utc_whatever_zone_it_is_given() -> None:
    clock = FakeClock(START)
    clock.set(datetime(2026, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))))
    assert clock.now() == START + timedelta(hours=1)
    assert clock.now().tzinfo == UTC


def test_set_refuses_a_naive_time() -> None:
    clock = FakeClock(START)
    with pytest.raises(ValueError, match="aware"):
        clock.set(datetime(2026, 5, 1, 10, 0))
    assert clock.now() == START


@settings(max_examples=100)
@given(
    steps=st.lists(st.one_of(st.floats(-100, 1000, allow_nan=False), st.integers(-100, 1000)), max_size=30)
)
def test_now_is_non_decreasing_under_any_moves(steps: list[float]) -> None:
    clock = FakeClock(START)
    previous = clock.now()
    for step in steps:
        try:
            clock.advance(step)
        except ValueError:
            assert step < 0
        assert clock.now() >= previous
        assert clock.now() - previous == (sec(step) if step >= 0 else timedelta(0))
        previous = clock.now()


# --------------------------------------------------------------------------- timers


def test_timers_fire_in_order_of_their_instants_then_of_their_setting() -> None:
    clock = FakeClock(START)
    fired: list[tuple[str, datetime]] = []

    def note(name: str) -> None:
        fired.append((name, clock.now()))

    for name, offset in (("c", 30), ("a", 10), ("b1", 20), ("b2", 20), ("d", 40)):
        clock.call_at(START + sec(offset), lambda name=name: note(name))  # type: ignore[misc]
    clock.advance(35)
    # each callback runs with now() at its own instant, not at the end of the move
    assert fired == [
        ("a", START + sec(10)),
        ("b1", START + sec(20)),
        ("b2", START + sec(20)),
        ("c", START + sec(30)),
    ]
    assert clock.now() == START + sec(35)
    assert clock.next_wakeup() == START + sec(40)


def test_a_timer_at_the_target_instant_fires_and_one_past_it_does_not() -> None:
    clock = FakeClock(START)
    fired: list[str] = []
    clock.call_at(START + sec(5), lambda: fired.append("at"))
    clock.call_at(START + sec(5) + timedelta(microseconds=1), lambda: fired.append("after"))
    clock.advance(5)
    assert fired == ["at"]


def test_a_timer_set_in_the_past_fires_at_the_next_move_without_moving_back() -> None:
    clock = FakeClock(START)
    seen: list[datetime] = []
    clock.call_at(START - sec(60), lambda: seen.append(clock.now()))
    assert seen == []
    clock.advance(0)
    assert seen == [START]


def test_a_cancelled_timer_never_fires_and_is_no_wakeup() -> None:
    clock = FakeClock(START)
    fired: list[str] = []
    timer = clock.call_at(START + sec(5), lambda: fired.append("x"))
    clock.call_at(START + sec(9), lambda: fired.append("y"))
    timer.cancel()
    assert clock.next_wakeup() == START + sec(9)
    clock.advance(10)
    assert fired == ["y"]
    assert clock.next_wakeup() is None
    assert clock.jump() is False


@settings(max_examples=100)
@given(
    offsets=st.lists(st.integers(0, 10_000), max_size=25), stops=st.lists(st.integers(0, 10_000), max_size=5)
)
def test_timers_fire_sorted_each_at_its_instant_whatever_the_moves(
    offsets: list[int], stops: list[int]
) -> None:
    clock = FakeClock(START)
    fired: list[tuple[int, datetime]] = []
    for i, ms in enumerate(offsets):
        clock.call_at(START + timedelta(milliseconds=ms), lambda i=i: fired.append((i, clock.now())))  # type: ignore[misc]
    for stop in sorted(stops):
        clock.set(max(clock.now(), START + timedelta(milliseconds=stop)))
    clock.set(START + timedelta(milliseconds=10_001))
    expected = sorted(range(len(offsets)), key=lambda i: (offsets[i], i))
    assert [i for i, _ in fired] == expected
    for i, when in fired:
        assert when == START + timedelta(milliseconds=offsets[i])


# --------------------------------------------------------------------------- sleeping and jumping


def test_jump_goes_to_the_next_wakeup_only() -> None:
    async def main() -> None:
        clock = FakeClock(START)
        woke: list[str] = []

        async def sleeper(name: str, seconds: float) -> None:
            await clock.sleep_until(START + sec(seconds))
            woke.append(name)

        tasks = [asyncio.ensure_future(sleeper("late", 10)), asyncio.ensure_future(sleeper("early", 5))]
        await clock.settle()
        assert clock.next_wakeup() == START + sec(5)
        assert clock.jump() is True
        await clock.settle()
        assert (clock.now(), woke) == (START + sec(5), ["early"])
        assert clock.jump() is True
        await clock.settle()
        assert (clock.now(), woke) == (START + sec(10), ["early", "late"])
        assert clock.jump() is False  # nobody sleeps: time stays put
        assert clock.now() == START + sec(10)
        await asyncio.gather(*tasks)

    asyncio.run(main())


def test_sleep_until_the_present_or_past_returns_without_moving_time() -> None:
    async def main() -> None:
        clock = FakeClock(START)
        await asyncio.wait_for(clock.sleep_until(START), timeout=1)
        await asyncio.wait_for(clock.sleep_until(START - sec(3600)), timeout=1)
        assert clock.now() == START
        assert clock.next_wakeup() is None

    asyncio.run(main())


def test_a_sleep_does_not_return_until_the_clock_reaches_it() -> None:
    async def main() -> None:
        clock = FakeClock(START)
        task = asyncio.ensure_future(clock.sleep_until(START + sec(60)))
        await clock.settle()
        clock.advance(59.999)
        await clock.settle()
        assert not task.done()
        clock.advance(0.001)
        await clock.settle()
        assert task.done()

    asyncio.run(main())


def test_a_cancelled_sleep_leaves_no_wakeup_behind() -> None:
    async def main() -> None:
        clock = FakeClock(START)
        task = asyncio.ensure_future(clock.sleep_until(START + sec(60)))
        await clock.settle()
        assert clock.next_wakeup() == START + sec(60)
        task.cancel()
        await clock.settle()
        assert task.cancelled()
        assert clock.next_wakeup() is None
        assert clock.jump() is False
        assert clock.now() == START

    asyncio.run(main())


def test_a_sleep_cut_short_by_wait_for_on_the_fake_clock_leaves_no_wakeup() -> None:
    async def main() -> None:
        clock = FakeClock(START)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(clock.sleep_until(START + sec(3600)), timeout=0.01)
        assert clock.next_wakeup() is None

    asyncio.run(main())


# --------------------------------------------------------------------------- run_until


def test_run_until_drives_periodic_tasks_from_wakeup_to_wakeup() -> None:
    async def main() -> None:
        clock = FakeClock(START)
        ticks: list[datetime] = []

        async def every_ten_seconds() -> None:
            while True:
                await clock.sleep_until(clock.now() + sec(10))
                ticks.append(clock.now())

        task = asyncio.ensure_future(every_ten_seconds())
        await clock.run_until(START + sec(35))
        assert ticks == [START + sec(10), START + sec(20), START + sec(30)]
        assert clock.now() == START + sec(35)
        assert clock.next_wakeup() == START + sec(40)
        await clock.run_until(START + sec(40))  # a wake-up exactly at the deadline runs
        assert ticks[-1] == START + sec(40)
        task.cancel()

    asyncio.run(main())


def test_run_until_lets_woken_tasks_schedule_more_work_before_the_deadline() -> None:
    async def main() -> None:
        clock = FakeClock(START)
        order: list[str] = []

        async def chain() -> None:
            await clock.sleep_until(START + sec(5))
            order.append("first")
            await clock.sleep_until(clock.now() + sec(5))  # set while the clock is at +5
            order.append("second")

        task = asyncio.ensure_future(chain())
        await clock.run_until(START + sec(10))
        assert order == ["first", "second"]
        assert task.done()

    asyncio.run(main())


def test_run_until_a_past_deadline_does_not_move_the_clock() -> None:
    async def main() -> None:
        clock = FakeClock(START)
        clock.advance(100)
        await clock.run_until(START)
        assert clock.now() == START + sec(100)

    asyncio.run(main())


def test_a_simulated_month_of_hourly_work_takes_no_real_time() -> None:
    async def main() -> int:
        clock = FakeClock(START)
        count = 0

        async def hourly() -> None:
            nonlocal count
            while True:
                await clock.sleep_until(clock.now() + timedelta(hours=1))
                count += 1

        task = asyncio.ensure_future(hourly())
        await clock.run_until(START + timedelta(days=30))
        task.cancel()
        return count

    assert asyncio.run(main()) == 30 * 24
