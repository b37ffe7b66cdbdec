"""The daemon's heartbeat: scheduler loop, serial dispatcher, HTTP listener.

:class:`Service` drives an :class:`~ductile.app.engine.Engine` with asyncio
tasks on one loop. Stopping is idempotent: intake stops first (the listener
closes, the scheduler stops enqueueing), the job in flight finishes within its
own deadline, then everything closes. Signal handlers are installed only when
asked (``ductile start`` asks; an embedding application does not).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from ductile.app.engine import Engine, emit, log

ReloadSource = Callable[[], Awaitable[None]]


class Service:
    def __init__(
        self,
        engine: Engine,
        *,
        reload: ReloadSource | None = None,
        http: Any | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self._reload_source = reload
        self._http = http
        self._on_ready = on_ready
        self._stopping = asyncio.Event()
        self._wake_scheduler = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False

    # ----------------------------------------------------------------- control
    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """Begin a graceful stop; calling it again does nothing more."""
        if self._stopping.is_set():
            return
        emit(logging.INFO, "stopping: intake closed, waiting for the running job", component="daemon")
        self._stopping.set()
        self._wake_scheduler.set()
        self.engine.inbox.notify()

    def request_reload(self) -> None:
        """Ask for a reload; several requests while one runs collapse into one."""
        self._reload_requested.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)

    def remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    # ----------------------------------------------------------------- running
    async def run(self) -> None:
        """Serve until :meth:`stop`; returns once everything is closed."""
        if self._http is not None:
            await self._http.start()
        self._tasks = [
            asyncio.create_task(self._scheduler_loop(), name="ductile-scheduler"),
            asyncio.create_task(self._dispatcher_loop(), name="ductile-dispatcher"),
            asyncio.create_task(self._reload_loop(), name="ductile-reload"),
        ]
        emit(logging.INFO, "ductile is running", component="daemon", plugins=len(self.engine.runtime.plugins))
        if self._on_ready is not None:
            self._on_ready()
        try:
            await self._stopping.wait()
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        if self._http is not None:
            with contextlib.suppress(Exception):
                await self._http.stop()
        # The dispatcher finishes its current job (bounded by the job's deadline).
        for task in self._tasks:
            if task.get_name() != "ductile-dispatcher":
                task.cancel()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error(
                    "a loop ended with an error during shutdown",
                    exc_info=result,
                    extra={"component": "daemon"},
                )
        emit(logging.INFO, "stopped", component="daemon")

    async def _sleep_until(self, when: datetime, event: asyncio.Event) -> None:
        """Sleep until ``when`` on the engine's clock, or until ``event`` is set."""
        sleeper = asyncio.ensure_future(self.engine.clock.sleep_until(when))
        waker = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(sleeper, waker, return_exceptions=True)
        event.clear()

    async def _scheduler_loop(self) -> None:
        while not self.stopping:
            now = self.engine.clock.now()
            try:
                wake = await self.engine.tick()
            except Exception:
                log.exception("scheduler tick failed; trying again shortly", extra={"component": "scheduler"})
                wake = now + timedelta(seconds=5)
            cap = self.engine.clock.now() + self.engine.runtime.config.service.tick_interval
            await self._sleep_until(min(wake, cap), self._wake_scheduler)

    async def _dispatcher_loop(self) -> None:
        while not self.stopping:
            try:
                worked = await self.engine.dispatch_one()
            except Exception:
                log.exception("dispatch failed; trying again shortly", extra={"component": "dispatcher"})
                worked = False
                await asyncio.sleep(1.0)
            if not worked and not self.stopping:
                try:
                    timeout = await self.engine.idle_wait()
                except Exception:
                    timeout = 1.0
                await self.engine.inbox.wait(timeout)

    async def _reload_loop(self) -> None:
        while True:
            await self._reload_requested.wait()
            self._reload_requested.clear()
            if self.stopping:
                return
            if self._reload_source is None:
                emit(
                    logging.WARNING,
                    "reload requested but there is no config file to re-read",
                    component="reload",
                )
                continue
            try:
                await self._reload_source()
            except Exception:
                log.exception(
                    "reload failed; the previous configuration stays in force", extra={"component": "reload"}
                )
            self._wake_scheduler.set()
