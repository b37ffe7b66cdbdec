"""SystemClock: the wall clock, with sleeps that survive a suspend.

``asyncio.sleep`` runs on the monotonic clock, which stops while a laptop
sleeps; one long sleep would overshoot by the suspend's length. We sleep in
slices of at most :data:`SLICE` seconds and compare against the wall clock.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

SLICE = 5.0


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime) -> None:
        while True:
            remaining = (when - self.now()).total_seconds()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining, SLICE))
