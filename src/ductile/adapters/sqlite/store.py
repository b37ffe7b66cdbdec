"""SqliteStore: the Store port on SQLite (stdlib ``sqlite3``), durable and shareable.

Every write method submits one of the shared units (:mod:`ductile.units`)
over a :class:`~ductile.adapters.sqlite.tx.SqliteTx` of the writer's
connection: the same unit bodies the in-memory fakes run, on the rows as they
are inside the transaction. Reads go to the reader thread, one statement each.

Threads and transactions (ADR 0010): one writer thread owns the only write
connection and commits every pending unit in one ``BEGIN IMMEDIATE`` (a
savepoint each, group commit: :mod:`~ductile.adapters.sqlite.worker`); one
reader thread owns a ``query_only`` connection (WAL: reads never wait for the
writer's fsync; every read is one statement, one snapshot). A unit is
*durable* (the default) or *relaxed*: only the claims and ``record_process``
are relaxed (losing them to a power cut is harmless: the job is still queued,
or running without a process record) and a batch of relaxed units alone
commits at ``synchronous=NORMAL``. Another process (the CLI) may write to the
same file at once: ``BEGIN IMMEDIATE`` waits up to ``busy_timeout``, then the
unit fails with :class:`StoreBusyError`; it never hangs. Connections never
cross ``fork()`` (:class:`StoreError` in a forked child).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import ClassVar, TypeVar

from ductile import units
from ductile.adapters.sqlite.errors import StoreBusyError, StoreClosedError, StoreError
from ductile.adapters.sqlite.reads import StoreReads, Unit
from ductile.adapters.sqlite.schema import MIGRATIONS, Migration, migrate, refuse_newer
from ductile.adapters.sqlite.tx import SqliteTx
from ductile.adapters.sqlite.worker import SYNCHRONOUS_MODES, Pending, Reader, Worker, Writer, WriterStats
from ductile.domain import breaker as br
from ductile.domain.activity import Activity, SkipReason
from ductile.domain.classify import RunEnd
from ductile.domain.job import Actor, Job
from ductile.domain.lifecycle import Alerts
from ductile.domain.schedule import PlannedRun
from ductile.domain.settle import SettleContext, Settlement
from ductile.ports.spawner import ProcessHandle
from ductile.ports.store_values import (
    Committed,
    EnqueueResult,
    FireResult,
    Guard,
    InitRecord,
)

T = TypeVar("T")


class SqliteStore(StoreReads):
    """The Store port on one SQLite file. Open with ``await SqliteStore.open(path)``."""

    #: The schema history this store migrates to (a subclass may extend it, e.g. in a test).
    migrations: ClassVar[tuple[Migration, ...]] = MIGRATIONS

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "FULL", busy_timeout: float = 5.0):
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(
                f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, got {synchronous!r}"
            )
        if busy_timeout < 0:
            raise ValueError(f"busy_timeout must be >= 0 seconds, got {busy_timeout!r}")
        self._path = Path(path)
        self._synchronous = mode
        self._busy_ms = int(busy_timeout * 1000)
        self._busy_timeout = busy_timeout
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._open = False
        self._closed = False
        where = str(self._path)
        self._writer = Writer(
            thread_name=f"ductile-sqlite-writer:{self._path.name}",
            where=where,
            connect=self._open_writer,
            failure=self._failure,
            on_exit=self._stopped,
            synchronous=mode,
        )
        self._reader = Reader(
            thread_name=f"ductile-sqlite-reader:{self._path.name}",
            where=where,
            connect=self._open_reader,
            failure=self._failure,
            on_exit=self._stopped,
        )

    # ------------------------------------------------------------- life cycle
    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], *, synchronous: str = "FULL", busy_timeout: float = 5.0
    ) -> SqliteStore:
        """Open (creating or migrating) the database at ``path``.

        Raises :class:`SchemaVersionError` for a database of a newer ductile,
        :class:`MigrationError` when a migration fails (nothing changed),
        :class:`StoreError` when the file cannot be opened as a database.
        """
        store = cls(path, synchronous=synchronous, busy_timeout=busy_timeout)
        await store._start()
        return store

    @property
    def path(self) -> Path:
        return self._path

    @property
    def stats(self) -> WriterStats:
        return self._writer.stats

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        for worker in (self._writer, self._reader):
            try:
                await worker.start(loop)
            except BaseException:
                await self._shutdown()
                raise
        self._open = True

    async def close(self) -> None:
        """Commit what was submitted before, then stop both threads. Idempotent."""
        await self._shutdown()

    async def _shutdown(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._writer.stop()
                self._reader.stop()
        await self._writer.join()
        await self._reader.join()

    def _stopped(self) -> None:
        """A thread ended: refuse every later unit."""
        with self._lock:
            self._closed = True

    # ------------------------------------------------------------- connections
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, timeout=self._busy_timeout)
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_writer(self) -> sqlite3.Connection:
        where = str(self._path)
        conn = self._connect()
        try:
            refuse_newer(conn, where, len(self.migrations))
            _use_wal(conn, where)
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            migrate(conn, where, self.migrations)
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_reader(self) -> sqlite3.Connection:
        conn = self._connect()
        conn.execute("PRAGMA query_only = ON")
        return conn

    def _failure(self, error: BaseException, name: str) -> BaseException:
        """The exception a caller gets: SQLite errors become clear StoreErrors."""
        if isinstance(error, sqlite3.Error):
            code = getattr(error, "sqlite_errorcode", 0) & 0xFF
            if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                new: StoreError = StoreBusyError(
                    f"{self._path}: {name} failed: the database stayed locked by another connection "
                    f"for longer than busy_timeout ({self._busy_timeout:g} s); nothing was written"
                )
            else:
                new = StoreError(f"{self._path}: {name} failed: SQLite error: {error}")
            new.__cause__ = error
            return new
        return error

    # ------------------------------------------------------------- submission
    async def _submit(self, worker: Worker, name: str, fn: Unit[T], *, durable: bool = True) -> T:
        if os.getpid() != self._pid:
            raise StoreError(
                f"{self._path}: this SqliteStore was opened in process {self._pid} and cannot be used "
                f"in the forked process {os.getpid()}; open a new store there"
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if self._closed or not self._open:
                state = "closed" if self._closed else "not open yet (use: await SqliteStore.open(path))"
                raise StoreClosedError(f"{self._path}: {name}: the store is {state}")
            worker.put(Pending(name, fn, loop, future, durable))
        return await future

    async def _write(self, name: str, fn: Unit[T], *, durable: bool = True) -> T:
        """Run ``fn(connection)`` as one unit of a write transaction; its result once committed.

        ``durable=False`` (a relaxed unit): once committed, but not necessarily
        fsynced; only for writes whose loss to a power cut is harmless.
        """
        return await self._submit(self._writer, name, fn, durable=durable)

    async def _read(self, name: str, fn: Unit[T]) -> T:
        return await self._submit(self._reader, name, fn)

    # ------------------------------------------------------------- jobs: the shared units, on the writer
    async def enqueue(self, job: Job, *, actor: Actor, now: datetime, dedupe_ttl: timedelta) -> EnqueueResult:
        return await self._write(
            "enqueue", lambda c: units.enqueue(SqliteTx(c), job, actor=actor, now=now, dedupe_ttl=dedupe_ttl)
        )

    async def claim_next(self, now: datetime) -> Job | None:
        # Relaxed: a claim lost to a power cut leaves the job queued; its plugin died with the power.
        return await self._write("claim_next", lambda c: units.claim_next(SqliteTx(c), now), durable=False)

    async def claim(self, job_id: str, now: datetime) -> Job | None:
        """Claim one specific queued job; None when it is not queued."""
        return await self._write("claim", lambda c: units.claim(SqliteTx(c), job_id, now), durable=False)

    async def record_process(self, job_id: str, handle: ProcessHandle) -> None:
        # Relaxed: after a power cut no process survives to be killed; recovery re-queues the job anyway.
        await self._write(
            "record_process", lambda c: units.record_process(SqliteTx(c), job_id, handle), durable=False
        )

    async def settle(
        self, job_id: str, end: RunEnd, *, ctx: SettleContext, dedupe_ttl: timedelta
    ) -> Committed:
        return await self._write(
            "settle", lambda c: units.settle(SqliteTx(c), job_id, end, ctx=ctx, dedupe_ttl=dedupe_ttl)
        )

    async def recover(self, now: datetime, *, alerts: Alerts | None = None) -> list[Settlement]:
        return await self._write("recover", lambda c: units.recover(SqliteTx(c), now, alerts=alerts))

    async def cancel_queued(
        self, plugin: str, *, reason: str, now: datetime, alerts: Alerts | None = None
    ) -> list[str]:
        return await self._write(
            "cancel_queued",
            lambda c: units.cancel_queued(SqliteTx(c), plugin, reason=reason, now=now, alerts=alerts),
        )

    async def delete_finished(self, before: datetime) -> int:
        return await self._write("delete_finished", lambda c: units.delete_finished(SqliteTx(c), before))

    async def reset_breakers(
        self,
        plugin: str,
        *,
        now: datetime | None = None,
        actor: str = "operator",
        alerts: Alerts | None = None,
    ) -> list[br.Breaker]:
        return await self._write(
            "reset_breakers",
            lambda c: units.reset_breakers(SqliteTx(c), plugin, now=now, actor=actor, alerts=alerts),
        )

    async def cancel_job(
        self, job_id: str, *, reason: str, actor: Actor, now: datetime, alerts: Alerts | None = None
    ) -> Job:
        return await self._write(
            "cancel_job",
            lambda c: units.cancel_job(
                SqliteTx(c), job_id, reason=reason, actor=actor, now=now, alerts=alerts
            ),
        )

    async def note(self, entry: Activity, *, alerts: Alerts | None = None) -> None:
        await self._write("note", lambda c: units.note(SqliteTx(c), entry, alerts=alerts))

    async def fire(
        self,
        *,
        due: PlannedRun,
        next_run: PlannedRun,
        jobs: Sequence[Job],
        guard: Guard | None,
        actor: Actor,
        now: datetime,
        dedupe_ttl: timedelta,
        skipped: SkipReason | None = None,
        alerts: Alerts | None = None,
    ) -> FireResult:
        batch = tuple(jobs)
        return await self._write(
            "fire",
            lambda c: units.fire(
                SqliteTx(c),
                due=due,
                next_run=next_run,
                jobs=batch,
                guard=guard,
                actor=actor,
                now=now,
                dedupe_ttl=dedupe_ttl,
                skipped=skipped,
                alerts=alerts,
            ),
        )

    async def pause(self, plugin: str, schedule_id: str | None, *, now: datetime) -> bool:
        return await self._write("pause", lambda c: units.pause(SqliteTx(c), plugin, schedule_id, now=now))

    async def resume(self, plugin: str, schedule_id: str | None) -> bool:
        return await self._write("resume", lambda c: units.resume(SqliteTx(c), plugin, schedule_id))

    # ------------------------------------------------------------- plain writes
    async def put_planned(self, run: PlannedRun) -> None:
        await self._write("put_planned", lambda c: SqliteTx(c).put_planned(run))

    async def delete_planned(self, key: str) -> None:
        await self._write("delete_planned", lambda c: SqliteTx(c).delete_planned(key))

    async def put_init(self, record: InitRecord) -> None:
        await self._write("put_init", lambda c: SqliteTx(c).put_init(record))


def _use_wal(conn: sqlite3.Connection, where: str) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(f"{where}: could not switch the database to WAL mode (it is {mode!r})")
