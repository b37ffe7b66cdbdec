"""Joining a shared store: what a daemon opens when its config has ``store.url`` (ADR 0033, 0034).

The store (registered as a fresh node), its cluster (the node's lease and the
leadership) and, unless the daemon was given an inbox of its own, a ``LISTEN``
connection that wakes it on the other nodes' commits; and what closes them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs

from ductile.adapters.postgres.cluster import PgCluster, instance_name, new_node
from ductile.adapters.postgres.inbox import PgInbox
from ductile.adapters.postgres.store import PostgresStore
from ductile.domain.config import Config


@attrs.frozen(kw_only=True)
class Joined:
    store: PostgresStore
    cluster: PgCluster
    #: The wake-up listener, when one was asked for.
    inbox: PgInbox | None
    #: What the daemon runs when it closes, in order, before closing the store.
    closers: tuple[Callable[[], Awaitable[None]], ...]


async def join(config: Config, *, listen: bool) -> Joined:
    """Open the shared store of ``config`` as a new node; on failure nothing stays open."""
    url = config.store.url
    assert url is not None
    store = await PostgresStore.open(
        url,
        instance=instance_name(config.service.state_dir),
        node=new_node(),
        lease=config.store.lease,
        pool_size=config.service.max_workers + 4,
    )
    try:
        cluster = PgCluster(store, url, lease=config.store.lease)
        await cluster.join()
    except BaseException:
        await store.close()
        raise
    inbox = None
    closers: list[Callable[[], Awaitable[None]]] = []
    if listen:
        inbox = PgInbox(url)
        inbox.start()
        closers.append(inbox.close)
    closers.append(cluster.leave)
    return Joined(store=store, cluster=cluster, inbox=inbox, closers=tuple(closers))
