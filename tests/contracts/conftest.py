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
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest

from ductile.adapters.asyncio_inbox import AsyncioInbox
from ductile.adapters.spawner import SubprocessSpawner
from ductile.adapters.sqlite import SqliteStore
from ductile.adapters.system_clock import SystemClock
from ductile.domain.outcome import SpawnOutcome
from ductile.fakes.clock import FakeClock
from ductile.fakes.inbox import FakeInbox
from ductile.fakes.indexed_store import IndexedMemoryStore
from ductile.fakes.memory_store import InMemoryStore
from ductile.fakes.spawner import ScriptedSpawner
from ductile.ports.clock import Clock
from ductile.ports.inbox import Inbox
from ductile.ports.spawner import Spawner, SpawnRequest
from ductile.ports.store import Store
from tests.support.cases import CatalogCase, DictCatalogCase, FilesystemCatalogCase

T = TypeVar("T")

# --------------------------------------------------------------------------- store

StoreFactory = Callable[[], Awaitable[Store]]
StoreBody = Callable[[Store], Coroutine[Any, Any, None]]
StoreRunner = Callable[[StoreBody], None]


@pytest.fixture(params=["memory", "indexed", "sqlite"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Makes a fresh, empty store each time it is awaited (inside the running loop)."""
    if request.param == "memory":

        async def make_memory() -> Store:
            return InMemoryStore()

        return make_memory

    if request.param == "indexed":

        async def make_indexed() -> Store:
            return IndexedMemoryStore()

        return make_indexed

    assert request.param == "sqlite"
    numbers = itertools.count()

    async def make_sqlite() -> Store:
        return await SqliteStore.open(tmp_path / f"ductile-{next(numbers)}.db")

    return make_sqlite


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


@attrs.define
class TimeCase:
    """A clock (and an inbox) with a way to let time pass that suits it.

    A fake clock moves only when told: :meth:`drive` jumps it from wake-up to
    wake-up while the awaited coroutine is blocked. The system clock moves
    by itself: :meth:`drive` just awaits, under a real-time bound.
    """

    name: str
    clock: Clock
    inbox: Inbox
    #: A timeout that is expected to expire (cheap on both kinds of clock).
    short: float
    #: A timeout that is expected to be cut short by a notification.
    long: float
    fake: FakeClock | None = None
    _started: float = attrs.field(init=False, factory=time.monotonic)
    _fake_start: datetime | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        """Start measuring :meth:`elapsed` from now."""
        self._started = time.monotonic()
        self._fake_start = self.fake.now() if self.fake is not None else None

    def elapsed(self) -> float:
        """Seconds of this clock's time since :meth:`restart`."""
        if self.fake is not None:
            assert self._fake_start is not None
            return (self.fake.now() - self._fake_start).total_seconds()
        return time.monotonic() - self._started

    async def let_run(self) -> None:
        """Let other tasks run until they block, without letting (fake) time pass."""
        if self.fake is not None:
            await self.fake.settle()
        else:
            for _ in range(20):
                await asyncio.sleep(0)

    async def drive(self, awaitable: Awaitable[T], *, real_limit: float = 5.0) -> T:
        """Await ``awaitable``, letting this clock's time pass as it needs to."""
        task = asyncio.ensure_future(awaitable)
        if self.fake is None:
            return await asyncio.wait_for(task, timeout=real_limit)
        deadline = time.monotonic() + real_limit
        try:
            while True:
                await self.fake.settle()
                if task.done():
                    return task.result()
                if time.monotonic() > deadline:
                    raise AssertionError(f"still blocked after {real_limit} s of real time")
                if not self.fake.jump():
                    raise AssertionError(
                        "the awaited coroutine is blocked and nothing sleeps on the fake clock: "
                        "it would wait forever"
                    )
        finally:
            task.cancel()


@pytest.fixture(params=["fake", "system"])
def time_case(request: pytest.FixtureRequest) -> TimeCase:
    """FakeClock + FakeInbox, or SystemClock + AsyncioInbox with real, small timeouts."""
    if request.param == "fake":
        clock = FakeClock()
        return TimeCase("fake", clock, FakeInbox(clock), short=0.05, long=3600.0, fake=clock)
    assert request.param == "system"
    return TimeCase("system", SystemClock(), AsyncioInbox(), short=0.05, long=5.0)


# --------------------------------------------------------------------------- spawner

#: The plugins the spawner contract uses, as a shell script for a real spawner.
#: The scripted spawner emulates each one in Python (see ``_SCRIPTS``).
PLUGIN_SCRIPTS: dict[str, str] = {
    # answers ok
    "ok": "#!/bin/sh\nprintf '%s' '{\"status\": \"ok\"}'\n",
    # says why, then exits 3
    "exit3": "#!/bin/sh\nprintf '%s' 'broken'\nexit 3\n",
    # echoes its request back
    "echo": "#!/bin/sh\nexec cat\n",
    # runs far longer than any timeout the suite gives it
    "slow": "#!/bin/sh\nexec sleep 30\n",
}
SLOW_SECONDS = 30.0

_SCRIPTS: dict[str, Callable[[SpawnRequest], SpawnOutcome]] = {
    "ok": lambda r: SpawnOutcome(exit_code=0, stdout=b'{"status": "ok"}', duration=0.01),
    "exit3": lambda r: SpawnOutcome(exit_code=3, stdout=b"broken", duration=0.01),
    "echo": lambda r: SpawnOutcome(exit_code=0, stdout=r.stdin, duration=0.01),
    "slow": lambda r: SpawnOutcome(exit_code=0, duration=SLOW_SECONDS),
}


@attrs.frozen
class SpawnerCase:
    name: str
    spawner: Spawner
    #: Where the plugins live (a real directory for a real spawner).
    plugin_dir: str

    def request(self, plugin: str, *, stdin: bytes = b"{}", timeout: float = 10.0) -> SpawnRequest:
        return SpawnRequest(
            executable=os.path.join(self.plugin_dir, plugin),
            cwd=self.plugin_dir,
            stdin=stdin,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            timeout=timeout,
            grace=0.5,
        )


@pytest.fixture(params=["scripted", "subprocess"])
def spawner_case(request: pytest.FixtureRequest, tmp_path: Path) -> SpawnerCase:
    plugin_dir = tmp_path / "plugins"
    if request.param == "scripted":
        scripts = {str(plugin_dir / name): script for name, script in _SCRIPTS.items()}
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
