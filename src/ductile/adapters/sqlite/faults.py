"""Faults of the machine under the SQLite store: what they are called, the episode they start, healing.

* :func:`store_error` turns what SQLite raised into the error a caller gets:
  a busy lock, a full disk, an I/O error become transient
  :class:`~ductile.ports.store_faults.TransientStoreError` subclasses, a corrupt page or a
  file that is not a database a permanent one; each message names the file,
  what failed and what to do, in one line (a full disk says how much space
  would let the database carry on: :func:`measure_space`).
* :class:`FaultTracker` is the writer's record of its last writes (the port's
  ``write_fault``): a fault starts an *episode*, logged once when it begins
  and once when it ends, however many writes fail meanwhile. A permanent
  fault lasts until the store is reopened.
* :func:`heal` is what the writer does while a transient fault lasts (between
  batches and, idle, once a second): move the write-ahead log into the
  database and truncate it (``wal_checkpoint(TRUNCATE)``: on a full disk this
  gives back the log's space as soon as the database can grow by the pages
  the log holds), then a one-page write that tells whether writes work again.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import attrs

from ductile.adapters.sqlite.errors import (
    StoreBusyError,
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreIOError,
)
from ductile.log import Log
from ductile.ports.store_faults import StoreFaultError, WriteFault

_log = Log("store")

#: SQLite's primary result codes that are faults of the machine, by kind.
_KINDS: Final[dict[int, str]] = {
    sqlite3.SQLITE_BUSY: "busy",
    sqlite3.SQLITE_LOCKED: "busy",
    sqlite3.SQLITE_FULL: "full",
    sqlite3.SQLITE_IOERR: "io",
    sqlite3.SQLITE_READONLY: "io",
    sqlite3.SQLITE_CANTOPEN: "io",
    sqlite3.SQLITE_NOMEM: "io",
    sqlite3.SQLITE_CORRUPT: "corrupt",
    sqlite3.SQLITE_NOTADB: "corrupt",
}
#: Room asked for beyond what moving the write-ahead log into the database takes: the next
#: transactions' log frames (a few pages each) and the shared-memory index.
SPACE_MARGIN: Final = 512 * 1024
#: Below this much free space an I/O error is reported as a full disk (SQLite says "disk I/O
#: error" when it cannot grow the shared-memory file on a full filesystem).
NEARLY_FULL: Final = 64 * 1024
#: ``busy_timeout`` of the probe write while a fault lasts (ms): a held lock fails it quickly.
PROBE_BUSY_MS: Final = 200


def fault_kind(error: BaseException) -> str | None:
    """``busy``, ``full``, ``io`` or ``corrupt`` for a fault of the machine; None for anything else."""
    if not isinstance(error, sqlite3.Error):
        return None
    return _KINDS.get(getattr(error, "sqlite_errorcode", 0) & 0xFF)


def mib(size: int) -> str:
    """``1.3 MiB`` (``0.1 MiB`` at least, rounded up: a figure to free, never too small)."""
    tenths = max(1, -(-size * 10 // (1024 * 1024)))
    return f"{tenths // 10}.{tenths % 10} MiB"


@attrs.frozen
class Space:
    """Free space where the database lives, and what it needs to carry on."""

    directory: str
    free: int
    #: Free bytes that let the database take in its write-ahead log and write again.
    needed: int


def measure_space(path: Path, conn: sqlite3.Connection | None = None) -> Space | None:
    """What the database at ``path`` needs: the pages its write-ahead log adds to the file (exact
    with ``conn``, whose view includes the log; else the log's size, an upper bound) plus
    :data:`SPACE_MARGIN`. None when the filesystem cannot be asked."""
    directory = str(path.parent)
    try:
        vfs = os.statvfs(directory)
        size = path.stat().st_size
    except OSError:
        return None
    growth: int | None = None
    if conn is not None:
        try:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            growth = max(0, int(pages) * int(page_size) - size)
        except sqlite3.Error:
            growth = None
    if growth is None:
        try:
            growth = os.stat(f"{path}-wal").st_size
        except OSError:
            growth = 0
    return Space(directory=directory, free=vfs.f_bavail * vfs.f_frsize, needed=growth + SPACE_MARGIN)


def store_error(
    error: sqlite3.Error, *, where: Path, name: str, busy_timeout: float, space: Space | None = None
) -> StoreError:
    """The error a caller gets for what SQLite raised (see the module's docs)."""
    kind = fault_kind(error)
    head = f"{where}: {name} failed"
    new: StoreError
    if kind == "io" and space is not None and space.free < NEARLY_FULL:
        kind = "full"
    if kind == "busy":
        new = StoreBusyError(
            f"{head}: the database stayed locked by another connection for longer than busy_timeout "
            f"({busy_timeout:g} s); nothing was written"
        )
    elif kind == "full":
        if space is None:
            new = StoreFullError(f"{head}: the disk is full; nothing was written; free space next to {where}")
        else:
            new = StoreFullError(
                f"{head}: the disk is full ({mib(space.free) if space.free else 'nothing'} free in "
                f"{space.directory}); nothing was written. Free at least {mib(space.needed)} there: "
                "ductile then moves its write-ahead log into the database and carries on by itself",
                needed=space.needed,
            )
    elif kind == "io":
        new = StoreIOError(
            f"{head}: {error} (the disk or the state directory refused a write: check its mount, "
            "permissions and the kernel log); nothing was written"
        )
    elif kind == "corrupt":
        new = StoreCorruptError(
            f"{head}: the database is damaged ({error}). Stop ductile and restore the database from "
            "a backup (docs/operations.md, Backups); `ductile selfcheck` shows what is wrong"
        )
    else:
        new = StoreError(f"{head}: SQLite error: {error}")
    new.__cause__ = error
    return new


def _now() -> datetime:
    return datetime.now(UTC)


@attrs.define
class _Episode:
    """A run of failed writes, from the first until writes have worked for :data:`QUIET` seconds."""

    since: datetime
    kind: str
    failed_writes: int = 0
    #: When writes started working again (None while they fail).
    working_since: datetime | None = None


#: Seconds writes must keep working before an episode is logged as over: at the edge of a full
#: disk some writes fit (a row updated in place) while others do not, and that is one episode.
QUIET: Final = 5.0


class FaultTracker:
    """The writer's record of its last writes: the fault of now, and the episode it belongs to.

    :attr:`fault` is the state of now: set when a write fails, cleared (a transient fault)
    as soon as a write works. The *episode* is what is logged: one line when it begins
    (and one if its kind changes), one when writes have worked for :data:`QUIET` seconds
    (:meth:`tick`), however often the fault came and went meanwhile. Written by the writer
    thread, read from anywhere (one reference, swapped whole).
    """

    def __init__(self, where: Path, *, now: Callable[[], datetime] = _now) -> None:
        self._where = where
        self._now = now
        self._lock = threading.Lock()
        self._fault: WriteFault | None = None
        self._episode: _Episode | None = None

    @property
    def fault(self) -> WriteFault | None:
        return self._fault

    def failed(self, error: BaseException, *, counted: bool = True) -> None:
        """A write failed with ``error``: a fault of the machine starts (or continues) an episode.
        ``counted``: a caller's write (not the writer's own probe)."""
        if not isinstance(error, StoreFaultError):
            return
        with self._lock:
            current = self._fault
            if current is not None and not current.transient:
                return  # a permanent fault stays, in its own words
            episode = self._episode
            new_kind = episode is None or episode.kind != error.kind
            if episode is None:
                episode = self._episode = _Episode(since=self._now(), kind=error.kind)
            episode.kind = error.kind
            episode.failed_writes += counted
            episode.working_since = None
            self._fault = WriteFault(
                reason=str(error), kind=error.kind, transient=error.transient, since=episode.since
            )
        if not new_kind:
            return
        if error.transient:
            _log.error(f"the database refuses writes: {error}", kind=error.kind, database=str(self._where))
        else:
            _log.critical(
                f"the database refuses writes until it is repaired: {error}",
                kind=error.kind,
                database=str(self._where),
            )

    def succeeded(self) -> None:
        """A write committed: a transient fault is over (its episode ends once quiet, :meth:`tick`)."""
        with self._lock:
            current = self._fault
            if current is None or not current.transient:
                return
            self._fault = None
            if self._episode is not None and self._episode.working_since is None:
                self._episode.working_since = self._now()

    def tick(self) -> None:
        """Log the end of an episode whose writes have worked for :data:`QUIET` seconds."""
        with self._lock:
            episode = self._episode
            if episode is None or episode.working_since is None:
                return
            now = self._now()
            if (now - episode.working_since).total_seconds() < QUIET:
                return
            self._episode = None
        took = (episode.working_since - episode.since).total_seconds()
        _log.info(
            f"the database accepts writes again, after {took:.1f} s ({episode.kind}); "
            f"{episode.failed_writes} write(s) failed meanwhile",
            database=str(self._where),
        )


def probe(conn: sqlite3.Connection, busy_ms: int) -> None:
    """One real one-page write (the schema version, rewritten as it is): raises when writes fail."""
    conn.execute(f"PRAGMA busy_timeout = {PROBE_BUSY_MS}")
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
    finally:
        conn.execute(f"PRAGMA busy_timeout = {busy_ms}")


def heal(
    conn: sqlite3.Connection,
    tracker: FaultTracker,
    *,
    describe: Callable[[sqlite3.Error, str, sqlite3.Connection], StoreError],
    busy_ms: int,
    write: bool,
) -> bool:
    """While a transient fault lasts: move the write-ahead log into the database and truncate it
    (not for a held lock: that waits for the lock), then, with ``write``, probe. True once healed."""
    fault = tracker.fault
    if fault is None or not fault.transient:
        return fault is None
    try:
        if fault.kind != "busy":
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        if not write:
            return False
        probe(conn, busy_ms)
    except sqlite3.Error as e:
        if conn.in_transaction:  # pragma: no cover - probe rolls back itself
            conn.execute("ROLLBACK")
        tracker.failed(describe(e, "writing", conn), counted=False)
        return False
    tracker.succeeded()
    return True
