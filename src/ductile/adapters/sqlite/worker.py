"""One connection, one thread, batched futures: the threads of the SQLite store.

A :class:`Worker` owns one SQLite connection, opened on its own thread, and
runs the *units* (plain functions of the connection) put on its queue; each
caller awaits an asyncio future, resolved with ``loop.call_soon_threadsafe``
(one wake-up per event loop for everything that finished together).

* :class:`Writer` takes **all** pending units at once (up to
  :data:`MAX_BATCH`), runs them in **one** ``BEGIN IMMEDIATE`` transaction,
  each inside its own ``SAVEPOINT`` (a unit that raises is rolled back alone
  and its caller alone gets the exception), commits once, and only then
  resolves the futures: a write is acknowledged only once it is durable. That
  is group commit (ADR 0010). A batch of *relaxed* units only (``durable``
  False) commits at :func:`relaxed_level`; ``PRAGMA synchronous`` is switched
  between transactions only, never inside one.
* :class:`Reader` runs one unit at a time, outside any explicit transaction
  (every read is one statement, so it sees one committed snapshot).

Faults (:mod:`~ductile.adapters.sqlite.faults`): every failed batch is told to
the writer's :class:`~ductile.adapters.sqlite.faults.FaultTracker`, every
commit that changed something clears a transient fault. A batch that SQLite
rolled back for want of space is run once more if the store's *reclaim* (a
checkpoint that truncates the write-ahead log) gave some back: a disk that
the log alone filled never fails a write. The writer wakes at
least every :data:`UPKEEP_EVERY` seconds, idle or not, to run the store's
*upkeep* (heal a fault, watch the write-ahead log's file), which may hand it a
new connection; a reader asked to :class:`Reconnect` closes its connection
and opens a new one once the writer says so.

Units must never call back into the store: they run on the worker's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, Final

import attrs

from ductile.adapters.sqlite.errors import StoreClosedError
from ductile.adapters.sqlite.faults import FaultTracker, fault_kind

#: Most units committed in one transaction.
MAX_BATCH: Final = 256
#: Seconds between two upkeep rounds of the writer when it has nothing else to do.
UPKEEP_EVERY: Final = 1.0
#: Longest a reader waits, connection closed, for the writer to reopen its own.
RECONNECT_WAIT: Final = 30.0
SYNCHRONOUS_MODES: Final = ("OFF", "NORMAL", "FULL", "EXTRA")


def relaxed_level(level: str) -> str:
    """The ``synchronous`` level of a batch of relaxed units on a store opened at ``level``:
    never stronger than NORMAL (no fsync at commit in WAL mode), never weaker than the store's own."""
    return "NORMAL" if SYNCHRONOUS_MODES.index(level) > SYNCHRONOUS_MODES.index("NORMAL") else level


@attrs.frozen
class WriterStats:
    """What the writer thread has done since the store was opened."""

    #: Write transactions committed (one per batch that got as far as COMMIT).
    commits: int
    #: Units executed (each committed with its batch, or rolled back alone).
    units: int
    #: The most units one transaction carried.
    largest_batch: int
    #: Of ``commits``, those made at the relaxed level (every unit of the batch relaxed).
    relaxed_commits: int = 0
    #: Idle syncs of relaxed commits (a passive checkpoint, ADR 0068).
    idle_syncs: int = 0


@attrs.define(eq=False)
class Pending:
    """One submitted unit and the future its caller awaits."""

    name: str
    fn: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    #: Must survive power loss once acknowledged (False: a relaxed unit, see the module's docs).
    durable: bool = True


@attrs.define(eq=False)
class Reconnect:
    """Put on a reader's queue: close the connection, wait for ``go``, open a new one, set ``done``."""

    closed: threading.Event = attrs.field(factory=threading.Event)
    go: threading.Event = attrs.field(factory=threading.Event)
    done: threading.Event = attrs.field(factory=threading.Event)
    #: Why the new connection could not be opened (the reader then stops: the store is closed).
    error: BaseException | None = None


_STOP: Final = object()
_Delivery = tuple[Pending, Any, BaseException | None]
#: Turns what a unit (or the connection) raised into what its caller gets: (error, unit name,
#: the connection when there is one, to measure what a full disk needs).
Failure = Callable[[BaseException, str, sqlite3.Connection | None], BaseException]
#: The writer's upkeep between batches (idle: True when nothing is waiting); returns the
#: connection to go on with (a new one after the write-ahead log's file was replaced).
Upkeep = Callable[[sqlite3.Connection, bool], sqlite3.Connection]


def _resolve(items: list[_Delivery]) -> None:
    for pending, result, error in items:
        if pending.future.done():  # the caller was cancelled; the unit still ran
            continue
        if error is not None:
            pending.future.set_exception(error)
        else:
            pending.future.set_result(result)


def _deliver(items: list[_Delivery]) -> None:
    """Resolve futures on their own loops, one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Delivery]] = {}
    for item in items:
        by_loop.setdefault(item[0].loop, []).append(item)
    for loop, group in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(_resolve, group)


def _deliver_ready(
    loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None], error: BaseException | None
) -> None:
    def resolve() -> None:
        if ready.done():
            return
        if error is None:
            ready.set_result(None)
        else:
            ready.set_exception(error)

    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(resolve)


class Worker:
    """A thread that owns one connection and runs the units put on its queue."""

    #: Says what failed when the connection cannot be opened.
    opening = "opening the database"

    def __init__(
        self,
        *,
        thread_name: str,
        where: str,
        connect: Callable[[], sqlite3.Connection],
        failure: Failure,
        on_exit: Callable[[], None],
    ) -> None:
        self._thread_name = thread_name
        self._where = where
        self._connect = connect
        self._failure = failure
        self._on_exit = on_exit
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """Start the thread; the future resolves once the connection is open (or failed to open)."""
        ready: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(
            target=self._main, args=(loop, ready), name=self._thread_name, daemon=True
        )
        self._thread.start()
        return ready

    def put(self, pending: Pending) -> None:
        self._queue.put(pending)

    def queued(self) -> int:
        """Units waiting in the queue (not yet taken by the thread)."""
        return self._queue.qsize()

    def stop(self) -> None:
        """Finish what was put before, then close the connection and end the thread."""
        self._queue.put(_STOP)

    async def join(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            await asyncio.get_running_loop().run_in_executor(None, thread.join)

    def _main(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        try:
            self._conn = self._connect()
        except BaseException as e:
            _deliver_ready(loop, ready, self._failure(e, self.opening, None))
            self._fail_remaining()
            return
        _deliver_ready(loop, ready, None)
        try:
            self._serve(self._conn)
        finally:
            self._on_exit()
            if self._conn is not None:
                self._conn.close()
            self._fail_remaining()

    def _serve(self, conn: sqlite3.Connection) -> None:
        raise NotImplementedError

    def _fail_remaining(self) -> None:
        left: list[_Delivery] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Pending):
                closed = StoreClosedError(f"{self._where}: {item.name}: the store was closed")
                left.append((item, None, closed))
        _deliver(left)


class Reader(Worker):
    """Runs one unit at a time on a ``query_only`` connection."""

    opening = "opening the database for reading"

    def _serve(self, conn: sqlite3.Connection) -> None:
        while True:
            pending = self._queue.get()
            if isinstance(pending, Reconnect):
                reopened = self._reconnect(conn, pending)
                if reopened is None:
                    break
                conn = reopened
                continue
            if not isinstance(pending, Pending):
                break
            try:
                delivery: _Delivery = (pending, pending.fn(conn), None)
            except Exception as e:
                delivery = (pending, None, self._failure(e, pending.name, None))
            _deliver([delivery])

    def reconnect(self, token: Reconnect) -> None:
        """Ask for a new connection after the units already queued (see :class:`Reconnect`)."""
        self._queue.put(token)

    def _reconnect(self, conn: sqlite3.Connection, token: Reconnect) -> sqlite3.Connection | None:
        conn.close()
        self._conn = None
        token.closed.set()
        token.go.wait(RECONNECT_WAIT)
        try:
            self._conn = self._connect()
        except Exception as e:
            token.error = e
            return None
        finally:
            token.done.set()
        return self._conn


class Writer(Worker):
    """Runs units in batches, one transaction per batch, each unit in its own savepoint."""

    def __init__(
        self,
        *,
        thread_name: str,
        where: str,
        connect: Callable[[], sqlite3.Connection],
        failure: Failure,
        on_exit: Callable[[], None],
        synchronous: str,
        tracker: FaultTracker,
        upkeep: Upkeep | None = None,
        reclaim: Callable[[sqlite3.Connection], bool] | None = None,
    ) -> None:
        super().__init__(
            thread_name=thread_name, where=where, connect=connect, failure=failure, on_exit=on_exit
        )
        self._synchronous = synchronous
        self._tracker = tracker
        self._upkeep = upkeep
        self._reclaim = reclaim
        #: The ``synchronous`` level the connection is at (the connection opens at the store's).
        self._level = synchronous
        self._commits = 0
        self._relaxed_commits = 0
        self._units = 0
        self._largest_batch = 0
        #: Relaxed commits since the last fsync of the write-ahead log (see :meth:`_sync_relaxed`).
        self._unsynced = False
        self._syncs = 0

    @property
    def stats(self) -> WriterStats:
        return WriterStats(
            self._commits, self._units, self._largest_batch, self._relaxed_commits, self._syncs
        )

    def _serve(self, conn: sqlite3.Connection) -> None:
        stopping = False
        while not stopping:
            try:
                first = self._queue.get(timeout=UPKEEP_EVERY)
            except queue.Empty:
                self._sync_relaxed(conn)
                conn = self._keep_up(conn, idle=True)
                continue
            if not isinstance(first, Pending):
                break
            conn = self._keep_up(conn, idle=False)
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(item, Pending):
                    stopping = True
                    break
                batch.append(item)
            try:
                self._run_batch(conn, batch)
            except Exception as e:  # a bug or a broken connection: fail the batch, keep serving
                _deliver([(p, None, self._fail(e, p.name, conn)) for p in batch])
                if conn.in_transaction:
                    conn.execute("ROLLBACK")

    def _sync_relaxed(self, conn: sqlite3.Connection) -> None:
        """Idle after relaxed commits: make them durable now (a passive checkpoint fsyncs the
        write-ahead log first), so a power cut can only take what the last second committed
        (ADR 0068). Nothing is lost when this fails: the next durable commit covers them."""
        if not self._unsynced:
            return
        self._unsynced = False
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self._syncs += 1

    def _keep_up(self, conn: sqlite3.Connection, *, idle: bool) -> sqlite3.Connection:
        """The store's upkeep; a bug in it is logged by the store, never ends the writer."""
        if self._upkeep is None:
            return conn
        new = self._upkeep(conn, idle)
        self._conn = new
        return new

    def _fail(self, error: BaseException, name: str, conn: sqlite3.Connection) -> BaseException:
        """What a unit's caller gets, told to the fault tracker."""
        failure = self._failure(error, name, conn)
        self._tracker.failed(failure)
        return failure

    def _set_level(self, conn: sqlite3.Connection, level: str) -> None:
        """Switch ``synchronous`` (outside a transaction only: SQLite applies it per transaction)."""
        if level != self._level:
            conn.execute(f"PRAGMA synchronous = {level}")
            self._level = level

    def _commit(
        self, conn: sqlite3.Connection, *, durable: bool, units: int, changes: int
    ) -> Exception | None:
        """COMMIT the batch; what SQLite raised when it could not (the batch is then rolled back)."""
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return e
        self._commits += 1
        if not durable:
            self._relaxed_commits += 1
        # A relaxed commit below the store's level waits for a sync; a durable one syncs all before.
        self._unsynced = not durable and relaxed_level(self._synchronous) != self._synchronous
        self._largest_batch = max(self._largest_batch, units)
        if conn.total_changes != changes:  # it really wrote: writes work
            self._tracker.succeeded()
        return None

    def _run_batch(self, conn: sqlite3.Connection, batch: list[Pending]) -> None:
        reclaimed = False
        while batch:
            durable = any(p.durable for p in batch)
            try:
                self._set_level(conn, self._synchronous if durable else relaxed_level(self._synchronous))
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                if not reclaimed and self._reclaims(e, conn):
                    reclaimed = True
                    continue
                _deliver([(p, None, self._fail(e, p.name, conn)) for p in batch])
                return
            changes = conn.total_changes
            done, rest, aborted = self._run_units(conn, batch)
            if aborted is None:
                aborted = self._commit(conn, durable=durable, units=len(done), changes=changes)
            if aborted is not None and not reclaimed and self._reclaims(aborted, conn):
                # SQLite rolled the whole batch back and nobody was told: once more, in the room
                # the checkpoint just gave back.
                reclaimed = True
                continue
            _deliver([self._delivery(item, aborted, conn) for item in done])
            batch = rest

    def _delivery(
        self, item: _Delivery, aborted: BaseException | None, conn: sqlite3.Connection
    ) -> _Delivery:
        """What the unit's caller is told: its result, or its error (the transaction's, when
        SQLite rolled all of it back), as the store words it."""
        pending, _, error = item
        cause = error if error is not None else aborted
        if cause is None:
            return item
        return (pending, None, self._fail(cause, pending.name, conn))

    def _run_units(
        self, conn: sqlite3.Connection, batch: list[Pending]
    ) -> tuple[list[_Delivery], list[Pending], Exception | None]:
        """Each unit in its savepoint: (what each gave or raised, the units never run, what
        aborted the transaction when SQLite rolled all of it back)."""
        done: list[_Delivery] = []
        for index, pending in enumerate(batch):
            conn.execute("SAVEPOINT unit")
            try:
                result = pending.fn(conn)
            except Exception as e:
                self._units += 1
                done.append((pending, None, e))
                if conn.in_transaction:
                    conn.execute("ROLLBACK TO unit")
                    conn.execute("RELEASE unit")
                    continue
                # SQLite rolled back the whole transaction (I/O error, full disk...):
                # the units before this one are lost too; the ones after never ran.
                return done, batch[index + 1 :], e
            self._units += 1
            conn.execute("RELEASE unit")
            done.append((pending, result, None))
        return done, [], None

    def _reclaims(self, error: BaseException, conn: sqlite3.Connection) -> bool:
        """A write failed for want of space: True when the store's ``reclaim`` gave some back
        (the write-ahead log checkpointed and truncated), so the batch is worth one more try."""
        return self._reclaim is not None and fault_kind(error) == "full" and self._reclaim(conn)
