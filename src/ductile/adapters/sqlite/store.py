"""SqliteStore: the Store port on SQLite (stdlib ``sqlite3``), durable and shareable.

Behaviour is that of :class:`ductile.fakes.memory_store.InMemoryStore`: every
unit reads the rows as they are inside its transaction and calls the same
domain functions (``settle``, ``recover``, ``find_duplicate``, ``admit``,
``reset``, ``poll_guard_allows``, ``apply``, ``creation``) to decide.

Threads and transactions
------------------------
* **One writer thread** owns the only write connection of this store. Every
  write method submits a *unit* (a function of the connection) to its queue
  and awaits an asyncio future, resolved with ``loop.call_soon_threadsafe``.
  The writer takes **all** pending units at once (up to :data:`MAX_BATCH`),
  runs them in **one** ``BEGIN IMMEDIATE`` transaction, each inside its own
  ``SAVEPOINT`` (a unit that raises is rolled back alone and its caller alone
  gets the exception), commits once, and only then resolves the futures:
  a write is acknowledged only once it is durable. That is group commit:
  concurrent writers (webhooks, the dispatcher, the scheduler) share one
  fsync, so ``synchronous=FULL`` costs little under load (ADR 0010).
* **Sync level per unit.** A unit is *durable* (the default) or *relaxed*.
  Only the claims (``claim_next``, ``claim``) and ``record_process`` are
  relaxed: losing them to a power cut is harmless (the job is simply still
  queued, or running without a process record, and no process survives a
  power cut anyway). A batch of relaxed units only commits at
  ``synchronous=NORMAL`` (no fsync); a batch with any durable unit commits at
  the store's level (``FULL``), and in WAL mode that fsync also covers every
  relaxed commit before it. ``PRAGMA synchronous`` is switched between
  transactions only, never inside one. A process kill loses no commit at any
  level; only power loss can, and only relaxed ones (ADR 0010).
* **One reader thread** owns a second, ``query_only`` connection. WAL readers
  never block the writer nor wait for its fsync, and running reads on a
  thread keeps a rare busy wait (WAL recovery, a checkpoint) off the event
  loop. Every read is one statement, so each sees one committed snapshot;
  a read issued after a write was acknowledged sees that write.
* Connections use ``isolation_level=None`` (no implicit transactions), WAL,
  ``busy_timeout``, ``foreign_keys=ON``. Another process (the CLI) may write
  to the same file at the same time: ``BEGIN IMMEDIATE`` waits up to
  ``busy_timeout`` for the write lock; a lock that outlasts it fails the
  unit with :class:`StoreBusyError`, it never hangs.
* Connections never cross ``fork()``: a store used in a forked child raises
  :class:`StoreError` instead of touching the parent's connections.

Every state change of a job is a compare-and-set on its expected status with
the row count checked; a miss raises :class:`~ductile.ports.store.StaleJobError`
and rolls the unit back. The SQL the store runs is in module constants
(``SQL_*``), so the query-plan test checks the real statements.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ductile.adapters.sqlite.errors import StoreBusyError, StoreClosedError, StoreError
from ductile.adapters.sqlite.rows import (
    breaker_of,
    init_of,
    job_of,
    opt_dt,
    planned_of,
    planned_params,
    run_of,
    to_us,
    transition_of,
)
from ductile.adapters.sqlite.schema import MIGRATIONS, Migration, migrate, refuse_newer
from ductile.adapters.sqlite.sql import (
    RUN_COLS,
    SQL_ALL_PLANNED,
    SQL_BREAKERS,
    SQL_DELETE_PLANNED,
    SQL_DUE,
    SQL_GET_INIT,
    SQL_NEXT_RETRY_AT,
    SQL_PUT_INIT,
    SQL_PUT_PLANNED,
    SQL_QUEUE_DEPTH,
    SQL_RECENT_RUNS,
    SQL_RECENT_RUNS_OF_PLUGIN,
    SQL_RUNNING,
    SQL_RUNS,
    SQL_TRANSITIONS,
    sql_list_jobs,
)
from ductile.adapters.sqlite.units import (
    _cancel_queued,
    _claim,
    _delete_finished,
    _fire,
    _get_breaker,
    _get_job,
    _get_planned,
    _get_state,
    _insert_jobs,
    _outstanding,
    _record_process,
    _recover,
    _reset_breakers,
    _settle,
)
from ductile.adapters.sqlite.worker import SYNCHRONOUS_MODES, Pending, Reader, Worker, Writer, WriterStats
from ductile.domain import breaker as br
from ductile.domain.classify import RunEnd
from ductile.domain.job import Actor, Job, JobStatus, Transition
from ductile.domain.schedule import PlannedRun
from ductile.domain.settle import RunRecord, SettleContext, Settlement
from ductile.ports.spawner import ProcessHandle
from ductile.ports.store import (
    Committed,
    EnqueueResult,
    FireResult,
    Guard,
    InitRecord,
    RunningJob,
    RunView,
)

T = TypeVar("T")
Unit = Callable[[sqlite3.Connection], T]


class SqliteStore:
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

    # ------------------------------------------------------------- jobs
    async def enqueue(self, job: Job, *, actor: Actor, now: datetime, dedupe_ttl: timedelta) -> EnqueueResult:
        return await self._write("enqueue", lambda c: _insert_jobs(c, [job], actor, now, dedupe_ttl)[0])

    async def claim_next(self, now: datetime) -> Job | None:
        # Relaxed: a claim lost to a power cut leaves the job queued; its plugin died with the power.
        return await self._write("claim_next", lambda c: _claim(c, now), durable=False)

    async def claim(self, job_id: str, now: datetime) -> Job | None:
        """Claim one specific queued job; None when it is not queued."""
        return await self._write("claim", lambda c: _claim(c, now, job_id), durable=False)

    async def record_process(self, job_id: str, handle: ProcessHandle) -> None:
        # Relaxed: after a power cut no process survives to be killed; recovery re-queues the job anyway.
        await self._write("record_process", lambda c: _record_process(c, job_id, handle), durable=False)

    async def settle(
        self, job_id: str, end: RunEnd, *, ctx: SettleContext, dedupe_ttl: timedelta
    ) -> Committed:
        return await self._write("settle", lambda c: _settle(c, job_id, end, ctx, dedupe_ttl))

    async def running(self) -> list[RunningJob]:
        def read(conn: sqlite3.Connection) -> list[RunningJob]:
            return [
                RunningJob(
                    job=job_of(row),
                    process=None
                    if row[16] is None
                    else ProcessHandle(pid=row[16], pgid=row[17], start_time=row[18]),
                )
                for row in conn.execute(SQL_RUNNING).fetchall()
            ]

        return await self._read("running", read)

    async def recover(self, now: datetime) -> list[Settlement]:
        return await self._write("recover", lambda c: _recover(c, now))

    async def cancel_queued(self, plugin: str, *, reason: str, now: datetime) -> list[str]:
        return await self._write("cancel_queued", lambda c: _cancel_queued(c, plugin, reason, now))

    async def delete_finished(self, before: datetime) -> int:
        return await self._write("delete_finished", lambda c: _delete_finished(c, before))

    async def get_job(self, job_id: str) -> Job | None:
        return await self._read("get_job", lambda c: _get_job(c, job_id))

    async def transitions(self, job_id: str) -> list[Transition]:
        return await self._read(
            "transitions",
            lambda c: [transition_of(r) for r in c.execute(SQL_TRANSITIONS, (job_id,)).fetchall()],
        )

    async def runs(self, job_id: str) -> list[RunRecord]:
        return await self._read(
            "runs", lambda c: [run_of(r) for r in c.execute(SQL_RUNS, (job_id,)).fetchall()]
        )

    async def recent_runs(self, *, plugin: str | None = None, limit: int = 50) -> list[RunView]:
        params: tuple[Any, ...]
        if plugin is None:
            sql, params = SQL_RECENT_RUNS, (limit,)
        else:
            sql, params = SQL_RECENT_RUNS_OF_PLUGIN, (plugin, limit)
        width = len(RUN_COLS.split(","))

        def read(c: sqlite3.Connection) -> list[RunView]:
            return [RunView(job=job_of(r[width:]), run=run_of(r[:width])) for r in c.execute(sql, params)]

        return await self._read("recent_runs", read)

    async def list_jobs(
        self,
        *,
        statuses: Sequence[JobStatus] | None = None,
        plugin: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Newest first."""
        wanted = None if statuses is None else sorted({JobStatus(s).value for s in statuses})
        if wanted == [] or limit == 0:
            return []
        sql = sql_list_jobs(statuses=None if wanted is None else len(wanted), plugin=plugin is not None)
        params: list[Any] = [*(wanted or []), *([plugin] if plugin is not None else [])]
        # A negative limit slices like a Python list (all but the last -limit), as the fake does.
        params.append(limit if limit > 0 else -1)

        def read(conn: sqlite3.Connection) -> list[Job]:
            jobs = [job_of(r) for r in conn.execute(sql, params).fetchall()]
            return jobs if limit > 0 else jobs[:limit]

        return await self._read("list_jobs", read)

    async def queue_depth(self) -> int:
        return await self._read("queue_depth", lambda c: int(c.execute(SQL_QUEUE_DEPTH).fetchone()[0]))

    async def outstanding(self, plugin: str, command: str) -> int:
        return await self._read("outstanding", lambda c: _outstanding(c, plugin, command))

    async def next_retry_at(self) -> datetime | None:
        return await self._read("next_retry_at", lambda c: opt_dt(c.execute(SQL_NEXT_RETRY_AT).fetchone()[0]))

    # ------------------------------------------------------------- plugin state
    async def get_state(self, plugin: str) -> dict[str, Any]:
        return await self._read("get_state", lambda c: _get_state(c, plugin))

    # ------------------------------------------------------------- breakers
    async def get_breaker(self, plugin: str, command: str) -> br.Breaker | None:
        return await self._read("get_breaker", lambda c: _get_breaker(c, plugin, command))

    async def breakers(self) -> list[br.Breaker]:
        return await self._read(
            "breakers", lambda c: [breaker_of(r) for r in c.execute(SQL_BREAKERS).fetchall()]
        )

    async def reset_breakers(self, plugin: str) -> list[br.Breaker]:
        return await self._write("reset_breakers", lambda c: _reset_breakers(c, plugin))

    # ------------------------------------------------------------- schedule index
    async def planned(self, key: str) -> PlannedRun | None:
        return await self._read("planned", lambda c: _get_planned(c, key))

    async def all_planned(self) -> list[PlannedRun]:
        return await self._read(
            "all_planned", lambda c: [planned_of(r) for r in c.execute(SQL_ALL_PLANNED).fetchall()]
        )

    async def due(self, start: datetime, end: datetime) -> list[PlannedRun]:
        """Planned runs with ``start <= planned_at < end``, earliest first."""
        bounds = (to_us(start), to_us(end))
        return await self._read(
            "due", lambda c: [planned_of(r) for r in c.execute(SQL_DUE, bounds).fetchall()]
        )

    async def put_planned(self, run: PlannedRun) -> None:
        params = planned_params(run)
        await self._write("put_planned", _statement(SQL_PUT_PLANNED, params))

    async def delete_planned(self, key: str) -> None:
        await self._write("delete_planned", _statement(SQL_DELETE_PLANNED, (key,)))

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
    ) -> FireResult:
        batch = tuple(jobs)
        return await self._write(
            "fire",
            lambda c: _fire(
                c, due=due, next_run=next_run, jobs=batch, guard=guard, actor=actor, now=now, ttl=dedupe_ttl
            ),
        )

    # ------------------------------------------------------------- init
    async def get_init(self, plugin: str) -> InitRecord | None:
        def read(conn: sqlite3.Connection) -> InitRecord | None:
            row = conn.execute(SQL_GET_INIT, (plugin,)).fetchone()
            return None if row is None else init_of(row)

        return await self._read("get_init", read)

    async def put_init(self, record: InitRecord) -> None:
        params = (record.plugin, record.fingerprint, int(record.ok), record.error, to_us(record.at))
        await self._write("put_init", _statement(SQL_PUT_INIT, params))


def _use_wal(conn: sqlite3.Connection, where: str) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(f"{where}: could not switch the database to WAL mode (it is {mode!r})")


def _statement(sql: str, params: Sequence[Any]) -> Unit[None]:
    def unit(conn: sqlite3.Connection) -> None:
        conn.execute(sql, params)

    return unit
