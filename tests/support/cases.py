"""The implementations the contract suites run against, each with the hooks its behaviours need.

A contract test is written once against a *case*: the port's implementation
plus the few moves a behaviour needs that the port itself does not offer
("put a plugin on disk", "let time pass", "make this plugin fail its trust
check"). Each implementation gets a case class here; the fixtures in
``tests/contracts/conftest.py`` build one per implementation.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import attrs

from ductile.adapters.plugin_dir import FilesystemCatalog
from ductile.domain.config import Config, PluginConfig, ServiceConfig
from ductile.domain.outcome import SpawnOutcome
from ductile.domain.plugin import Manifest
from ductile.fakes.catalog import DictCatalog
from ductile.fakes.clock import FakeClock
from ductile.ports.catalog import Catalog
from ductile.ports.clock import Clock
from ductile.ports.inbox import Inbox
from ductile.ports.spawner import Spawner, SpawnRequest
from ductile.ports.store import Store
from tests.support.plugins import plugin_folder, shell_plugin

T = TypeVar("T")


# --------------------------------------------------------------------------- store

StoreFactory = Callable[[], Awaitable[Store]]
StoreBody = Callable[[Store], Coroutine[Any, Any, None]]
StoreRunner = Callable[[StoreBody], None]


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


# --------------------------------------------------------------------------- spawner

#: The plugins the spawner contract uses, as a shell script for a real spawner.
#: The scripted spawner emulates each one in Python (see ``SCRIPTED_PLUGINS``).
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

SCRIPTED_PLUGINS: dict[str, Callable[[SpawnRequest], SpawnOutcome]] = {
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


# --------------------------------------------------------------------------- catalog


class CatalogCase:
    """A Catalog, and how to change the plugins it finds.

    Every plugin a case puts in place has version 1.0.0, protocol 1 and the
    entrypoint ``run``; it loads unless a hook says otherwise.
    """

    name: str
    catalog: Catalog
    #: What the config's ``plugins_dir`` says.
    plugins_dir: str

    def config(self, *plugins: PluginConfig) -> Config:
        return Config(
            service=ServiceConfig(state_dir="/var/lib/ductile"),
            plugins_dir=self.plugins_dir,
            plugins={p.name: p for p in plugins},
        )

    def add(
        self, name: str, *, commands: Iterable[str] = ("poll", "handle"), required: Iterable[str] = ()
    ) -> None:
        """Put a sound plugin in place: the next discovery loads it."""
        raise NotImplementedError

    def remove(self, name: str) -> None:
        """Take the plugin away."""
        raise NotImplementedError

    def fail_discovery(self, name: str) -> None:
        """Leave the plugin in place but failing a check at discovery."""
        raise NotImplementedError

    def fail_trust(self, name: str) -> None:
        """Make the loaded plugin fail the trust check before a spawn."""
        raise NotImplementedError

    def mend_trust(self, name: str) -> None:
        """Undo :meth:`fail_trust`."""
        raise NotImplementedError

    def directory(self, name: str) -> str:
        """Where the loaded plugin's directory is."""
        raise NotImplementedError

    def executable(self, name: str) -> str:
        """The loaded plugin's executable."""
        return f"{self.directory(name)}/run"


class DictCatalogCase(CatalogCase):
    """The dictionary fake: manifests in a dict, hooks that write its refusal tables."""

    def __init__(self) -> None:
        self.name = "dict"
        self.plugins_dir = "/srv/ductile/plugins"
        self.fake = DictCatalog()
        self.catalog = self.fake

    def add(
        self, name: str, *, commands: Iterable[str] = ("poll", "handle"), required: Iterable[str] = ()
    ) -> None:
        self.fake.add(
            Manifest(
                name=name,
                version="1.0.0",
                protocol=1,
                entrypoint="run",
                commands=frozenset(commands),
                required_keys=tuple(required),
            )
        )

    def remove(self, name: str) -> None:
        self.fake.remove(name)

    def fail_discovery(self, name: str) -> None:
        self.fake.refusals[name] = "entrypoint run is not executable"

    def fail_trust(self, name: str) -> None:
        self.fake.verify_reasons[name] = "entrypoint run is world-writable"

    def mend_trust(self, name: str) -> None:
        del self.fake.verify_reasons[name]

    def directory(self, name: str) -> str:
        return f"{self.plugins_dir}/{name}"


class FilesystemCatalogCase(CatalogCase):
    """The daemon's catalog on a real plugins directory; the hooks change files and modes."""

    SCRIPT = shell_plugin("""cat >/dev/null\necho '{"status": "ok"}'""")

    def __init__(self, root: Path) -> None:
        self.name = "filesystem"
        self.root = root / "plugins"
        self.root.mkdir(mode=0o755)
        self.root.chmod(0o755)
        self.plugins_dir = str(self.root)
        self.catalog = FilesystemCatalog()

    def add(
        self, name: str, *, commands: Iterable[str] = ("poll", "handle"), required: Iterable[str] = ()
    ) -> None:
        plugin_folder(self.root, name, self.SCRIPT, commands=commands, required=required)

    def remove(self, name: str) -> None:
        shutil.rmtree(self.root / name)

    def fail_discovery(self, name: str) -> None:
        (self.root / name / "run").chmod(0o644)

    def fail_trust(self, name: str) -> None:
        (self.root / name / "run").chmod(0o757)

    def mend_trust(self, name: str) -> None:
        (self.root / name / "run").chmod(0o755)

    def directory(self, name: str) -> str:
        return os.path.realpath(self.root / name)
