"""PostgresStore: the Store port on a PostgreSQL database shared by several daemons.

Every write method runs one of the shared units (:mod:`ductile.units`) over a
:class:`~ductile.adapters.postgres.tx.PgTx`: the same unit bodies SQLite and
the in-memory fakes run, in one READ COMMITTED transaction of its own, with
the real locks the Tx takes. Reads are one statement each.

Connections and threads (ADR 0033)
----------------------------------
* A ``psycopg_pool.ConnectionPool`` of synchronous connections, and a thread
  pool as large: a unit runs on a thread, holding a connection for the length
  of its transaction only (never across a plugin run). PostgreSQL shares one
  WAL flush among concurrent commits (group commit across connections), so
  there is no writer thread of our own.
* Every unit is durable (``synchronous_commit`` on), the claims included: a
  claim lost to the database's crash while its plugin runs on a healthy host
  would let another node run the job at the same time. Only ``record_process``
  is relaxed (``SET LOCAL synchronous_commit = off``): lost, the job falls back
  to its deadline instead of an immediate kill.
* A unit that meets a concurrent writer (a deadlock, a serialization failure,
  another claimer in its slot, an id stored meanwhile) is rolled back and run
  again, a few times, after a short random pause.
* No connection is available within ``connect_timeout``, or the server cannot
  be reached: the unit fails with :class:`StoreBusyError` / :class:`StoreError`
  naming the database (never its password), and nothing was written.

Node identity (ADR 0034): a store opened with a ``node`` claims in that
node's name, and only while its lease (in ``nodes``) is valid; a store opened
without one (the command line) reads, enqueues and resets, but claims nothing.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import attrs
import psycopg
from psycopg import errors as pgerrors
from psycopg_pool import ConnectionPool, PoolTimeout

from ductile import units
from ductile.adapters.postgres.errors import StoreBusyError, StoreClosedError, StoreError
from ductile.adapters.postgres.reads import PgReads
from ductile.adapters.postgres.schema import migrate, redact
from ductile.adapters.postgres.tx import Orphans, PgTx, RetryUnitError, TxScope
from ductile.domain import breaker as br
from ductile.domain.activity import Activity, SkipReason
from ductile.domain.classify import RunEnd
from ductile.domain.job import Actor, Job
from ductile.domain.lanes import UNLIMITED, Lanes
from ductile.domain.lifecycle import Alerts
from ductile.domain.schedule import PlannedRun
from ductile.domain.settle import SettleContext, Settlement
from ductile.ports.spawner import ProcessHandle
from ductile.ports.store_faults import WriteFault
from ductile.ports.store_values import (
    ClaimConflictError,
    Committed,
    EnqueueResult,
    FireResult,
    Guard,
    InitRecord,
    Pruned,
    Rewound,
)

T = TypeVar("T")
Conn = psycopg.Connection[Any]

#: How often a unit that met a concurrent writer is run again before it fails.
MAX_RETRIES = 8
#: What a concurrent writer makes a unit raise: roll back, pause, run it again.
_RETRIED = (
    ClaimConflictError,
    RetryUnitError,
    pgerrors.SerializationFailure,
    pgerrors.DeadlockDetected,
)


@attrs.frozen(kw_only=True)
class Node:
    """The daemon a store claims for: its id (fresh at every start, never reused) and facts."""

    id: str
    host: str
    pid: int
    #: The fingerprint of its config and plugins (nodes that disagree do not share work).
    config_fp: str = ""


class PostgresStore(PgReads):
    """The Store port on PostgreSQL. Open with ``await PostgresStore.open(url, instance=...)``."""

    def __init__(
        self,
        url: str,
        *,
        instance: str,
        pool_size: int = 6,
        connect_timeout: float = 5.0,
        margin: timedelta = timedelta(seconds=2),
    ) -> None:
        if pool_size < 2:
            raise ValueError(f"pool_size must be at least 2, got {pool_size}")
        self._url = url
        self.where = redact(url)
        self.instance = instance
        self._timeout = connect_timeout
        self._margin = margin
        self._node: Node | None = None
        self._executor = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="ductile-pg")
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "connect_timeout": max(1, round(connect_timeout))},
            configure=_configure,
            open=False,
            name="ductile",
        )
        self._open = False
        self._closed = False
        #: Why the last unit failed to reach the database, until one succeeds again.
        self._fault: WriteFault | None = None

    # ------------------------------------------------------------- life cycle
    @classmethod
    async def open(
        cls,
        url: str,
        *,
        instance: str,
        node: Node | None = None,
        lease: timedelta = timedelta(seconds=15),
        pool_size: int = 6,
        connect_timeout: float = 5.0,
        margin: timedelta = timedelta(seconds=2),
    ) -> PostgresStore:
        """Connect, migrate the schema (once, whoever comes first) and, given a ``node``, register it
        with a lease of ``lease`` (a daemon then renews it: :mod:`ductile.adapters.postgres.cluster`).
        ``margin``: how long past a claim's deadline peer recovery waits."""
        store = cls(
            url, instance=instance, pool_size=pool_size, connect_timeout=connect_timeout, margin=margin
        )
        try:
            await store._start()
            if node is not None:
                await store.register(node, lease)
        except BaseException:
            await store.close()
            raise
        return store

    async def _start(self) -> None:
        def start() -> None:
            try:
                self._pool.open(wait=True, timeout=self._timeout)
            except PoolTimeout as e:
                raise StoreError(
                    f"{self.where}: cannot connect to PostgreSQL within {self._timeout:g} s: {_cause(e)}"
                ) from e
            with self._pool.connection(timeout=self._timeout) as conn:
                migrate(conn, self.where)

        await asyncio.get_running_loop().run_in_executor(self._executor, start)
        self._open = True

    async def close(self) -> None:
        """Close the pool (the node row stays: a daemon leaves through its cluster). Idempotent."""
        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(None, self._pool.close)
        self._executor.shutdown(wait=False)

    def write_fault(self) -> WriteFault | None:
        """Why units fail now: the database could not be reached or had no connection for the
        last one (None once one commits again). A refusal by the fence or a constraint is no fault."""
        return self._fault

    def _faulted(self, kind: str, error: StoreError) -> StoreError:
        if self._fault is None:
            self._fault = WriteFault(reason=str(error), kind=kind, transient=True, since=datetime.now(UTC))
        return error

    @property
    def node(self) -> Node | None:
        return self._node

    async def register(self, node: Node, lease: timedelta) -> None:
        """Claim from now on as ``node``, registered with a lease on the database's clock."""

        def insert(conn: Conn) -> None:
            conn.execute(
                "INSERT INTO nodes (id, instance, host, pid, config_fp, lease_until) "
                "VALUES (%s, %s, %s, %s, %s, now() + %s)",
                (node.id, self.instance, node.host, node.pid, node.config_fp, lease),
            )

        await self._read("register", insert)
        self._node = node

    # ------------------------------------------------------------- running units and reads
    def _scope(self, orphans: Orphans, keep: tuple[str, ...], before: datetime | None) -> TxScope:
        node = self._node.id if self._node is not None else None
        return TxScope(
            node=node, instance=self.instance, orphans=orphans, margin=self._margin, keep=keep, before=before
        )

    async def _unit(
        self,
        name: str,
        fn: Callable[[PgTx], T],
        *,
        durable: bool = True,
        orphans: Orphans = "instance",
        keep: tuple[str, ...] = (),
        before: datetime | None = None,
    ) -> T:
        if self._closed or not self._open:
            raise StoreClosedError(
                f"{self.where}: {name}: the store is {'closed' if self._closed else 'not open'}"
            )
        scope = self._scope(orphans, keep, before)
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._run_unit, name, fn, durable, scope
        )

    def _run_unit(self, name: str, fn: Callable[[PgTx], T], durable: bool, scope: TxScope) -> T:
        for attempt in range(MAX_RETRIES + 1):
            begun = False
            try:
                with self._connection(name) as conn, conn.transaction():  # BEGIN is sent here
                    begun = True
                    if not durable:
                        conn.execute("SET LOCAL synchronous_commit = off")
                    tx = PgTx(conn, scope)
                    result = fn(tx)
                    tx.finish()
            except psycopg.OperationalError as e:
                if not begun and attempt < MAX_RETRIES:
                    continue  # a pooled connection that died idle (a server restart): the pool drops it
                raise self._faulted(
                    "io",
                    StoreError(
                        f"{self.where}: {name} failed: {_cause(e)} (if the connection broke while "
                        "committing, the outcome is unknown: the cluster's sweeps settle what it left)"
                    ),
                ) from e
            except _RETRIED as e:
                if attempt == MAX_RETRIES:
                    raise StoreBusyError(
                        f"{self.where}: {name} met concurrent writers {MAX_RETRIES + 1} times in a row "
                        f"({type(e).__name__}); nothing was written"
                    ) from e
                time.sleep(random.uniform(0.001, 0.010) * (attempt + 1))
            except PoolTimeout as e:
                raise self._faulted(
                    "busy",
                    StoreBusyError(
                        f"{self.where}: {name}: no connection to PostgreSQL within {self._timeout:g} s; "
                        "nothing was written"
                    ),
                ) from e
            else:
                self._fault = None
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self, name: str) -> Any:
        return self._pool.connection(timeout=self._timeout)

    async def _read(self, name: str, fn: Callable[[Conn], T]) -> T:
        if self._closed or not self._open:
            raise StoreClosedError(
                f"{self.where}: {name}: the store is {'closed' if self._closed else 'not open'}"
            )

        def run() -> T:
            try:
                with self._pool.connection(timeout=self._timeout) as conn:
                    return fn(conn)
            except PoolTimeout as e:
                raise StoreBusyError(
                    f"{self.where}: {name}: no connection to PostgreSQL within {self._timeout:g} s"
                ) from e
            except psycopg.OperationalError as e:
                raise StoreError(f"{self.where}: {name} failed: {_cause(e)}") from e

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    def _node_id(self) -> str | None:
        return self._node.id if self._node is not None else None

    # ------------------------------------------------------------- jobs: the shared units
    async def enqueue(self, job: Job, *, actor: Actor, now: datetime, dedupe_ttl: timedelta) -> EnqueueResult:
        return await self._unit(
            "enqueue", lambda tx: units.enqueue(tx, job, actor=actor, now=now, dedupe_ttl=dedupe_ttl)
        )

    async def claim_next(self, now: datetime, *, lanes: Lanes = UNLIMITED) -> Job | None:
        node = self._node_id()
        return await self._unit("claim_next", lambda tx: units.claim_next(tx, now, lanes=lanes, node=node))

    async def claim(self, job_id: str, now: datetime, *, lanes: Lanes = UNLIMITED) -> Job | None:
        node = self._node_id()
        return await self._unit("claim", lambda tx: units.claim(tx, job_id, now, lanes=lanes, node=node))

    async def record_process(self, job_id: str, handle: ProcessHandle, *, token: int) -> None:
        await self._unit(
            "record_process",
            lambda tx: units.record_process(tx, job_id, handle, token=token),
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
        # Durable, the next claim included (a claim lost to the server's crash could run twice).
        node = self._node_id()
        return await self._unit(
            "settle",
            lambda tx: units.settle(
                tx, job_id, end, ctx=ctx, dedupe_ttl=dedupe_ttl, token=token, then_claim=then_claim, node=node
            ),
        )

    async def recover(self, now: datetime, *, alerts: Alerts | None = None) -> list[Settlement]:
        """Own-instance recovery: this instance's running jobs (its instance lock proves their
        nodes dead), each re-queued or buried at once, as D6 says."""
        return await self._unit("recover", lambda tx: units.recover(tx, now, alerts=alerts))

    async def recover_peers(self, now: datetime, *, alerts: Alerts | None = None) -> list[Settlement]:
        """Peer recovery: the running jobs of nodes that are not live, once each job's deadline and
        the margin have passed (no process of the claim can still run: the watchdog saw to it)."""
        return await self._unit(
            "recover_peers", lambda tx: units.recover(tx, now, alerts=alerts), orphans="peers"
        )

    async def recover_strays(
        self, now: datetime, *, keep: Collection[str], before: datetime, alerts: Alerts | None = None
    ) -> list[Settlement]:
        """This node's claims that it does not hold (``keep``: the jobs it runs), claimed before
        ``before``: a claim whose commit this node never heard of (the connection broke while it
        was committing). Settled as interrupted, as their plugins never ran."""
        return await self._unit(
            "recover_strays",
            lambda tx: units.recover(tx, now, alerts=alerts),
            orphans="strays",
            keep=tuple(sorted(keep)),
            before=before,
        )

    async def cancel_queued(
        self, plugin: str, *, reason: str, now: datetime, alerts: Alerts | None = None
    ) -> list[str]:
        return await self._unit(
            "cancel_queued",
            lambda tx: units.cancel_queued(tx, plugin, reason=reason, now=now, alerts=alerts),
        )

    async def delete_finished(self, before: datetime, *, limit: int | None = None) -> Pruned:
        return await self._unit("delete_finished", lambda tx: units.delete_finished(tx, before, limit=limit))

    async def reset_breakers(
        self,
        plugin: str,
        *,
        now: datetime | None = None,
        actor: str = "operator",
        alerts: Alerts | None = None,
    ) -> list[br.Breaker]:
        return await self._unit(
            "reset_breakers",
            lambda tx: units.reset_breakers(tx, plugin, now=now, actor=actor, alerts=alerts),
        )

    async def cancel_job(
        self, job_id: str, *, reason: str, actor: Actor, now: datetime, alerts: Alerts | None = None
    ) -> Job:
        return await self._unit(
            "cancel_job",
            lambda tx: units.cancel_job(tx, job_id, reason=reason, actor=actor, now=now, alerts=alerts),
        )

    async def note(self, entry: Activity, *, alerts: Alerts | None = None) -> None:
        await self._unit("note", lambda tx: units.note(tx, entry, alerts=alerts))

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
        return await self._unit(
            "fire",
            lambda tx: units.fire(
                tx,
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

    async def rewind(self, *, step: timedelta, plans: Sequence[tuple[PlannedRun, PlannedRun]]) -> Rewound:
        pairs = tuple(plans)
        return await self._unit("rewind", lambda tx: units.rewind(tx, step=step, plans=pairs))

    async def pause(self, plugin: str, schedule_id: str | None, *, now: datetime) -> bool:
        return await self._unit("pause", lambda tx: units.pause(tx, plugin, schedule_id, now=now))

    async def resume(self, plugin: str, schedule_id: str | None) -> bool:
        return await self._unit("resume", lambda tx: units.resume(tx, plugin, schedule_id))

    # ------------------------------------------------------------- plain writes
    async def put_planned(self, run: PlannedRun) -> None:
        await self._unit("put_planned", lambda tx: tx.put_planned(run))

    async def delete_planned(self, key: str) -> None:
        await self._unit("delete_planned", lambda tx: tx.delete_planned(key))

    async def put_init(self, record: InitRecord) -> None:
        await self._unit("put_init", lambda tx: tx.put_init(record))

    async def get_state(self, plugin: str) -> dict[str, Any]:
        return await self._unit("get_state", lambda tx: tx.get_state(plugin))


def _configure(conn: Conn) -> None:
    conn.execute("SET TIME ZONE 'UTC'")


def _utc(at: datetime) -> datetime:
    return at.astimezone(UTC)


def _cause(error: BaseException) -> str:
    """The server's or libpq's words, on one line, never a password (libpq does not echo it)."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
