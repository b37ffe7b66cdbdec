"""The database file under a :class:`~ductile.adapters.sqlite.SqliteStore`: its connections and their upkeep.

* **Opening.** The writer's connection is opened after :func:`~.opening.preflight`
  (a missing database is made whole by :func:`~.opening.create`), migrated,
  and, when asked (the daemon at start), checked with ``quick_check``.
* **Errors.** :meth:`Database.failure` is what a caller gets for what SQLite
  raised (:func:`~.faults.store_error`: typed, one line, the space a full disk needs).
* **Upkeep**, run by the writer between batches and about once a second when
  idle (:meth:`Database.upkeep`):

  - a transient fault is healed (:func:`~.faults.heal`: the log moved into
    the database and truncated, then a probe write);
  - a ``-wal`` or ``-shm`` deleted under the running store
    (:mod:`~.walwatch`) is checkpointed into the database at once and every
    connection of the store reopened, logged at CRITICAL;
  - with less than :data:`LOW_SPACE` free on the filesystem, the log is
    checkpointed every :data:`LOW_SPACE_PAGES` pages instead of SQLite's
    1000, so it does not grow into the last free space.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from ductile.adapters.sqlite.errors import StoreError
from ductile.adapters.sqlite.faults import FaultTracker, fault_kind, heal, measure_space, store_error
from ductile.adapters.sqlite.opening import check_integrity, connect, create, preflight, use_wal
from ductile.adapters.sqlite.schema import Migration, migrate, refuse_newer
from ductile.adapters.sqlite.walwatch import FileWatch
from ductile.adapters.sqlite.worker import RECONNECT_WAIT, UPKEEP_EVERY, Reconnect
from ductile.log import Log

_log = Log("store")

#: Below this much free space the write-ahead log is kept short.
LOW_SPACE: Final = 8 * 1024 * 1024
#: ``wal_autocheckpoint`` while space is low (SQLite's default, kept otherwise, is 1000 pages).
LOW_SPACE_PAGES: Final = 64
DEFAULT_AUTOCHECKPOINT: Final = 1000
#: Seconds between two looks at the free space.
SPACE_EVERY: Final = 5.0


class Database:
    """One database file and the connections of one store to it (see the module's docs)."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str,
        busy_timeout: float,
        migrations: Sequence[Migration],
        integrity_check: bool = False,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.tracker = FaultTracker(path)
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._busy_ms = int(busy_timeout * 1000)
        self._migrations = migrations
        self._integrity_check = integrity_check
        self._monotonic = monotonic
        self._files = FileWatch(path)
        #: Puts a :class:`Reconnect` on the reader's queue (set by the store once it has a reader).
        self.reader_put: Callable[[Reconnect], None] | None = None
        self._next_look = 0.0
        self._next_space_look = 0.0
        self._autocheckpoint = DEFAULT_AUTOCHECKPOINT

    # ------------------------------------------------------------- connections
    def open_writer(self) -> sqlite3.Connection:
        where = str(self.path)
        if not preflight(self.path):
            create(self.path, self._migrations, self._busy_timeout)
        conn = connect(self.path, self._busy_timeout)
        try:
            refuse_newer(conn, where, len(self._migrations))
            if self._integrity_check:
                check_integrity(conn, where)
            self._configure(conn)
            migrate(conn, where, self._migrations)
        except BaseException:
            conn.close()
            raise
        self._files.remember()
        return conn

    def _configure(self, conn: sqlite3.Connection) -> None:
        use_wal(conn, str(self.path))
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA wal_autocheckpoint = {self._autocheckpoint}")
        # The writer runs each unit of a batch in a savepoint, and SQLite keeps the pages a
        # savepoint changed in a statement journal for the whole transaction: past 64 KiB
        # (a few units) it spills into a temporary file, one write per page of every unit.
        # In memory it is never written (a crash loses nothing: the WAL is the journal).
        conn.execute("PRAGMA temp_store = MEMORY")

    def open_reader(self) -> sqlite3.Connection:
        conn = connect(self.path, self._busy_timeout)
        conn.execute("PRAGMA query_only = ON")
        return conn

    def failure(self, error: BaseException, name: str, conn: sqlite3.Connection | None) -> BaseException:
        """The exception a caller gets: SQLite errors become clear StoreErrors."""
        if isinstance(error, sqlite3.Error):
            kind = fault_kind(error)
            space = measure_space(self.path, conn) if kind in ("full", "io") else None
            return store_error(
                error, where=self.path, name=name, busy_timeout=self._busy_timeout, space=space
            )
        return error

    def _describe(self, error: sqlite3.Error, name: str, conn: sqlite3.Connection) -> StoreError:
        failure = self.failure(error, name, conn)
        assert isinstance(failure, StoreError)
        return failure

    # ------------------------------------------------------------- upkeep (the writer's thread)
    def reclaim(self, conn: sqlite3.Connection) -> bool:
        """A batch failed for want of space: move the write-ahead log into the database and
        truncate it. True when that went through (the batch is then worth one more try)."""
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error:
            return False
        return int(busy) == 0

    def upkeep(self, conn: sqlite3.Connection, idle: bool) -> sqlite3.Connection:
        """Between batches (``idle`` False) or when idle: see the module's docs."""
        try:
            now = self._monotonic()
            if idle or now >= self._next_look:
                self._next_look = now + UPKEEP_EVERY
                replaced = self._files.replaced()
                if replaced:
                    conn = self._mend_files(conn, replaced)
                if now >= self._next_space_look:
                    self._next_space_look = now + SPACE_EVERY
                    self._keep_log_short(conn)
            fault = self.tracker.fault
            healing = fault is not None and fault.transient
            healed = healing and heal(
                conn, self.tracker, describe=self._describe, busy_ms=self._busy_ms, write=idle
            )
            if healed:
                self._next_space_look = 0.0  # look at the space again at once
            self.tracker.tick()
        except Exception:  # upkeep must never end the writer
            _log.exception("the store's upkeep failed; trying again in a second")
        return conn

    def _keep_log_short(self, conn: sqlite3.Connection) -> None:
        try:
            vfs = os.statvfs(self.path.parent)
        except OSError:
            return
        wanted = LOW_SPACE_PAGES if vfs.f_bavail * vfs.f_frsize < LOW_SPACE else DEFAULT_AUTOCHECKPOINT
        if wanted != self._autocheckpoint:
            conn.execute(f"PRAGMA wal_autocheckpoint = {wanted}")
            self._autocheckpoint = wanted
            if wanted == LOW_SPACE_PAGES:
                _log.warning(
                    f"less than {LOW_SPACE // (1024 * 1024)} MiB free in {self.path.parent}: the "
                    f"write-ahead log is checkpointed every {wanted} pages until there is more",
                    database=str(self.path),
                )

    def _mend_files(self, conn: sqlite3.Connection, replaced: list[str]) -> sqlite3.Connection:
        """A ``-wal``/``-shm`` name no longer leads to our open file: move the log we hold into
        the database, then reopen every connection so all processes share the files again."""
        names = " and ".join(f"{self.path.name}{suffix}" for suffix in replaced)
        _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:  # another process reads an old snapshot: try again at the next round
            _log.error(f"{names} was deleted or replaced; the checkpoint that saves it waits for a reader")
            return conn
        token = Reconnect()
        if self.reader_put is not None:
            self.reader_put(token)
            token.closed.wait(RECONNECT_WAIT)
        conn.close()
        fresh = connect(self.path, self._busy_timeout)
        self._configure(fresh)
        token.go.set()
        if self.reader_put is not None:
            token.done.wait(RECONNECT_WAIT)
        self._files.remember()
        _log.critical(
            f"{names} was deleted or replaced while ductile ran: the {frames} committed frame(s) of the "
            f"write-ahead log it still held open were checkpointed into {self.path.name} and the "
            "connections reopened; nothing was lost. Never delete the -wal or -shm files of a "
            "database in use (docs/operations.md, Backups)",
            database=str(self.path),
        )
        return fresh
