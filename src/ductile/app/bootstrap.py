"""Building and running a ductile instance: the embedding API.

``Ductile`` is what ``ductile start`` runs and what another Python
application embeds::

    async with Ductile("ductile.yaml") as d:      # lock, open store, recover, discover
        job_id = await d.enqueue("withings")
        await d.serve()                            # until d.stop()

Every port has a default (SQLite under ``service.state_dir``, real
subprocesses, the system clock) and every one can be replaced — that is how
tests and the simulation run the same engine. Nothing is built at import
time, and no signal handler is installed unless asked.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ductile.app.daemon import Service
from ductile.app.engine import Engine
from ductile.app.intake import Manual, Webhook
from ductile.domain.breaker import BreakerStatus
from ductile.domain.config import Config, Endpoint
from ductile.domain.errors import ConfigError
from ductile.domain.job import Command, SubmittedBy
from ductile.domain.schedule import PlannedRun
from ductile.log import Log
from ductile.ports.catalog import Catalog
from ductile.ports.clock import Clock
from ductile.ports.cluster import Cluster
from ductile.ports.inbox import Inbox
from ductile.ports.spawner import Spawner
from ductile.ports.store import Store

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from ductile.adapters.pidlock import InstanceLock

DB_NAME = "ductile.db"

_config_log = Log("config")
_reload_log = Log("reload")


def database_path(config: Config) -> Path:
    return Path(config.service.state_dir) / DB_NAME


def _advise(config: Config) -> None:
    """Log, at WARN, each setting that is valid but probably unintended (:meth:`Config.advisories`)."""
    for advice in config.advisories():
        _config_log.warning(f"config: {advice}")


def _default_spawner() -> Spawner:
    from ductile.adapters.spawner import SubprocessSpawner

    return SubprocessSpawner()


def _default_catalog() -> Catalog:
    from ductile.adapters.plugin_dir import FilesystemCatalog

    return FilesystemCatalog()


def _default_clock() -> Clock:
    from ductile.adapters.system_clock import SystemClock

    return SystemClock()


def _default_inbox() -> Inbox:
    from ductile.adapters.asyncio_inbox import AsyncioInbox

    return AsyncioInbox()


def restart_needed(old: Config, new: Config) -> list[str]:
    """Settings a reload cannot apply: the running process keeps the old value."""
    changes = []
    if old.service.state_dir != new.service.state_dir:
        changes.append("service.state_dir")
    if old.service.log_level != new.service.log_level:
        changes.append("service.log_level")
    old_listen = (old.webhooks.host, old.webhooks.port) if old.webhooks else None
    new_listen = (new.webhooks.host, new.webhooks.port) if new.webhooks else None
    if old_listen != new_listen:
        changes.append("webhooks.listen")
    return changes


class Ductile:
    def __init__(
        self,
        config: Config | str | os.PathLike[str],
        *,
        clock: Clock | None = None,
        store: Store | None = None,
        spawner: Spawner | None = None,
        inbox: Inbox | None = None,
        catalog: Catalog | None = None,
        draw: Callable[[], float] | None = None,
        new_id: Callable[[], str] | None = None,
        environ: Mapping[str, str] | None = None,
        lock: bool | None = None,
        listen: bool = True,
    ) -> None:
        """``lock`` defaults to True when ductile opens its own SQLite store.
        ``listen`` starts the webhook/healthz listener in :meth:`serve` when
        the config has a ``webhooks`` section (False: mount :attr:`asgi_app`
        in your own server instead)."""
        self._config_source = config
        self._clock = clock
        self._store = store
        self._spawner = spawner
        self._inbox = inbox
        self._catalog = catalog
        self._draw = draw
        self._new_id = new_id
        self._environ = dict(os.environ if environ is None else environ)
        self._lock_wanted = lock
        self._listen = listen
        self._owns_store = False
        self._lock: InstanceLock | None = None
        self._engine: Engine | None = None
        self._service: Service | None = None
        self._stop_requested = False
        self._asgi: ASGIApp | None = None
        self._closed = False
        #: A shared store's other parts, and what closes them (the listener, the node's row).
        self._cluster: Cluster | None = None
        self._closers: list[Callable[[], Awaitable[None]]] = []

    # ----------------------------------------------------------------- lifecycle
    def _load(self) -> Config:
        if isinstance(self._config_source, Config):
            return self._config_source
        from ductile.adapters.config import load_config

        return load_config(self._config_source, env=self._environ)

    @property
    def config_path(self) -> str | None:
        if isinstance(self._config_source, Config):
            return self._config_source.source
        return os.fspath(self._config_source)

    async def open(self) -> Ductile:
        config = self._load()
        if self._store is None and config.store.shared:
            self._store = await self._open_shared_store(config)
        elif self._store is None:
            self._store = await self._open_own_store(config)
        elif self._lock_wanted:
            self._take_lock(config)
        self._engine = Engine(
            config=config,
            store=self._store,
            spawner=self._spawner if self._spawner is not None else _default_spawner(),
            clock=self._clock if self._clock is not None else _default_clock(),
            inbox=self._inbox if self._inbox is not None else _default_inbox(),
            catalog=self._catalog or _default_catalog(),
            draw=self._draw,
            new_id=self._new_id,
            environ=self._environ,
            cluster=self._cluster,
        )
        try:
            await self._engine.start()
        except BaseException:
            await self.close()
            raise
        _advise(config)
        return self

    async def _open_own_store(self, config: Config) -> Store:
        """SQLite under ``service.state_dir``, behind the instance lock unless ``lock=False``."""
        from ductile.adapters.sqlite import SqliteStore

        if self._lock_wanted is not False:
            self._take_lock(config)
        try:
            store = await SqliteStore.open(database_path(config))
        except BaseException:
            self._release_lock()
            raise
        self._owns_store = True
        return store

    async def _open_shared_store(self, config: Config) -> Store:
        """PostgreSQL (``store.url``, ADR 0033), behind this instance's lock: this daemon joins
        the cluster as a new node, and listens for the others' commits (unless given an inbox)."""
        from ductile.adapters.postgres import require_driver

        require_driver()
        from ductile.adapters.postgres.cluster import PgCluster, instance_name, new_node
        from ductile.adapters.postgres.inbox import PgInbox
        from ductile.adapters.postgres.store import PostgresStore

        url = config.store.url
        assert url is not None
        if self._lock_wanted is not False:
            self._take_lock(config)
        try:
            store = await PostgresStore.open(
                url,
                instance=instance_name(config.service.state_dir),
                node=new_node(),
                lease=config.store.lease,
                pool_size=config.service.max_workers + 4,
            )
            cluster = PgCluster(store, url, lease=config.store.lease)
            await cluster.join()
        except BaseException:
            if "store" in locals():
                await store.close()
            self._release_lock()
            raise
        self._owns_store = True
        self._cluster = cluster
        if self._inbox is None:
            inbox = PgInbox(url)
            inbox.start()
            self._inbox = inbox
            self._closers.append(inbox.close)
        self._closers.append(cluster.leave)
        return store

    def _take_lock(self, config: Config) -> None:
        from ductile.adapters.pidlock import InstanceLock

        self._lock = InstanceLock(config.service.state_dir)
        self._lock.acquire()

    async def __aenter__(self) -> Ductile:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop serving (if serving), close the store we opened, release the lock. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._service is not None:
            self._service.stop()
        for closer in reversed(self._closers):
            await closer()
        if self._owns_store and self._store is not None:
            await self._store.close()
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("open the Ductile instance first (async with Ductile(...) as d)")
        return self._engine

    @property
    def config(self) -> Config:
        return self.engine.runtime.config

    # ----------------------------------------------------------------- serving
    async def serve(
        self,
        *,
        install_signal_handlers: bool = False,
        on_ready: Callable[[], None] | None = None,
        notify_systemd: bool = True,
    ) -> None:
        """Run the scheduler, the dispatcher and (if configured) the listener until :meth:`stop`.

        systemd is told about readiness, reloads, stops and liveness (``READY=1``,
        ``WATCHDOG=1``...) only when ``$NOTIFY_SOCKET`` is set in the environment
        this instance was given (``environ``, default ``os.environ``) — normally only
        under a ``Type=notify`` unit. ``notify_systemd=False`` keeps ductile silent
        even then: for an application that embeds ductile and speaks to systemd itself.
        """
        engine = self.engine
        http = None
        webhooks = engine.runtime.config.webhooks
        if self._listen and webhooks is not None:
            from ductile.adapters.http import HttpServer

            http = HttpServer(self.asgi_app, webhooks.host, webhooks.port)
        reload_source = self.reload if self.config_path is not None else None
        notifier = None
        if notify_systemd and self._environ.get("NOTIFY_SOCKET"):
            from ductile.adapters.systemd import Notifier

            notifier = Notifier(self._environ)
            if not notifier.enabled:  # an unsupported NOTIFY_SOCKET (logged by the notifier)
                notifier = None
        self._service = Service(engine, reload=reload_source, http=http, on_ready=on_ready, notifier=notifier)
        if self._stop_requested:  # stop() came before serve() got going: it still counts
            self._service.stop()
        if install_signal_handlers:
            self._service.install_signal_handlers()
        try:
            await self._service.run()
        finally:
            if install_signal_handlers:
                self._service.remove_signal_handlers()

    def stop(self) -> None:
        """Stop serving gracefully; safe to call more than once, from a signal handler too."""
        self._stop_requested = True
        if self._service is not None:
            self._service.stop()

    def request_reload(self) -> None:
        if self._service is not None:
            self._service.request_reload()

    async def reload(self, config: Config | None = None) -> None:
        """Switch to ``config``, or re-read the config file. An invalid file is
        logged and the running configuration kept, whole."""
        if config is None:
            try:
                config = self._load()
            except ConfigError as e:
                _reload_log.error(f"reload refused, keeping the running configuration: {e}")
                return
        for change in restart_needed(self.engine.runtime.config, config):
            _reload_log.warning(f"{change} changed: it applies at the next restart")
        await self.engine.reload(config)
        _advise(config)

    # ----------------------------------------------------------------- API
    async def enqueue(
        self,
        plugin: str,
        command: str = Command.POLL,
        *,
        payload: dict[str, Any] | None = None,
        event_type: str | None = None,
        dedupe_key: str | None = None,
    ) -> str:
        """Queue a job durably; returns its id (or the id of the job it duplicates).

        A ``handle`` job receives ``payload`` as the payload of an event of type
        ``event_type`` (default ``manual``) from source ``api``, with an event id of its own.
        Raises :class:`~ductile.app.intake.EnqueueRefusedError` when the plugin or
        command cannot run now.
        """
        submission = Manual(
            plugin=plugin,
            command=command,
            payload=payload,
            event_type=event_type,
            dedupe_key=dedupe_key,
            submitted_by=SubmittedBy.API,
        )
        return (await self.engine.submit(submission)).job_id

    async def due(self, start: datetime, end: datetime) -> list[PlannedRun]:
        """The schedule index: planned runs in ``[start, end)``."""
        return await self.engine.store.due(start, end)

    async def health(self) -> dict[str, Any]:
        """The /healthz figures (D20)."""
        engine = self.engine
        now = engine.clock.now()
        started = engine.started_at or now
        breakers = await engine.store.breakers()
        open_plugins = {b.plugin for b in breakers if b.status is not BreakerStatus.CLOSED}
        return {
            "status": "ok",
            "uptime_seconds": round((now - started).total_seconds(), 3),
            "queue_depth": await engine.store.queue_depth(),
            "plugins_loaded": len(engine.runtime.plugins),
            "plugins_circuit_open": len(open_plugins),
        }

    @property
    def asgi_app(self) -> ASGIApp:
        """The webhook + /healthz ASGI app, to mount in a host application."""
        if self._asgi is None:
            from ductile.adapters.http import WebhookDelivery, build_app

            engine = self.engine

            def endpoints() -> Sequence[Endpoint]:
                hooks = engine.runtime.config.webhooks
                return hooks.endpoints if hooks is not None else ()

            async def submit(delivery: WebhookDelivery) -> str:
                webhook = Webhook(
                    endpoint=delivery.endpoint,
                    payload=delivery.payload,
                    headers=delivery.headers,
                    dedupe_key=delivery.dedupe_key,
                )
                return (await engine.submit(webhook)).job_id

            self._asgi = build_app(endpoints=endpoints, submit=submit, health=self.health)
        return self._asgi
