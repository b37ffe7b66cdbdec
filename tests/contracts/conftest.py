"""Fixtures of the contract suites: one parameter per implementation of a port.

Every test in ``tests/contracts`` runs once per implementation. A real
adapter joins a suite by adding one parameter (and one branch) to the fixture
of its port here; the tests themselves never name an implementation.

Every implementation is imported directly: a renamed or missing module fails
the whole suite at once, it never silently skips half of it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import stat
from datetime import timedelta
from pathlib import Path

import pytest

from ductile.adapters.asyncio_inbox import AsyncioInbox
from ductile.adapters.spawner import SubprocessSpawner
from ductile.adapters.sqlite import SqliteStore
from ductile.adapters.system_clock import SystemClock
from ductile.fakes.clock import FakeClock
from ductile.fakes.inbox import FakeInbox
from ductile.fakes.indexed_store import IndexedMemoryStore
from ductile.fakes.memory_store import InMemoryStore
from ductile.fakes.spawner import ScriptedSpawner
from ductile.ports.spawner import Spawner
from ductile.ports.store import Store
from tests.support.cases import (
    PLUGIN_SCRIPTS,
    SCRIPTED_PLUGINS,
    CatalogCase,
    DictCatalogCase,
    FilesystemCatalogCase,
    SpawnerCase,
    StoreBody,
    StoreFactory,
    StoreRunner,
    TimeCase,
)
from tests.support.postgres import Cluster

# --------------------------------------------------------------------------- store


@pytest.fixture(params=["memory", "indexed", "sqlite", "postgres"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Makes a fresh, empty store each time it is awaited (inside the running loop). PostgreSQL:
    a database of its own in the session's throwaway cluster, one node with a long lease."""
    if request.param == "memory":

        async def make_memory() -> Store:
            return InMemoryStore()

        return make_memory

    if request.param == "indexed":

        async def make_indexed() -> Store:
            return IndexedMemoryStore()

        return make_indexed

    if request.param == "postgres":
        return postgres_factory(request.getfixturevalue("pg_cluster"), request)

    assert request.param == "sqlite"
    numbers = itertools.count()

    async def make_sqlite() -> Store:
        return await SqliteStore.open(tmp_path / f"ductile-{next(numbers)}.db")

    return make_sqlite


def postgres_factory(cluster: Cluster, request: pytest.FixtureRequest) -> StoreFactory:
    """Each store on a fresh database cloned from the template (dropped at the test's end)."""
    from ductile.adapters.postgres.store import Node, PostgresStore

    names: list[str] = []
    request.addfinalizer(lambda: [cluster.drop_database(n) for n in names])

    async def make_postgres() -> Store:
        name = cluster.new_database()
        names.append(name)
        node = Node(id=f"contract-{len(names)}", host="contract", pid=os.getpid())
        return await PostgresStore.open(
            cluster.url(name), instance="contract:/state", node=node, lease=timedelta(days=1)
        )

    return make_postgres


@pytest.fixture
def with_store(store_factory: StoreFactory) -> StoreRunner:
    """Run ``body(store)`` in a fresh event loop on a fresh store, closed afterwards."""

    def run(body: StoreBody) -> None:
        async def main() -> None:
            store = await store_factory()
            try:
                await body(store)
            finally:
                await store.close()

        asyncio.run(main())

    return run


# --------------------------------------------------------------------------- time: clock and inbox


@pytest.fixture(params=["fake", "system"])
def time_case(request: pytest.FixtureRequest) -> TimeCase:
    """FakeClock + FakeInbox, or SystemClock + AsyncioInbox with real, small timeouts."""
    if request.param == "fake":
        clock = FakeClock()
        return TimeCase("fake", clock, FakeInbox(clock), short=0.05, long=3600.0, fake=clock)
    assert request.param == "system"
    return TimeCase("system", SystemClock(), AsyncioInbox(), short=0.05, long=5.0)


# --------------------------------------------------------------------------- spawner


@pytest.fixture(params=["scripted", "subprocess"])
def spawner_case(request: pytest.FixtureRequest, tmp_path: Path) -> SpawnerCase:
    plugin_dir = tmp_path / "plugins"
    if request.param == "scripted":
        scripts = {str(plugin_dir / name): script for name, script in SCRIPTED_PLUGINS.items()}
        return SpawnerCase("scripted", ScriptedSpawner(scripts, clock=FakeClock()), str(plugin_dir))
    assert request.param == "subprocess"
    plugin_dir.mkdir()
    for name, text in PLUGIN_SCRIPTS.items():
        path = plugin_dir / name
        path.write_text(text)
        path.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    spawner: Spawner = SubprocessSpawner()
    return SpawnerCase("subprocess", spawner, str(plugin_dir))


# --------------------------------------------------------------------------- catalog


@pytest.fixture(params=["dict", "filesystem"])
def catalog_case(request: pytest.FixtureRequest, tmp_path: Path) -> CatalogCase:
    """The dictionary fake, or the filesystem's catalog on an empty plugins directory in ``tmp_path``."""
    if request.param == "dict":
        return DictCatalogCase()
    assert request.param == "filesystem"
    return FilesystemCatalogCase(tmp_path)
