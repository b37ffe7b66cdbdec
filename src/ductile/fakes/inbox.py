"""FakeInbox: an Inbox whose timeouts run on a FakeClock."""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import timedelta

from ductile.fakes.clock import FakeClock


class FakeInbox:
    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self._pending = False
        #: Parked waiters, oldest first; a notify wakes the oldest one still waiting.
        self._waiters: deque[asyncio.Future[bool]] = deque()
        self.notifications = 0

    def notify(self) -> None:
        self.notifications += 1
        self._deliver()

    def _deliver(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # skip waiters that timed out or were cancelled
                waiter.set_result(True)
                return
        self._pending = True

    async def wait(self, timeout: float) -> bool:
        if self._pending:
            self._pending = False
            return True
        if timeout <= 0:
            # Nothing to wait for: return at once, as the real inbox does,
            # rather than parking until somebody happens to move the clock.
            await asyncio.sleep(0)
            notified, self._pending = self._pending, False
            return notified
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)

        def expire() -> None:
            if not waiter.done():
                waiter.set_result(False)

        timer = self._clock.call_at(self._clock.now() + timedelta(seconds=timeout), expire)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                # Woken, then cancelled before it could return: pass the
                # notification on instead of losing it with this waiter.
                self._deliver()
            raise
        finally:
            timer.cancel()  # a woken waiter leaves no wake-up behind on the clock
            if waiter in self._waiters:
                self._waiters.remove(waiter)
