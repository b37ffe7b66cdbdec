"""FakeClock: time that only moves when told, and jumps to the next wake-up.

Like trio's MockClock or twisted's task.Clock: ``sleep_until`` parks a
coroutine until the clock is advanced past its instant; :meth:`advance` and
:meth:`jump` wake due sleepers in order of their instants. A simulated month
takes as long as the work done in it. It goes backwards only when told to
step back (:meth:`step_back`, an NTP correction), which wakes every sleeper
and is reported once by :meth:`stepped_back`, as the system clock reports a
real step.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


class Timer:
    """A pending :meth:`FakeClock.call_at`; :meth:`cancel` withdraws it."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: datetime, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def _utc(at: datetime, what: str) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{what} must be an aware datetime, not {at!r}")
    return at.astimezone(UTC)


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 1, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("FakeClock needs an aware start time")
        self._now = start.astimezone(UTC)
        self._timers: list[tuple[datetime, int, Timer]] = []
        self._seq = itertools.count()
        self._stepped = timedelta(0)
        self._step_waiters: set[asyncio.Future[None]] = set()

    def now(self) -> datetime:
        return self._now

    def step_back(self, delta: timedelta) -> None:
        """The wall clock steps back by ``delta`` (an NTP correction, a restored VM): the one
        way a FakeClock goes backwards. Sleepers wake (and look at the time again), timers keep
        their instants, and :meth:`stepped_back` reports the step once."""
        if delta <= timedelta(0):
            raise ValueError("a step back is a positive duration")
        self._now -= delta
        self._stepped += delta
        waiters, self._step_waiters = self._step_waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def stepped_back(self) -> timedelta:
        stepped, self._stepped = self._stepped, timedelta(0)
        return stepped

    def call_at(self, when: datetime, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` once the clock reaches ``when`` (at the next move if already due).

        Timers due at the same instant run in the order they were set.
        """
        timer = Timer(_utc(when, "a timer's instant"), callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    async def sleep_until(self, when: datetime) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        timer = self.call_at(when, wake)
        self._step_waiters.add(future)
        try:
            await future
        finally:
            # A cancelled sleeper leaves no wake-up behind for jump() to stop at.
            timer.cancel()
            self._step_waiters.discard(future)

    def _drop_cancelled(self) -> None:
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)

    def next_wakeup(self) -> datetime | None:
        self._drop_cancelled()
        return self._timers[0][0] if self._timers else None

    def set(self, to: datetime) -> None:
        """Move to ``to`` (never backwards), firing due timers in order.

        Each callback runs with ``now()`` equal to its own instant (or the
        present, for a timer set in the past).
        """
        to = _utc(to, "a FakeClock's time")
        if to < self._now:
            raise ValueError(f"a FakeClock never goes backwards ({to} < {self._now})")
        while True:
            self._drop_cancelled()
            if not self._timers or self._timers[0][0] > to:
                break
            when, _, timer = heapq.heappop(self._timers)
            self._now = max(self._now, when)
            timer.callback()
        self._now = to

    def advance(self, delta: timedelta | float) -> None:
        if not isinstance(delta, timedelta):
            delta = timedelta(seconds=delta)
        if delta < timedelta(0):
            raise ValueError("a FakeClock never goes backwards")
        self.set(self._now + delta)

    def jump(self) -> bool:
        """Advance to the earliest pending wake-up; False when nobody sleeps."""
        wakeup = self.next_wakeup()
        if wakeup is None:
            return False
        self.set(max(wakeup, self._now))
        return True

    async def settle(self, rounds: int = 20) -> None:
        """Let runnable tasks run until they block (a bounded number of loop turns)."""
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def run_until(self, deadline: datetime) -> None:
        """Let tasks run, jumping from wake-up to wake-up, up to ``deadline``."""
        await self.settle()
        while (w := self.next_wakeup()) is not None and w <= deadline:
            self.set(max(w, self._now))
            await self.settle()
        if deadline > self._now:
            self.set(deadline)
            await self.settle()
