"""Cluster: how a daemon on a shared store lives among the others (ADR 0034).

Only a store shared by several daemons (PostgreSQL) has one; a daemon on
SQLite or on the in-memory fakes is alone and has none. The store's rows are
the only shared state: each daemon is a **node** with a lease on the
database's clock, renewed by :meth:`Cluster.beat` on a connection of its own;
one node at a time **leads** (a lease row) and runs the singleton duties
(the scheduler's tick, retention, schedule sync, peer recovery). None of
those needs the leader to be alone for correctness: a planned run fires by a
compare-and-set, recovery is fenced, retention is idempotent. A node that
cannot renew its lease in time, or finds it gone, is **fenced**: it stops
claiming, kills its plugins and rejoins under a new id (:meth:`Cluster.rejoin`);
an expired lease is never revived.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Protocol

import attrs

from ductile.domain.lifecycle import Alerts
from ductile.domain.settle import Settlement


@attrs.frozen(kw_only=True)
class Beat:
    """What one renewal found."""

    #: The lease was renewed (False: it had run out, or peers removed the node: fenced).
    alive: bool
    #: This node holds the leadership lease now.
    leading: bool = False
    #: The leader's config fingerprint equals this node's (or nobody leads): work may be shared.
    agreed: bool = True
    #: The id of the leading node, if any (for the logs and ``ductile status``).
    leader: str | None = None


class Cluster(Protocol):
    @property
    def node(self) -> str:
        """This daemon's node id (fresh at every start and every rejoin, never reused)."""
        ...

    async def beat(self, config_fp: str) -> Beat:
        """Renew this node's lease (only while it is still valid) and the leadership (taking it
        when it is free or has run out), registering ``config_fp`` as this node's config."""
        ...

    async def rejoin(self, config_fp: str) -> str:
        """Register under a new node id (the old one is dead to everyone); the new id."""
        ...

    async def sweep(self, now: datetime, *, alerts: Alerts | None = None) -> list[Settlement]:
        """Peer recovery: settle as interrupted the running jobs of nodes that are not live,
        once their deadline and the margin have passed (their lifecycle events routed by ``alerts``)."""
        ...

    async def strays(
        self, now: datetime, *, keep: Collection[str], alerts: Alerts | None = None
    ) -> list[Settlement]:
        """Settle as interrupted this node's own claims that it does not hold (``keep``: the jobs
        it runs): claims whose commit it never heard of, the connection broken while committing."""
        ...

    async def leave(self) -> None:
        """A clean stop: give up the leadership and the node's row (peers elect at once)."""
        ...
