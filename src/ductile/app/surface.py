"""The operator surface of one instance: the activity feed and its metrics, the API app,
the HTTP listeners, the cross-process wake-up, and what the instance records in the log.

:class:`~ductile.app.bootstrap.Ductile` builds one when it first needs it (serving,
or an embedder asking for :attr:`Ductile.api_app`); nothing here is imported or built
for an instance that never serves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ductile.app.daemon import Listener
from ductile.app.engine import Engine
from ductile.app.feed import Feed
from ductile.domain.activity import Activity, Kind
from ductile.domain.config import Config
from ductile.log import Log
from ductile.ports.store_faults import StoreFaultError

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from ductile.adapters.http import HttpServer
    from ductile.adapters.wake import WakeListener
    from ductile.app.api import Metrics

_log = Log("activity")


def _connection_cap(listeners: int) -> int:
    """Each HTTP listener's connection cap: what fits, shared by the ``listeners``, under the
    open-file limit with a reserve for plugins and the database (:mod:`ductile.adapters.fdlimit`)."""
    from ductile.adapters.fdlimit import connection_budget
    from ductile.adapters.http.server import MAX_CONNECTIONS

    cap = max(1, connection_budget(MAX_CONNECTIONS * listeners) // listeners)
    if cap < MAX_CONNECTIONS:
        Log("http").warning(
            f"only {cap} HTTP connections fit under the open-file limit with a reserve for plugins "
            f"and the database ({MAX_CONNECTIONS} wanted); raise it (LimitNOFILE= under systemd)"
        )
    return cap


class Surface:
    def __init__(
        self,
        engine: Engine,
        *,
        reload: Callable[[], Awaitable[dict[str, Any]]],
        health: Callable[[], Awaitable[dict[str, Any]]],
        webhooks: Callable[[], ASGIApp],
    ) -> None:
        from ductile.app.api import Metrics

        self.engine = engine
        self._reload = reload
        self._health = health
        self._webhooks = webhooks
        self.feed = Feed(engine.store)
        self.metrics: Metrics = Metrics()
        self.feed.observe(self.metrics.observe)
        #: Seconds between two heartbeat comments on ``GET /events`` (None: the API's default).
        self.heartbeat: float | None = None
        #: Seconds a client has to send a request body to the API (None: the API's default).
        self.body_timeout: float | None = None
        self._api: ASGIApp | None = None
        self._api_server: HttpServer | None = None

    # ----------------------------------------------------------------- the API
    @property
    def api_app(self) -> ASGIApp:
        if self._api is None:
            self._api = self.api_app_over(None)
        return self._api

    def api_app_over(self, fallback: ASGIApp | None) -> ASGIApp:
        """The API app; what no API route matches goes to ``fallback`` (the webhooks)."""
        from ductile.app.api import ApiContext, build_api
        from ductile.app.ui import ui_routes

        context = ApiContext(
            engine=self.engine, feed=self.feed, metrics=self.metrics, reload=self._reload, health=self._health
        )
        if self.heartbeat is not None:
            context.heartbeat = self.heartbeat
        if self.body_timeout is not None:
            context.body_timeout = self.body_timeout
        return build_api(context, fallback=fallback, extra=ui_routes(context))

    @property
    def api_port(self) -> int | None:
        return self._api_server.bound_port if self._api_server is not None else None

    def listeners(self, config: Config) -> tuple[Listener | None, list[Listener]]:
        """The webhook listener and the API's; one server for both when they share an address
        (port 0 never counts as the same: it means "any free port"). Each has the
        connection guard (ADR 0046), its cap a share of what the descriptors allow."""
        from ductile.adapters.http import HttpServer

        webhooks, api = config.webhooks, config.api
        shared = webhooks is not None and api is not None and api.port != 0
        if (
            shared
            and api is not None
            and webhooks is not None
            and (api.host, api.port) == (webhooks.host, webhooks.port)
        ):
            cap = _connection_cap(1)
            self._api_server = HttpServer(
                self.api_app_over(self._webhooks()), api.host, api.port, label="webhooks+api",
                max_connections=cap,
            )  # fmt: skip
            return self._api_server, []
        count = (webhooks is not None) + (api is not None)
        cap = _connection_cap(count) if count else 1
        http = (
            HttpServer(self._webhooks(), webhooks.host, webhooks.port, max_connections=cap)
            if webhooks is not None
            else None
        )
        apis: list[Listener] = []
        if api is not None:
            self._api_server = HttpServer(self.api_app, api.host, api.port, label="api", max_connections=cap)
            apis.append(self._api_server)
        return http, apis

    def status_writer(self) -> Callable[[dict[str, Any]], None]:
        """Writes the status file ``ductile status`` reads (only for the instance lock's holder:
        the file is believed when its pid is the lock holder's)."""
        from ductile.adapters.status_file import status_writer

        return status_writer(self.engine.runtime.config.service.state_dir, self.engine.clock.now)

    def wake_listener(self) -> WakeListener | None:
        """Another process's enqueue wakes the dispatcher and the feed at once (ADR 0024);
        the caller holds the state directory's lock."""
        from ductile.adapters.wake import WakeListener

        engine, feed = self.engine, self.feed

        def woken() -> None:
            engine.inbox.notify()
            feed.poke()

        listener = WakeListener(engine.runtime.config.service.state_dir, woken)
        return listener if listener.start() else None

    # ----------------------------------------------------------------- the activity log
    async def record(self, kind: Kind, data: dict[str, Any], plugin: str | None = None) -> None:
        """Append an entry the instance decided on; a store error is logged, never raised
        (what happened, happened all the same: only its record is missing). A refused or
        unhealthy plugin is also a lifecycle event, routed under the runtime in force."""
        engine = self.engine
        try:
            await engine.store.note(
                Activity(kind=kind, at=engine.clock.now(), plugin=plugin, data=data),
                alerts=engine.runtime.alerts(),
            )
        except StoreFaultError as e:  # the machine's fault: the store logs its episode's error line
            _log.warning(f"could not record {kind.value} in the activity log: {e}")
        except Exception:
            _log.exception(f"could not record {kind.value} in the activity log")
        else:
            engine.inbox.notify()
        self.feed.poke()

    async def record_refusals(
        self, before: frozenset[str] = frozenset(), unhealthy_before: frozenset[str] = frozenset()
    ) -> None:
        """``plugin.refused`` for each plugin refused now and not refused ``before``;
        ``plugin.unhealthy`` for each plugin unhealthy now and not ``unhealthy_before``."""
        runtime = self.engine.runtime
        for refusal in runtime.refused:
            if refusal.name not in before:
                await self.record(Kind.PLUGIN_REFUSED, {"reason": refusal.reason}, plugin=refusal.name)
        for name, reason in sorted(runtime.unhealthy.items()):
            if name not in unhealthy_before:
                await self.record(Kind.PLUGIN_UNHEALTHY, {"reason": reason}, plugin=name)
