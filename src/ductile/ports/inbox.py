"""Inbox: how new work reaches a waiting dispatcher."""

from __future__ import annotations

from typing import Protocol


class Inbox(Protocol):
    def notify(self) -> None:
        """Work arrived: wake a waiter (or the next one to wait)."""
        ...

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for :meth:`notify`. True when notified.

        A notification that arrived while nobody waited is not lost: the
        next ``wait`` returns at once.
        """
        ...
