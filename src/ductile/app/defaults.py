"""The real adapters a :class:`~ductile.app.bootstrap.Ductile` uses for each port it is not given.

Each is imported when first needed: embedding ductile with fakes never loads them.
"""

from __future__ import annotations

from ductile.ports.catalog import Catalog
from ductile.ports.clock import Clock
from ductile.ports.inbox import Inbox
from ductile.ports.spawner import Spawner


def spawner() -> Spawner:
    from ductile.adapters.spawner import SubprocessSpawner

    return SubprocessSpawner()


def catalog() -> Catalog:
    from ductile.adapters.plugin_dir import FilesystemCatalog

    return FilesystemCatalog()


def clock() -> Clock:
    from ductile.adapters.system_clock import SystemClock

    return SystemClock()


def inbox() -> Inbox:
    from ductile.adapters.asyncio_inbox import AsyncioInbox

    return AsyncioInbox()
