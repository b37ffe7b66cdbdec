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

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ductile.app import defaults
from ductile.app.daemon import Service
from ductile.app.engine import Engine
from ductile.app.feed import Feed
from ductile.app.intake import Manual, Webhook
from ductile.app.lockwatch import watch_lock
from ductile.app.operations import health_doc, reload_doc, restart_needed
from ductile.domain.activity import Kind
from ductile.domain.config import Config, Endpoint
from ductile.domain.errors import ConfigError, UnknownJobError
from ductile.domain.job import Command, Job, SubmittedBy
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
    from ductile.app.api import Metrics
    from ductile.app.surface import Surface

#: :meth:`Ductile.wait` looks at the job after this long, then twice as long each time, up to...
_WAIT_FIRST = 0.01
#: ...this many seconds between two looks.
_WAIT_MAX = 0.25

_config_log = Log("config")
_reload_log = Log("reload")


def database_path(config: Config) -> Path:
    from ductile.adapters import statedir

    return statedir.database_path(config.service.state_dir)


def _advise(config: Config) -> None:
    """Log, at WARN, each setting that is valid but probably unintended (:meth:`Config.advisories`)."""
    for advice in config.advisories():
        _config_log.warning(f"config: {advice}")


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
        self._surface: Surface | None = None
        self._loaded_text: str | None = None

    # ----------------------------------------------------------------- lifecycle
    def _load(self) -> Config:
        """The config, and (``self._loaded_text``) the text it was read from."""
        if isinstance(self._config_source, Config):
            self._loaded_text = None
            return self._config_source
        from ductile.adapters.config import load_config_and_text, machine_timezone

        config, self._loaded_text = load_config_and_text(
            self._config_source, env=self._environ, local_tz=machine_timezone(env=self._environ)
        )
        return config

    def _record(self, config: Config) -> None:
        """Tell the command line this daemon's zone and its last good config (in the state
        directory, :mod:`ductile.adapters.daemon_record`); a failure to write is only logged."""
        if not self._owns_store:
            return
        from ductile.adapters.config import machine_timezone
        from ductile.adapters.daemon_record import write_record

        zone = machine_timezone(env=self._environ)
        try:
            write_record(
                config.service.state_dir,
                zone=str(getattr(zone, "key", zone)),
                config=config.source if self._loaded_text is not None else None,
                config_text=self._loaded_text,
                loaded_at=self.engine.clock.now(),
            )
        except OSError as e:
            _config_log.warning(f"cannot record the config in the state directory: {e.strerror or e}")

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
            spawner=self._spawner if self._spawner is not None else defaults.spawner(),
            clock=self._clock if self._clock is not None else defaults.clock(),
            inbox=self._inbox if self._inbox is not None else defaults.inbox(),
            catalog=self._catalog or defaults.catalog(),
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
        await self.surface.record_refusals()
        _advise(config)
        self._record(config)
        return self

    async def _open_own_store(self, config: Config) -> Store:
        """SQLite in the checked state dir (ADR 0040), locked unless ``lock=False``, integrity checked."""
        from ductile.adapters.sqlite import SqliteStore
        from ductile.adapters.statedir import DB_FILES, prepare

        if self._lock_wanted is not False:
            self._take_lock(config)
        else:
            prepare(config.service.state_dir, DB_FILES)
        try:
            store = await SqliteStore.open(database_path(config), integrity_check=True)
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
        from ductile.adapters.postgres.join import join

        if self._lock_wanted is not False:
            self._take_lock(config)
        try:
            joined = await join(config, listen=self._inbox is None)
        except BaseException:
            self._release_lock()
            raise
        self._owns_store = True
        self._cluster = joined.cluster
        self._inbox = joined.inbox or self._inbox
        self._closers += joined.closers
        return joined.store

    def _take_lock(self, config: Config) -> None:
        from ductile.adapters.daemon_record import LAST_GOOD_NAME, RECORD_NAME
        from ductile.adapters.pidlock import InstanceLock
        from ductile.adapters.statedir import DB_FILES

        self._lock = InstanceLock(config.service.state_dir, files=(*DB_FILES, RECORD_NAME, LAST_GOOD_NAME))
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
        http, listeners = self.surface.listeners(engine.runtime.config) if self._listen else (None, [])
        wake = self.surface.wake_listener() if self._lock is not None and self._lock.held else None
        reload_source = self.reload if self.config_path is not None else None
        notifier = None
        if notify_systemd and self._environ.get("NOTIFY_SOCKET"):
            from ductile.adapters.systemd import Notifier

            notifier = Notifier(self._environ)
            if not notifier.enabled:  # an unsupported NOTIFY_SOCKET (logged by the notifier)
                notifier = None
        self._service = Service(
            engine,
            reload=reload_source,
            http=http,
            listeners=listeners,
            background=[self.feed.run, *self._lock_watch()],
            on_ready=on_ready,
            notifier=notifier,
            publish=self.surface.status_writer() if self._lock is not None else None,
            on_stopping=self.feed.end_streams,
        )
        if self._stop_requested:  # stop() came before serve() got going: it still counts
            self._service.stop()
        if install_signal_handlers:
            self._service.install_signal_handlers()
        try:
            await self._service.run()
        finally:
            if install_signal_handlers:
                self._service.remove_signal_handlers()
            if wake is not None:
                wake.close()

    # ----------------------------------------------------------------- the operator surface
    @property
    def surface(self) -> Surface:
        """The activity feed, metrics, API app and listeners of this instance (built when first needed)."""
        if self._surface is None:
            from ductile.app.surface import Surface

            self._surface = Surface(self.engine, reload=self.reload_report, health=self.health,
                                    webhooks=lambda: self._counted(self._build_asgi(ready=None)))  # fmt: skip
        return self._surface

    @property
    def feed(self) -> Feed:
        return self.surface.feed

    @property
    def metrics(self) -> Metrics:
        return self.surface.metrics

    @property
    def api_app(self) -> ASGIApp:
        """The operator API's ASGI app (its own listener, or mounted in a host application)."""
        return self.surface.api_app

    @property
    def api_port(self) -> int | None:
        """The port the API listens on once serving (``api.listen`` port 0 picks one); None before."""
        return self.surface.api_port

    def _lock_watch(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        lock = self._lock
        return [] if lock is None else [lambda: watch_lock(lock.check, self.stop)]

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
        with contextlib.suppress(ConfigError):  # logged and noted by reload_report
            await self.reload_report(config)

    async def reload_report(self, config: Config | None = None) -> dict[str, Any]:
        """:meth:`reload`, answering what changed (``POST /system/reload``); a refused
        file raises :class:`ConfigError`. Either way the outcome is appended to the
        activity log (``config.reloaded`` / ``config.rejected``), where ``ductile
        reload`` reads it."""
        engine = self.engine
        if config is None:
            try:
                config = self._load()
            except ConfigError as e:
                _reload_log.error(f"reload refused, keeping the running configuration: {e}")
                await self.surface.record(Kind.CONFIG_REJECTED, {"error": str(e)})
                raise
        old = engine.runtime.config
        refused_before = frozenset(r.name for r in engine.runtime.refused)
        unhealthy_before = frozenset(engine.runtime.unhealthy)
        for change in restart_needed(old, config):
            _reload_log.warning(f"{change} changed: it applies at the next restart")
        report = await engine.reload(config)
        _advise(config)
        doc = reload_doc(old, config, added=report.added, removed=report.removed,
                         cancelled=report.cancelled, unhealthy=report.unhealthy)  # fmt: skip
        doc["restart_needed"] = restart_needed(old, config)
        self._record(config)
        await self.surface.record(Kind.CONFIG_RELOADED, doc)
        await self.surface.record_refusals(refused_before, unhealthy_before)
        return doc

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
        Raises :class:`~ductile.app.intake.UnknownPluginError` (no such plugin),
        :class:`~ductile.app.intake.UnknownCommandError` (its manifest does not list
        ``command``) or :class:`~ductile.app.intake.PluginUnavailableError` (refused,
        disabled, ``init`` failed): all :class:`~ductile.app.intake.EnqueueRefusedError`.
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
        """The /healthz figures (D20): :func:`~ductile.app.operations.health_doc`."""
        e, now = self.engine, self.engine.clock.now()
        return await health_doc(
            e.store, e.runtime, uptime=now - (e.started_at or now), scheduler=e.tick_report
        )

    @property
    def ready(self) -> bool:
        """Open and not closed: :attr:`asgi_app` serves (it answers 503 otherwise)."""
        return self._engine is not None and not self._closed

    @property
    def asgi_app(self) -> ASGIApp:
        """The webhook + /healthz ASGI app, to mount in a host application.

        It may be taken before the instance is opened (when the host app is
        built, before ``async with``): until :meth:`open` has finished, and
        again after :meth:`close`, it answers 503 with ``Retry-After: 1``.
        """
        if self._asgi is None:
            self._asgi = self._counted(self._build_asgi(ready=lambda: self.ready))
        return self._asgi

    def _counted(self, app: ASGIApp) -> ASGIApp:
        """``app``, its answers counted in the metrics once this instance has them (serving)."""
        from ductile.app.api.metrics import counting

        def answered(status: int) -> None:
            if self._surface is not None:
                self._surface.metrics.webhook_answered(status)

        return counting(app, answered)

    def _build_asgi(self, *, ready: Callable[[], bool] | None) -> ASGIApp:
        """The app; ``ready`` None for ductile's own listener, started only once open."""
        from ductile.adapters.http import WebhookDelivery, build_app

        def endpoints() -> Sequence[Endpoint]:
            hooks = self.engine.runtime.config.webhooks
            return hooks.endpoints if hooks is not None else ()

        async def submit(delivery: WebhookDelivery) -> str:
            webhook = Webhook(
                endpoint=delivery.endpoint,
                payload=delivery.payload,
                headers=delivery.headers,
                dedupe_key=delivery.dedupe_key,
            )
            return (await self.engine.submit(webhook)).job_id

        return build_app(endpoints=endpoints, submit=submit, health=self.health, ready=ready)

    # ----------------------------------------------------------------- jobs
    async def job(self, job_id: str) -> Job:
        """The job as stored now; raises :class:`~ductile.domain.errors.UnknownJobError`."""
        job = await self.engine.store.get_job(job_id)
        if job is None:
            raise UnknownJobError(job_id)
        return job

    async def wait(self, job_id: str, *, timeout: float | None = None) -> Job:
        """The job once it is terminal (``succeeded`` or ``dead``: see ``job.status`` and
        ``job.last_error``). Raises :class:`TimeoutError` when ``timeout`` seconds pass first
        (the job carries on) and :class:`~ductile.domain.errors.UnknownJobError`. The
        instance must be serving (:meth:`serve`) for the job to make progress."""
        pause = _WAIT_FIRST
        async with asyncio.timeout(timeout):
            while True:
                job = await self.job(job_id)
                if job.terminal:
                    return job
                await asyncio.sleep(pause)
                pause = min(pause * 2, _WAIT_MAX)
