"""The Clock contract: only what FakeClock and SystemClock both promise.

``now()`` is an aware UTC instant that never decreases; ``sleep_until`` an
instant already past returns at once (without time passing); ``sleep_until``
a near future returns, and never before that instant.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.cases import TimeCase


def assert_aware_utc(case: TimeCase) -> None:
    now = case.clock.now()
    assert now.tzinfo is not None, f"{case.name}: now() is naive: {now!r}"
    assert now.utcoffset() == timedelta(0), f"{case.name}: now() is not UTC: {now!r}"
    assert now.tzinfo == UTC, f"{case.name}: now() carries {now.tzinfo!r}, not UTC"


def test_now_is_aware_utc(time_case: TimeCase) -> None:
    assert_aware_utc(time_case)


def test_now_never_decreases_across_sleeps(time_case: TimeCase) -> None:
    async def main() -> None:
        seen = [time_case.clock.now()]
        for step in (0.0, 0.01, 0.0, 0.02):
            seen += [time_case.clock.now() for _ in range(100)]
            await time_case.drive(
                time_case.clock.sleep_until(time_case.clock.now() + timedelta(seconds=step))
            )
            seen.append(time_case.clock.now())
        assert seen == sorted(seen), f"{time_case.name}: now() went backwards"
        assert_aware_utc(time_case)

    asyncio.run(main())


def test_sleep_until_a_past_instant_returns_at_once(time_case: TimeCase) -> None:
    async def main() -> None:
        clock = time_case.clock
        for past in (clock.now(), clock.now() - timedelta(hours=1)):
            time_case.restart()
            # not driven: a clock that needed time to pass here would block
            await asyncio.wait_for(clock.sleep_until(past), timeout=1.0)
            assert time_case.elapsed() < 0.5, f"{time_case.name}: took {time_case.elapsed()} s"
        if time_case.fake is not None:
            assert time_case.fake.next_wakeup() is None

    asyncio.run(main())


def test_sleep_until_a_near_future_returns_not_before_it(time_case: TimeCase) -> None:
    async def main() -> None:
        clock = time_case.clock
        for delay in (0.001, 0.03, 0.06):
            target = clock.now() + timedelta(seconds=delay)
            await time_case.drive(clock.sleep_until(target), real_limit=2.0)
            woke = clock.now()
            assert woke >= target, f"{time_case.name}: woke at {woke}, before {target}"

    asyncio.run(main())


def test_concurrent_sleepers_each_wake_not_before_their_instant(time_case: TimeCase) -> None:
    async def main() -> None:
        clock = time_case.clock
        start = clock.now()
        woke: dict[float, object] = {}

        async def sleeper(delay: float) -> None:
            target = start + timedelta(seconds=delay)
            await clock.sleep_until(target)
            woke[delay] = clock.now()
            assert clock.now() >= target

        await time_case.drive(asyncio.gather(*(sleeper(d) for d in (0.04, 0.01, 0.02))), real_limit=2.0)
        assert sorted(woke) == [0.01, 0.02, 0.04]

    asyncio.run(main())


@settings(max_examples=25, deadline=None)
@given(offsets=st.lists(st.integers(-5_000, 20_000), min_size=1, max_size=6))
def test_sleep_until_never_returns_early_property(offsets: list[int]) -> None:
    """On the fake clock (cheap enough for many examples): any mix of past and future instants."""
    from ductile.fakes.clock import FakeClock
    from ductile.fakes.inbox import FakeInbox

    clock = FakeClock()
    case = TimeCase("fake", clock, FakeInbox(clock), short=0.05, long=3600.0, fake=clock)

    async def main() -> None:
        for ms in offsets:
            target = clock.now() + timedelta(milliseconds=ms)
            before = clock.now()
            await case.drive(clock.sleep_until(target))
            assert clock.now() >= target
            assert clock.now() == max(before, target), "a fake sleep moves time exactly as far as needed"

    asyncio.run(main())


def test_stepped_back_is_zero_while_the_clock_has_not_stepped_back(time_case: TimeCase) -> None:
    async def main() -> None:
        clock = time_case.clock
        assert clock.stepped_back() == timedelta(0)
        await time_case.drive(clock.sleep_until(clock.now() + timedelta(seconds=0.02)))
        assert clock.stepped_back() == timedelta(0)

    asyncio.run(main())


def test_a_fake_step_back_wakes_sleepers_and_is_reported_once() -> None:
    """What SystemClock does on a real step (tests/unit/test_clock_step.py), on the fake."""
    from ductile.fakes.clock import FakeClock

    clock = FakeClock()
    start = clock.now()

    async def main() -> None:
        sleeper = asyncio.ensure_future(clock.sleep_until(start + timedelta(hours=2)))
        await clock.settle()
        clock.step_back(timedelta(hours=1))
        await asyncio.wait_for(sleeper, timeout=1.0)

    asyncio.run(main())
    assert clock.now() == start - timedelta(hours=1)
    assert clock.stepped_back() == timedelta(hours=1)
    assert clock.stepped_back() == timedelta(0)
