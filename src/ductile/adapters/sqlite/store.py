"""SqliteStore: the Store port on SQLite (stdlib ``sqlite3``), durable and shareable.

Every write method submits one of the shared units (:mod:`ductile.units`)
over a :class:`~ductile.adapters.sqlite.tx.SqliteTx` of the writer's
connection: the same unit bodies the in-memory fakes run, on the rows as they
are inside the transaction. Reads go to the reader thread, one statement each.

Threads and transactions (ADR 0010; :mod:`~ductile.adapters.sqlite.worker`)
---------------------------------------------------------------------------
* **One writer thread** owns the only write connection of this store. The
  writer takes all pending units at once, runs them in **one** ``BEGIN
  IMMEDIATE`` transaction, each inside its own ``SAVEPOINT`` (a unit that
  raises is rolled back alone), commits once, and only then resolves the
  futures: group commit, so ``synchronous=FULL`` costs little under load.
* **Sync level per unit.** A unit is *durable* (the default) or *relaxed*:
  only the claims (``claim_next``, ``claim``), ``record_process`` and
  ``settle``, whose loss to a power cut only runs a job once more (ADR 0010's
  amendment, ADR 0068), and retention's steps (``delete_finished``, taken
  again by the next retention: ADR 0064). A batch of relaxed units commits at
  ``synchronous=NORMAL``; one with any durable unit at the store's level
  (``FULL``), whose WAL fsync covers the relaxed commits before; an idle
  writer fsyncs relaxed commits within a second.
* **One reader thread** owns a second, ``query_only`` connection: WAL readers
  never block the writer nor wait for its fsync, and a rare busy wait (WAL
  recovery, a checkpoint) stays off the event loop. Each read is one
  statement, one committed snapshot; it sees every write acknowledged before.
* Connections use ``isolation_level=None``, WAL, ``busy_timeout``,
  ``foreign_keys=ON``. Another process (the CLI) may write at the same time:
  ``BEGIN IMMEDIATE`` waits up to ``busy_timeout`` for the write lock, then
  fails the unit with :class:`StoreBusyError`. Connections never cross
  ``fork()`` (a store used in a forked child raises :class:`StoreError`).
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

from ductile import units
from ductile.adapters.sqlite import reads
from ductile.adapters.sqlite.database import Database
from ductile.adapters.sqlite.errors import StoreClosedError, StoreError
from ductile.adapters.sqlite.queries import read_job_page
from ductile.adapters.sqlite.rows import (
    breaker_of,
    entry_of,
    opt_dt,
    pause_of,
    planned_of,
    run_of,
    to_us,
    transition_of,
)
from ductile.adapters.sqlite.schema import MIGRATIONS, Migration
from ductile.adapters.sqlite.sql import (
    SQL_ACTIVITY_AFTER,
    SQL_ALL_PLANNED,
    SQL_BREAKERS,
    SQL_COUNTERS,
    SQL_DUE,
    SQL_LAST_ACTIVITY_ID,
    SQL_NEXT_RETRY_AT,
    SQL_OLDEST_QUEUED,
    SQL_PAUSES,
    SQL_QUEUE_DEPTH,
    SQL_RUNS,
    SQL_TRANSITIONS,
)
from ductile.adapters.sqlite.tx import SqliteTx
from ductile.adapters.sqlite.worker import SYNCHRONOUS_MODES, Pending, Reader, Worker, Writer, WriterStats
from ductile.domain import breaker as br
from ductile.domain.activity import Activity, Entry, SkipReason
from ductile.domain.classify import RunEnd
from ductile.domain.facts import Fact
from ductile.domain.job import Actor, Job, JobStatus, Transition
from ductile.domain.lanes import UNLIMITED, Lanes
from ductile.domain.lifecycle import Alerts
from ductile.domain.schedule import PlannedRun
from ductile.domain.settle import RunRecord, SettleContext, Settlement
from ductile.ports.spawner import ProcessHandle
from ductile.ports.store_faults import WriteFault
from ductile.ports.store_values import (
    Committed,
    EnqueueResult,
    FireResult,
    Guard,
    InitRecord,
    JobPage,
    JobQuery,
    Pause,
    Pruned,
    Rewound,
    RunningJob,
    RunView,
)

T = TypeVar("T")
#: Columns of a job row: a process record's columns follow them in ``SQL_RUNNING``.
Unit = Callable[[sqlite3.Connection], T]


class SqliteStore:
    """The Store port on one SQLite file. Open with ``await SqliteStore.open(path)``."""

    #: The schema history this store migrates to (a subclass may extend it, e.g. in a test).
    migrations: ClassVar[tuple[Migration, ...]] = MIGRATIONS

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 5.0,
        integrity_check: bool = False,
    ):
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(
                f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, got {synchronous!r}"
            )
        if busy_timeout < 0:
            raise ValueError(f"busy_timeout must be >= 0 seconds, got {busy_timeout!r}")
        self._path = Path(path)
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._open = False
        self._closed = False
        where = str(self._path)
        self._db = Database(
            self._path,
            synchronous=mode,
            busy_timeout=busy_timeout,
            migrations=self.migrations,
            integrity_check=integrity_check,
        )
        self._writer = Writer(
            thread_name=f"ductile-sqlite-writer:{self._path.name}",
            where=where,
            connect=self._db.open_writer,
            failure=self._db.failure,
            on_exit=self._stopped,
            synchronous=mode,
            tracker=self._db.tracker,
            upkeep=self._db.upkeep,
            reclaim=self._db.reclaim,
        )
        self._reader = Reader(
            thread_name=f"ductile-sqlite-reader:{self._path.name}",
            where=where,
            connect=self._db.open_reader,
            failure=self._db.failure,
            on_exit=self._stopped,
        )
        self._db.reader_put = self._reader.reconnect

    # ------------------------------------------------------------- life cycle
    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 5.0,
        integrity_check: bool = False,
    ) -> SqliteStore:
        """Open (creating or migrating) the database at ``path``.

        A missing database is created whole (never an empty file at ``path``);
        an empty file, a symbolic link or a ``-wal`` without its database is
        refused (:mod:`~ductile.adapters.sqlite.opening`). ``integrity_check``
        runs ``PRAGMA quick_check`` first (the daemon does, at start).

        Raises :class:`SchemaVersionError` for a database of a newer ductile,
        :class:`MigrationError` when a migration fails (nothing changed),
        :class:`StoreCorruptError` for a damaged file, :class:`StoreError`
        when the file cannot be opened as a database.
        """
        store = cls(path, synchronous=synchronous, busy_timeout=busy_timeout, integrity_check=integrity_check)
        await store._start()
        return store

    @property
    def path(self) -> Path:
        return self._path

    @property
    def stats(self) -> WriterStats:
        return self._writer.stats

    def write_fault(self) -> WriteFault | None:
        """Why writes fail now (the writer's :class:`~ductile.adapters.sqlite.faults.FaultTracker`)."""
        return self._db.tracker.fault

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

    async def claim_next(self, now: datetime, *, lanes: Lanes = UNLIMITED) -> Job | None:
        # Relaxed: a claim lost to a power cut leaves the job queued; its plugin died with the power.
        return await self._write(
            "claim_next", lambda c: units.claim_next(SqliteTx(c), now, lanes=lanes), durable=False
        )

    async def claim(self, job_id: str, now: datetime, *, lanes: Lanes = UNLIMITED) -> Job | None:
        """Claim one specific queued job; None when it is not queued."""
        return await self._write(
            "claim", lambda c: units.claim(SqliteTx(c), job_id, now, lanes=lanes), durable=False
        )

    async def record_process(self, job_id: str, handle: ProcessHandle, *, token: int) -> None:
        # Relaxed: after a power cut no process survives to be killed; recovery re-queues the job anyway.
        await self._write(
            "record_process",
            lambda c: units.record_process(SqliteTx(c), job_id, handle, token=token),
            durable=False,
        )

    async def settle(
        self,
        job_id: str,
        end: RunEnd,
        *,
        ctx: SettleContext,
        dedupe_ttl: timedelta,
        token: int,
        then_claim: Lanes | None = None,
    ) -> Committed:
        # Relaxed (ADR 0068): a settle lost to a power cut takes its children, its state and the
        # next claim with it (one transaction; the WAL loses only a suffix) and leaves the job
        # running: recovery runs it again, which at-least-once (D1) allows.
        return await self._write(
            "settle",
            lambda c: units.settle(
                SqliteTx(c), job_id, end, ctx=ctx, dedupe_ttl=dedupe_ttl, token=token, then_claim=then_claim
            ),
            durable=False,
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

    async def delete_finished(self, before: datetime, *, limit: int | None = None) -> Pruned:
        # Relaxed (ADR 0064): a step lost to a power cut is taken again by the next retention.
        return await self._write(
            "delete_finished",
            lambda c: units.delete_finished(SqliteTx(c), before, limit=limit),
            durable=False,
        )

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

    async def rewind(self, *, step: timedelta, plans: Sequence[tuple[PlannedRun, PlannedRun]]) -> Rewound:
        pairs = tuple(plans)
        return await self._write("rewind", lambda c: units.rewind(SqliteTx(c), step=step, plans=pairs))

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

    # ------------------------------------------------------------- reads, on the reader
    async def get_job(self, job_id: str) -> Job | None:
        return await self._read("get_job", lambda c: SqliteTx(c).get_job(job_id))

    async def running(self) -> list[RunningJob]:
        return await self._read("running", reads.running)

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
        return await self._read("recent_runs", lambda c: reads.recent_runs(c, plugin, limit))

    async def list_jobs(
        self,
        *,
        statuses: Sequence[JobStatus] | None = None,
        plugin: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Newest first."""
        return await self._read("list_jobs", lambda c: reads.list_jobs(c, statuses, plugin, limit))

    async def find_jobs(self, query: JobQuery) -> JobPage:
        return await self._read("find_jobs", lambda c: read_job_page(c, query))

    async def job_ids_with_prefix(self, prefix: str, *, limit: int = 2) -> list[str]:
        return await self._read("job_ids_with_prefix", lambda c: reads.ids_with_prefix(c, prefix, limit))

    async def activity(self, after: int, *, limit: int = 500) -> list[Entry]:
        return await self._read(
            "activity", lambda c: [entry_of(r) for r in c.execute(SQL_ACTIVITY_AFTER, (after, limit))]
        )

    async def last_activity_id(self) -> int:
        def read(conn: sqlite3.Connection) -> int:
            row = conn.execute(SQL_LAST_ACTIVITY_ID).fetchone()
            return 0 if row is None else int(row[0])

        return await self._read("last_activity_id", read)

    async def queue_depth(self) -> int:
        return await self._read("queue_depth", lambda c: int(c.execute(SQL_QUEUE_DEPTH).fetchone()[0]))

    async def oldest_queued_at(self) -> datetime | None:
        return await self._read(
            "oldest_queued_at", lambda c: opt_dt(c.execute(SQL_OLDEST_QUEUED).fetchone()[0])
        )

    async def outstanding(self, plugin: str, command: str) -> int:
        return await self._read("outstanding", lambda c: SqliteTx(c).outstanding(plugin, command))

    async def next_retry_at(self) -> datetime | None:
        return await self._read("next_retry_at", lambda c: opt_dt(c.execute(SQL_NEXT_RETRY_AT).fetchone()[0]))

    async def get_state(self, plugin: str) -> dict[str, Any]:
        return await self._read("get_state", lambda c: SqliteTx(c).get_state(plugin))

    async def get_breaker(self, plugin: str, command: str) -> br.Breaker | None:
        return await self._read("get_breaker", lambda c: SqliteTx(c).get_breaker(plugin, command))

    async def breakers(self) -> list[br.Breaker]:
        return await self._read(
            "breakers", lambda c: [breaker_of(r) for r in c.execute(SQL_BREAKERS).fetchall()]
        )

    async def planned(self, key: str) -> PlannedRun | None:
        return await self._read("planned", lambda c: SqliteTx(c).get_planned(key))

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

    async def pauses(self) -> list[Pause]:
        return await self._read("pauses", lambda c: [pause_of(r) for r in c.execute(SQL_PAUSES).fetchall()])

    async def facts(self, plugin: str, *, fact_type: str | None = None, limit: int = 100) -> list[Fact]:
        return await self._read("facts", lambda c: reads.facts(c, plugin, fact_type, limit))

    async def counts(self) -> dict[str, int]:
        return await self._read("counts", lambda c: {str(n): int(v) for n, v in c.execute(SQL_COUNTERS)})

    async def get_init(self, plugin: str) -> InitRecord | None:
        return await self._read("get_init", lambda c: reads.get_init(c, plugin))
