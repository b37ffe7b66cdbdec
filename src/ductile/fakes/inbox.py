"""FakeInbox: an Inbox whose timeouts run on a FakeClock."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from ductile.fakes.clock import FakeClock


class FakeInbox:
    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self._pending = False
        self._waiter: asyncio.Future[bool] | None = None
        self.notifications = 0

    def notify(self) -> None:
        self.notifications += 1
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(True)
        else:
            self._pending = True

    async def wait(self, timeout: float) -> bool:
        if self._pending:
            self._pending = False
            return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiter = waiter

        def expire() -> None:
            if not waiter.done():
                waiter.set_result(False)

        self._clock.call_at(self._clock.now() + timedelta(seconds=timeout), expire)
        try:
            return await waiter
        finally:
            self._waiter = None
