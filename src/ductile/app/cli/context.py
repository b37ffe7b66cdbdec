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
    from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
    from datetime import datetime, tzinfo
    from pathlib import Path
    from typing import IO, Any, TypeAlias

    from ductile.app.runtime import Runtime
    from ductile.domain.config import Config
    from ductile.domain.plugin import Discovery
    from ductile.ports.catalog import Catalog
    from ductile.ports.spawner import Spawner
    from ductile.ports.store import Store

    OpenStore: TypeAlias = Callable[[Path, bool], Awaitable[Store | None]]
    OpenShared: TypeAlias = Callable[[Config], Awaitable[Store]]
    #: ``preflight([(executable, cwd), ...], env=...)``: why each plugin would fail to start, or None.
    Preflight: TypeAlias = Callable[..., list[str | None]]

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
    """The real store: None when it does not exist and ``create`` is False. The state
    directory is checked (and made, with ``create``) as the daemon does (ADR 0040)."""
    from ductile.adapters.statedir import DB_FILES, prepare

    if not prepare(str(path.parent), DB_FILES, create=create):
        return None
    if not create and not path.exists():  # noqa: ASYNC240 - one stat of a local file
        return None
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


def _real_daemon_report(state_dir: str) -> dict[str, Any] | None:
    from ductile.adapters.status_file import read_status

    return read_status(state_dir)


def _real_store_check(path: Path) -> str | None:
    from ductile.adapters.sqlite.selfcheck import refusal

    return refusal(path)


def _real_spawner() -> Spawner:
    from ductile.adapters.spawner import SubprocessSpawner

    return SubprocessSpawner()


def _real_catalog() -> Catalog:
    from ductile.adapters.plugin_dir import FilesystemCatalog

    return FilesystemCatalog()


def _real_preflight(plugins: Sequence[tuple[str, str]], *, env: Mapping[str, str]) -> list[str | None]:
    from ductile.adapters.spawner import preflight_all

    return preflight_all(plugins, env=env)


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
        daemon_report: Callable[[str], dict[str, Any] | None] | None = None,
        send_signal: Callable[[int, int], None] | None = None,
        tz: tzinfo | None = None,
        new_id: Callable[[], str] | None = None,
        preflight: Preflight | None = None,
        store_check: Callable[[Path], str | None] | None = None,
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
        #: The running daemon's status file (``adapters.status_file``), None when there is none.
        self.daemon_report = daemon_report or _real_daemon_report
        self.send_signal = send_signal or os.kill
        #: Zone of displayed times; None is the machine's local zone.
        self.tz = tz
        self.new_id = new_id or _uuid
        self.preflight: Preflight = preflight or _real_preflight
        #: Set by :func:`read_config` when schedules are shown in the daemon's zone, not this shell's.
        self.zone_note: str | None = None
        #: Why the database would refuse a write now (full disk, lock held); None: it would not.
        self.store_check = store_check or _real_store_check

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


def read_config(ctx: Context, args: argparse.Namespace, *, fallback: bool = False) -> Config:
    """The config named by ``--config`` / ``$DUCTILE_CONFIG`` / ``./ductile.yaml``, its
    schedules in the daemon's zone (:func:`_in_daemon_zone`).

    ``fallback`` (the read commands): when the file does not load, the last good config
    the daemon recorded in its state directory, with a warning; the error otherwise."""
    from ductile.adapters.config import load_config, resolve_config_path
    from ductile.domain.errors import ConfigError

    path = resolve_config_path(args.config, ctx.env)
    try:
        config = load_config(path, env=ctx.env)
    except ConfigError as broken:
        if not fallback:
            raise
        return _last_good(ctx, path, broken)
    return _in_daemon_zone(ctx, path, config)


def _in_daemon_zone(ctx: Context, path: Path, config: Config) -> Config:
    """``config`` with its schedules without a ``timezone`` in the zone the daemon recorded
    (its ``TZ`` may not be this shell's): the command line then plans and shows the runs the
    daemon makes. ``ctx.zone_note`` says so when the zones differ."""
    from ductile.adapters.config import load_config, machine_timezone
    from ductile.adapters.config.machine_tz import zone_by_key
    from ductile.adapters.daemon_record import read_record

    record = read_record(config.service.state_dir)
    if record is None:
        return config
    own = machine_timezone()
    own_key = str(getattr(own, "key", own))
    zone = zone_by_key(record.zone)
    if zone is None or record.zone == own_key:
        return config
    ctx.zone_note = (
        f"schedules without a timezone are planned in the daemon's zone, {record.zone} "
        f"(this shell's is {own_key})"
    )
    return load_config(path, env=ctx.env, local_tz=zone)


def _last_good(ctx: Context, path: Path, broken: Exception) -> Config:
    """The last good config the daemon recorded for ``path``; raises ``broken`` when there is none."""
    from ductile.adapters.config import machine_timezone, parse_config
    from ductile.adapters.config.machine_tz import zone_by_key
    from ductile.adapters.daemon_record import guess_state_dir, read_last_good, read_record
    from ductile.domain.errors import ConfigError

    record = read_record(guess_state_dir(path))
    text = read_last_good(record) if record is not None and record.config == str(path) else None
    if record is None or text is None:
        raise broken
    try:
        config = parse_config(
            text,
            source=str(path),
            base_dir=str(path.parent),
            env=ctx.env,
            local_tz=zone_by_key(record.zone) or machine_timezone(),
        )
    except ConfigError:
        raise broken from None
    first = str(broken).splitlines()[0] if str(broken) else type(broken).__name__
    ctx.note(
        f"warning: {path} does not load ({first}); showing the config the daemon last loaded "
        f"({record.loaded_at}, kept in {record.last_good}). Fix the file, then `ductile config check`."
    )
    return config


def db_path(config: Config) -> Path:
    """Where the daemon keeps its database for this config."""
    from ductile.adapters.statedir import database_path

    return database_path(config.service.state_dir)


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


async def start_problems(ctx: Context, discovery: Discovery) -> dict[str, str]:
    """The loaded plugins that would fail to start (no ``#!`` line, no interpreter, a CRLF
    ``#!`` line, a Python import that fails — ``ductile.plugin`` included), each with why:
    what their first run would otherwise find out (``config check``, ``plugins``, ``status``).
    The checks run in a thread, each distinct interpreter at once (a Python plugin's costs an
    interpreter start: :func:`~ductile.adapters.spawner.preflight_all`)."""
    import asyncio

    from ductile.app.spawn import plugin_env

    names = sorted(discovery.plugins)
    plugins = [(discovery.plugins[n].executable, discovery.plugins[n].directory) for n in names]
    found = await asyncio.to_thread(ctx.preflight, plugins, env=plugin_env(ctx.env))
    return {name: problem for name, problem in zip(names, found, strict=True) if problem is not None}


def plugin_names(config: Config) -> set[str]:
    """Every plugin name the operator may mean: the config's and the folders in its plugin roots."""
    names = set(config.plugins)
    for root in config.roots:
        try:
            with os.scandir(root) as listing:
                names |= {e.name for e in listing if not e.name.startswith(".") and e.is_dir()}
        except OSError:
            pass
    return names


def unknown_plugin(config: Config, name: str, *, also: Iterable[str] = ()) -> str | None:
    """None when ``name`` is a plugin of this config, its plugins_dir or ``also`` (say, names
    with history in the store); else the message, with a "did you mean"."""
    from ductile.domain.suggest import did_you_mean

    known = plugin_names(config) | set(also)
    if name in known:
        return None
    where = " or ".join(config.roots)
    return f"no plugin named '{name}' in the config or in {where}{did_you_mean(name, known)}"


def running_pid(ctx: Context, config: Config) -> int | None:
    """The pid of the daemon running for this config's state directory, if any."""
    return ctx.daemon_pid(config.service.state_dir)
