"""PgInbox: the Inbox port on PostgreSQL's ``LISTEN``/``NOTIFY`` (ADR 0034).

Every unit that makes work runnable notifies the channel at commit (see
:mod:`~ductile.adapters.postgres.tx`): a new job, a job re-queued, a lane
freed. Each daemon listens on **one dedicated connection** (not from the
pool; TCP keepalives on), and its dispatcher's :meth:`wait` returns on such a
notification as on a local :meth:`notify`. A notification sent while the
listener is disconnected is lost (PostgreSQL keeps none for absent
listeners), so after every (re)connect the inbox wakes its dispatcher once,
and the dispatcher keeps its 1 s poll. Not for a transaction-mode pooler
(PgBouncer drops ``LISTEN`` there): point ``store.url`` at the server or at a
session-mode pool.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import psycopg

from ductile.adapters.postgres.sql import CHANNEL
from ductile.log import Log

_log = Log("inbox")

#: Pauses between reconnection attempts of the listener (seconds), the last one repeated.
RECONNECT_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)


class PgInbox:
    """Local wake-ups plus other daemons' commits, heard through ``LISTEN``."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        self._url = url
        self._timeout = connect_timeout
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        #: Notifications heard from the database so far (for tests and status).
        self.heard = 0
        #: Connections made so far (each followed by one local wake-up).
        self.connects = 0

    # ----------------------------------------------------------------- the Inbox port
    def notify(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        if not self._event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout=max(timeout, 0.0))
        notified = self._event.is_set()
        self._event.clear()
        return notified

    # ----------------------------------------------------------------- the listener
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="ductile-listen")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _listen(self) -> None:
        failures = 0
        while True:
            try:
                self._conn = await psycopg.AsyncConnection.connect(
                    self._url,
                    autocommit=True,
                    connect_timeout=max(1, round(self._timeout)),
                    keepalives=1,
                    keepalives_idle=5,
                    keepalives_interval=2,
                    keepalives_count=3,
                )
                await self._conn.execute(f"LISTEN {CHANNEL}")
                self.connects += 1
                failures = 0
                self.notify()  # whatever was sent while we were away is lost: look once
                async for _ in self._conn.notifies():
                    self.heard += 1
                    self.notify()
            except (psycopg.Error, OSError) as e:
                if failures == 0:
                    _log.warning(f"the LISTEN connection failed ({e}); reconnecting, polling meanwhile")
            await self._drop()
            await asyncio.sleep(RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)])
            failures += 1
