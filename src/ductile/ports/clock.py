"""Clock: what time it is, waiting for a moment, and whether the wall clock stepped back."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, an aware UTC datetime: the wall clock. It can step back
        (an NTP correction, a VM restored from a snapshot); :meth:`stepped_back` says so."""
        ...

    async def sleep_until(self, when: datetime) -> None:
        """Return once ``now() >= when`` (at once if it already is), or earlier when the
        wall clock steps back meanwhile (the caller looks at the time again)."""
        ...

    def stepped_back(self) -> timedelta:
        """How far the wall clock has stepped back since the last call; zero when it has
        not. Noticed by comparing it with a monotonic clock; each step is reported once."""
        ...
