"""PgCluster: nodes, leases and leadership as rows of the shared database (ADR 0034).

The :class:`~ductile.ports.cluster.Cluster` port on PostgreSQL. Every daemon
is a row of ``nodes`` with a lease on the **database's** clock (host clocks
never decide who is alive), renewed by :meth:`PgCluster.beat` on a connection
of its own (a pool that is busy or exhausted can never starve the renewal)
with TCP keepalives on (a half-open connection is noticed). The renewal
matches the node's own id and only a lease still valid: an expired lease is
never revived, so a node that was frozen past its lease learns it is dead and
rejoins under a fresh id. Leadership is one row, ``leadership.singletons``,
taken when free or run out and renewed by its holder in the same beat;
renewal is keyed by the holder's node id.

At join, the rows of this *instance*'s earlier nodes are deleted: the
instance lock (the flock in ``state_dir``) proves them dead, and deleting
never hides their jobs (peer recovery selects by "claimer not live").
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from ductile.adapters.postgres.errors import StoreError
from ductile.adapters.postgres.store import Node, PostgresStore
from ductile.domain.lifecycle import Alerts
from ductile.domain.settle import Settlement
from ductile.log import Log
from ductile.ports.cluster import Beat

_log = Log("cluster")

#: The one leadership row (its lease is the node lease's length).
LEADERSHIP = "singletons"
#: A claim of this node that it does not hold is a stray once it is this old (a claim just
#: committed is held within milliseconds of its return).
STRAY_AGE = timedelta(seconds=5)
#: A node's clock this far from the database's is logged at WARN (FIFO across hosts leans on NTP).
SKEW_WARNING = timedelta(seconds=1)

_RENEW = (
    "UPDATE nodes SET lease_until = now() + %(lease)s, config_fp = %(fp)s "
    "WHERE id = %(me)s AND lease_until >= now() RETURNING 1"
)
_ELECT = (
    "INSERT INTO leadership AS l (name, node_id, elected_at, expires_at) "
    "VALUES (%(name)s, %(me)s, now(), now() + %(lease)s) "
    "ON CONFLICT (name) DO UPDATE SET node_id = excluded.node_id, "
    "elected_at = CASE WHEN l.node_id = excluded.node_id THEN l.elected_at ELSE now() END, "
    "expires_at = excluded.expires_at "
    "WHERE l.node_id = excluded.node_id OR l.expires_at < now() RETURNING node_id"
)
_LEADER = (
    "SELECT l.node_id, n.config_fp FROM leadership AS l LEFT JOIN nodes AS n ON n.id = l.node_id "
    "WHERE l.name = %s AND l.expires_at >= now()"
)
_REGISTER = (
    "INSERT INTO nodes (id, instance, host, pid, config_fp, lease_until) "
    "VALUES (%(id)s, %(instance)s, %(host)s, %(pid)s, %(fp)s, now() + %(lease)s)"
)
_FORGET_EARLIER = "DELETE FROM nodes WHERE instance = %s AND id <> %s"


def instance_name(state_dir: str) -> str:
    """This host's instance of a state directory: what its flock guards (``host:state_dir``)."""
    return f"{socket.gethostname()}:{os.path.abspath(state_dir)}"


def new_node(config_fp: str = "") -> Node:
    """A node id for this process: the host's name and a fresh random part, never reused."""
    host = socket.gethostname()
    return Node(id=f"{host}-{uuid.uuid4().hex[:10]}", host=host, pid=os.getpid(), config_fp=config_fp)


class PgCluster:
    """This daemon among the others, through rows of the store's database."""

    def __init__(
        self, store: PostgresStore, url: str, *, lease: timedelta, connect_timeout: float = 5.0
    ) -> None:
        self._store = store
        self._url = url
        self._lease = lease
        self._timeout = connect_timeout
        self._conn: psycopg.AsyncConnection[Any] | None = None

    @property
    def node(self) -> str:
        node = self._store.node
        assert node is not None, "a cluster's store claims for a node"
        return node.id

    async def join(self) -> None:
        """At start (the store registered this node): forget this instance's earlier nodes, and
        say so when this host's clock and the database's disagree."""
        conn = await self._connection()
        await conn.execute(_FORGET_EARLIER, (self._store.instance, self.node))
        row = await (await conn.execute("SELECT now()")).fetchone()
        if row is not None:
            skew = datetime.now(UTC) - row[0]
            if abs(skew) > SKEW_WARNING:
                _log.warning(
                    f"this host's clock is {skew.total_seconds():+.1f} s off the database's: FIFO across "
                    "hosts follows each host's clock (run NTP); leases and deadlines follow the database's"
                )
        _log.info("joined the cluster", node=self.node, instance=self._store.instance)

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
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
            except psycopg.OperationalError as e:
                raise StoreError(f"{self._store.where}: the cluster's connection failed: {e}") from e
        return self._conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def beat(self, config_fp: str) -> Beat:
        try:
            conn = await self._connection()
            params = {"me": self.node, "lease": self._lease, "fp": config_fp, "name": LEADERSHIP}
            renewed = await (await conn.execute(_RENEW, params)).fetchone()
            if renewed is None:
                return Beat(alive=False)
            elected = await (await conn.execute(_ELECT, params)).fetchone()
            leader = await (await conn.execute(_LEADER, (LEADERSHIP,))).fetchone()
        except (psycopg.Error, OSError):
            await self._drop()  # a fresh connection at the next beat
            raise
        leading = elected is not None and elected[0] == self.node
        leader_id = None if leader is None else str(leader[0])
        agreed = leader is None or leader[1] is None or leader[1] == config_fp
        return Beat(alive=True, leading=leading, agreed=agreed, leader=leader_id)

    async def rejoin(self, config_fp: str) -> str:
        node = new_node(config_fp)
        await self._store.register(node, self._lease)
        with contextlib.suppress(psycopg.Error, OSError, StoreError):
            conn = await self._connection()
            await conn.execute(_FORGET_EARLIER, (self._store.instance, node.id))
        return node.id

    async def sweep(self, now: datetime, *, alerts: Alerts | None = None) -> list[Settlement]:
        settlements = await self._store.recover_peers(now, alerts=alerts)
        # Bookkeeping only: peer recovery selects by "claimer not live", never by these rows.
        with contextlib.suppress(psycopg.Error, OSError, StoreError):
            conn = await self._connection()
            await conn.execute("DELETE FROM nodes WHERE lease_until < now() - interval '1 hour'")
        return settlements

    async def strays(
        self, now: datetime, *, keep: Collection[str], alerts: Alerts | None = None
    ) -> list[Settlement]:
        return await self._store.recover_strays(now, keep=keep, before=now - STRAY_AGE, alerts=alerts)

    async def leave(self) -> None:
        with contextlib.suppress(psycopg.Error, OSError, StoreError):
            conn = await self._connection()
            await conn.execute(
                "DELETE FROM leadership WHERE name = %s AND node_id = %s", (LEADERSHIP, self.node)
            )
            await conn.execute("DELETE FROM nodes WHERE id = %s", (self.node,))
        await self._drop()

    async def close(self) -> None:
        await self._drop()
