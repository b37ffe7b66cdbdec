"""SystemClock: the wall clock, with sleeps that survive a suspend and notice a backward step.

``asyncio.sleep`` runs on the monotonic clock, which stops while a laptop
sleeps; one long sleep would overshoot by the suspend's length. We sleep in
slices of at most :data:`SLICE` seconds and compare against the wall clock.

The wall clock can also step back (an NTP correction, a VM restored from a
snapshot). Each reading is compared with the monotonic clock: their difference
only changes when the wall clock is stepped (both are slewed alike), so a
difference that shrinks by more than :data:`STEP_THRESHOLD` is a backward step
of that size. It is reported once by :meth:`SystemClock.stepped_back`, and it
cuts a sleep short, so that the scheduler re-plans within a slice (ADR 0045).
A forward step needs nothing: what became due is due.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

SLICE = 5.0
#: A backward step smaller than this is noise (or not worth re-planning for).
STEP_THRESHOLD = 1.0


class SystemClock:
    def __init__(
        self,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``wall`` and ``monotonic`` are the time sources (seconds); tests pass their own."""
        self._wall = wall
        self._monotonic = monotonic
        #: The largest (wall - monotonic) seen since the last step: the reference.
        self._offset: float | None = None
        #: Backward steps noticed and not yet reported, in seconds.
        self._stepped = 0.0

    def now(self) -> datetime:
        wall = self._wall()
        offset = wall - self._monotonic()
        if self._offset is None or offset > self._offset:
            self._offset = offset
        elif offset < self._offset - STEP_THRESHOLD:
            self._stepped += self._offset - offset
            self._offset = offset
        return datetime.fromtimestamp(wall, UTC)

    def stepped_back(self) -> timedelta:
        self.now()
        stepped, self._stepped = self._stepped, 0.0
        return timedelta(seconds=stepped)

    async def sleep_until(self, when: datetime) -> None:
        pending = self._stepped
        while True:
            remaining = (when - self.now()).total_seconds()
            if remaining <= 0 or self._stepped > pending:
                return
            await asyncio.sleep(min(remaining, SLICE))
