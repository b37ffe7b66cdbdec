"""AsyncioInbox: the in-process Inbox, an asyncio.Event with memory."""

from __future__ import annotations

import asyncio
import contextlib


class AsyncioInbox:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        if not self._event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout=max(timeout, 0.0))
        notified = self._event.is_set()
        self._event.clear()
        return notified
