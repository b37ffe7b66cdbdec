"""The lock hooks of a store whose writer runs one unit at a time.

SQLite (``BEGIN IMMEDIATE`` on the one writer connection) and the in-memory
fakes (one event loop) serialise every unit, so there is nothing to lock: the
hooks of :class:`~ductile.ports.tx.Tx` do nothing. A store with concurrent
writers (PostgreSQL) takes real locks instead, in the order the Tx documents.
"""

from __future__ import annotations


class SerialLocks:
    """No-op lock hooks for a Tx whose writer runs one unit at a time."""

    __slots__ = ()

    def lock_planned(self, key: str) -> None:
        pass

    def lock_job(self, job_id: str) -> None:
        pass

    def lock_state(self, plugin: str) -> None:
        pass

    def lock_breaker(self, plugin: str, command: str) -> None:
        pass

    def lock_dedupe(self, plugin: str, command: str, key: str) -> None:
        pass
