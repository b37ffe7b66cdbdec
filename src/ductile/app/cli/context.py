"""What a verb touches outside its arguments, and the steps every verb shares.

:class:`Context` holds the streams, the clock, the store opener, the spawner,
the catalog and the daemon probe; tests replace parts of it. The shared steps
read the config named on the command line, open the store read-only (never
creating it), and survey the plugins as the daemon would see them. The exit
codes and :class:`UsageError` live here too: every verb module imports them.

Imported at start-up (``ductile --help``): only the standard library's os and
sys at import time; everything else inside the function that needs it.
"""

from __future__ import annotations

import os
import sys

#: ``typing`` alone costs ~7 ms to import; the type checkers treat this name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable, Mapping
    from datetime import datetime, tzinfo
    from pathlib import Path
    from typing import IO, Any, TypeAlias

    from ductile.app.runtime import Runtime
    from ductile.domain.config import Config
    from ductile.ports.catalog import Catalog
    from ductile.ports.spawner import Spawner
    from ductile.ports.store import Store

    OpenStore: TypeAlias = Callable[[Path, bool], Awaitable[Store | None]]
    OpenShared: TypeAlias = Callable[[Config], Awaitable[Store]]

PROG = "ductile"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: "No limit" for the store's list queries.
ALL_JOBS = 10_000_000


class UsageError(Exception):
    """A command line that cannot be honoured as written (exit 2)."""


async def _open_sqlite(path: Path, create: bool) -> Store | None:
    """The real store: None when it does not exist and ``create`` is False."""
    if not create and not path.exists():  # noqa: ASYNC240 - one stat of a local file
        return None
    if create:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    from ductile.adapters.sqlite import SqliteStore

    return await SqliteStore.open(path)


async def _open_postgres(config: Config) -> Store:
    """A shared store (``store.url``): it always exists; this command is no node of the cluster."""
    from ductile.adapters.postgres import require_driver

    require_driver()
    from ductile.adapters.postgres.cluster import instance_name
    from ductile.adapters.postgres.store import PostgresStore

    assert config.store.url is not None
    return await PostgresStore.open(
        config.store.url, instance=instance_name(config.service.state_dir), pool_size=2
    )


def _real_daemon_pid(state_dir: str) -> int | None:
    from ductile.adapters.pidlock import running_daemon_pid

    return running_daemon_pid(state_dir)


def _real_spawner() -> Spawner:
    from ductile.adapters.spawner import SubprocessSpawner

    return SubprocessSpawner()


def _real_catalog() -> Catalog:
    from ductile.adapters.plugin_dir import FilesystemCatalog

    return FilesystemCatalog()


async def _real_sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def _real_now() -> datetime:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _real_monotonic() -> float:
    import time

    return time.monotonic()


class Context:
    """Everything a verb touches outside its arguments; tests replace parts of it."""

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        out: IO[str] | None = None,
        err: IO[str] | None = None,
        now: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        open_store: OpenStore | None = None,
        open_shared: OpenShared | None = None,
        spawner: Callable[[], Spawner] | None = None,
        catalog: Callable[[], Catalog] | None = None,
        daemon_pid: Callable[[str], int | None] | None = None,
        send_signal: Callable[[int, int], None] | None = None,
        tz: tzinfo | None = None,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.out: IO[str] = out if out is not None else sys.stdout
        self.err: IO[str] = err if err is not None else sys.stderr
        self.now = now or _real_now
        self.monotonic = monotonic or _real_monotonic
        self.sleep = sleep or _real_sleep
        self.open_store: OpenStore = open_store or _open_sqlite
        self.open_shared: OpenShared = open_shared or _open_postgres
        self.spawner = spawner or _real_spawner
        self.catalog = catalog or _real_catalog
        self.daemon_pid = daemon_pid or _real_daemon_pid
        self.send_signal = send_signal or os.kill
        #: Zone of displayed times; None is the machine's local zone.
        self.tz = tz
        self.new_id = new_id or _uuid

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def note(self, text: str) -> None:
        self.err.write(f"{PROG}: {text}\n")

    def fail(self, text: str) -> int:
        self.note(text)
        return EXIT_FAILURE

    def json(self, doc: Any) -> None:
        import json

        self.out.write(json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def _uuid() -> str:
    import uuid

    return str(uuid.uuid4())


# =========================================================================== shared steps


def read_config(ctx: Context, args: argparse.Namespace) -> Config:
    """The config named by ``--config`` / ``$DUCTILE_CONFIG`` / ``./ductile.yaml``."""
    from ductile.adapters.config import load_config, resolve_config_path

    path = resolve_config_path(args.config, ctx.env)
    return load_config(path, env=ctx.env)


def db_path(config: Config) -> Path:
    """Where the daemon keeps its database for this config."""
    from ductile.app.bootstrap import database_path

    return database_path(config)


async def open_store_of(ctx: Context, config: Config, *, create: bool) -> Store | None:
    """The config's store: SQLite in ``state_dir`` (None when it does not exist and ``create``
    is False), or the shared PostgreSQL of ``store.url``."""
    if config.store.shared:
        return await ctx.open_shared(config)
    return await ctx.open_store(db_path(config), create)


def store_location(config: Config) -> str:
    """Where the config's store is, for people: the SQLite file, or the URL without its password."""
    if config.store.url is not None:
        from ductile.adapters.postgres.schema import redact

        return redact(config.store.url)
    return str(db_path(config))


async def read_store(ctx: Context, config: Config) -> Store | None:
    """The store if it exists (never created); a note on stderr when it does not."""
    store = await open_store_of(ctx, config, create=False)
    if store is None:
        ctx.note(f"no database yet at {db_path(config)} (ductile has not run here)")
    return store


async def survey(ctx: Context, config: Config, store: Store | None) -> tuple[Runtime, Catalog, set[str]]:
    """Discovery plus what the store knows of ``init``: the runtime the daemon would
    have with this config, the catalog (for the trust check), and the plugins whose
    ``init`` has not run for their current manifest and config ("init pending")."""
    from ductile.app.runtime import InitState, Runtime

    catalog = ctx.catalog()
    discovery = catalog.discover(config)
    provisional = Runtime(config=config, discovery=discovery)
    unhealthy: dict[str, str] = {}
    pending: set[str] = set()
    for name, plugin in sorted(discovery.plugins.items()):
        if not plugin.supports("init"):
            continue  # no init record to read
        record = await store.get_init(name) if store is not None else None
        status = provisional.init_status(name, record)
        if status.state is InitState.PENDING:
            pending.add(name)
        elif status.state is InitState.FAILED and status.reason is not None:
            unhealthy[name] = status.reason
    return Runtime(config=config, discovery=discovery, unhealthy=unhealthy), catalog, pending


def running_pid(ctx: Context, config: Config) -> int | None:
    """The pid of the daemon running for this config's state directory, if any."""
    return ctx.daemon_pid(config.service.state_dir)
