"""The daemon's heartbeat: scheduler loop, dispatcher and its workers, HTTP listener.

:class:`Service` drives an :class:`~ductile.app.engine.Engine` with asyncio
tasks on one loop. The dispatcher claims while fewer than
``service.max_workers`` jobs run (1, the default: one job at a time, FIFO,
exactly D14) and runs each claimed job in a task of its own; the lanes are
the claim's to respect. Stopping is idempotent: intake stops first (the
listener closes, the scheduler stops enqueueing), every job in flight
finishes within its own deadline, then everything closes. Signal handlers are installed only when
asked (``ductile start`` asks; an embedding application does not).

systemd (``Type=notify-reload``, ``WatchdogSec=``): given a
:class:`~ductile.adapters.systemd.Notifier` (only when ``$NOTIFY_SOCKET`` is
set), the service sends ``READY=1`` once the listener accepts connections and
the loops exist; ``RELOADING=1`` + ``MONOTONIC_USEC`` when a reload begins and
``READY=1`` when it has ended (applied or refused); ``STOPPING=1`` when a stop
begins; ``STATUS=`` (queue depth, plugins, open circuits) every
:data:`STATUS_EVERY` seconds and after each reload; and ``WATCHDOG=1`` every
half ``WATCHDOG_USEC`` from a monitor task, only while the daemon is *alive*:

* the event loop runs (the pings come from a task on it: a blocked loop sends
  nothing);
* the scheduler, dispatcher and reload loops have not ended (a loop that died
  of an unexpected error leaves a process that serves /healthz but does no
  work: systemd should restart it);
* the store answers a read (``queue_depth``) within half a ping interval (a
  wedged database thread stops the pings). An *error* from the store is an
  answer: a full disk or a locked database fails operations, not the daemon
  (SPEC), and a restart would not cure it.

It deliberately does not demand *progress* of the loops: a job may run for
its whole timeout (minutes), the scheduler sleeps up to ``tick_interval``, a
reload runs ``init`` commands under the engine lock, and the dispatcher keeps
retrying to record a job's end through a full disk. Killing the daemon for any
of those would turn a healthy run into an orphan to retry. A plugin process
that outlives its deadline is the spawner's to kill, not the watchdog's.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from logging import ERROR, WARNING
from typing import TYPE_CHECKING, Any, Protocol

from ductile.app.dispatch import UnsettledError
from ductile.app.engine import Claimed, Engine
from ductile.app.membership import Membership
from ductile.domain.breaker import Breaker, BreakerStatus
from ductile.log import Episode, Log
from ductile.ports.store import StoreFaultError

if TYPE_CHECKING:
    from ductile.adapters.systemd import Notifier

ReloadSource = Callable[[], Awaitable[None]]
#: Writes what ``ductile status`` reads of the running daemon (its status file).
Publish = Callable[[dict[str, Any]], None]


class Listener(Protocol):
    """What the service needs of its HTTP listener (webhooks and /healthz):
    :class:`~ductile.adapters.http.HttpServer` is one."""

    async def start(self) -> None:
        """Return once connections are accepted."""

    async def stop(self) -> None:
        """Stop accepting, finish or cancel the requests in flight; idempotent."""


#: Seconds between two ``STATUS=`` updates sent to systemd.
STATUS_EVERY = 10.0

_daemon_log = Log("daemon")
_dispatcher_log = Log("dispatcher")
_reload_log = Log("reload")
_systemd_log = Log("systemd")


class Service:
    def __init__(
        self,
        engine: Engine,
        *,
        reload: ReloadSource | None = None,
        http: Listener | None = None,
        listeners: Sequence[Listener] = (),
        background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
        on_ready: Callable[[], None] | None = None,
        notifier: Notifier | None = None,
        publish: Publish | None = None,
        on_stopping: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self._reload_source = reload
        self._http = http
        #: More listeners (the operator API), started after ``http`` and stopped with it.
        self._listeners = [x for x in (http, *listeners) if x is not None]
        #: Loops that run beside the engine's (the activity feed), cancelled at shutdown.
        self._background = list(background)
        self._on_ready = on_ready
        #: Called once when the stop begins, before the listeners stop (ends the event streams).
        self._on_stopping = on_stopping
        self._stopping = asyncio.Event()
        self._wake_scheduler = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        #: The jobs in flight (each run in a task of its own).
        self._workers: set[asyncio.Task[None]] = set()
        self._stopped = False
        #: Talks to systemd; None outside systemd (``$NOTIFY_SOCKET`` unset).
        self._notifier = notifier
        self._monitor: asyncio.Task[None] | None = None
        self._told_stopping = False
        #: Why watchdog pings are withheld (None: they are not), to log changes only.
        self._unhealthy: str | None = None
        self._publish = publish
        #: The document last published (None: nothing yet, or the last write failed).
        self._published: dict[str, Any] | None = None
        self._publish_failing = False

    # ----------------------------------------------------------------- control
    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """Begin a graceful stop; calling it again does nothing more."""
        if self._stopping.is_set():
            return
        _daemon_log.info("stopping: intake closed, waiting for the running jobs")
        self._stopping.set()
        self.engine.halt()
        self._tell_stopping()
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
        for listener in self._listeners:
            await listener.start()
        self._tasks = [
            *(
                asyncio.create_task(loop(), name=f"ductile-background-{i}")
                for i, loop in enumerate(self._background)
            ),
            asyncio.create_task(self._scheduler_loop(), name="ductile-scheduler"),
            asyncio.create_task(self._dispatcher_loop(), name="ductile-dispatcher"),
            asyncio.create_task(self._reload_loop(), name="ductile-reload"),
        ]
        if self.engine.cluster is not None:
            membership = Membership(
                self.engine,
                self.engine.cluster,
                workers=lambda: self._workers,
                stopping=lambda: self.stopping,
                on_leading=self._wake_scheduler.set,
            )
            self._tasks.append(asyncio.create_task(membership.run(), name="ductile-cluster"))
        _daemon_log.info("ductile is running", plugins=len(self.engine.runtime.plugins))
        if self._notifier is not None and not self.stopping:
            self._notifier.ready()
            self._monitor = asyncio.create_task(self._systemd_loop(self._notifier), name="ductile-systemd")
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
        self._tell_stopping()
        if self._on_stopping is not None:
            self._on_stopping()
        for listener in self._listeners:
            with contextlib.suppress(Exception):
                await listener.stop()
        # The dispatcher finishes its jobs in flight (each bounded by its own deadline).
        for task in self._tasks:
            if task.get_name() != "ductile-dispatcher":
                task.cancel()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                _daemon_log.log(ERROR, "a loop ended with an error during shutdown", exc_info=result)
        # The monitor goes last: systemd's watchdog still runs while the last job finishes.
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.gather(self._monitor, return_exceptions=True)
        _daemon_log.info("stopped")

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
            except Exception:  # logged once per episode and counted by the engine's tick report
                wake = now + timedelta(seconds=5)
            self._publish_report()
            cap = self.engine.clock.now() + self.engine.runtime.config.service.tick_interval
            await self._sleep_until(min(wake, cap), self._wake_scheduler)

    async def _dispatcher_loop(self) -> None:
        """Claim while a worker is free, run each claimed job in its own task; when nothing
        more can be claimed, wait for a worker to finish, the inbox, or the next retry time.
        On the way out, every job in flight finishes (each bounded by its own deadline)."""
        workers = self._workers
        self._episode = Episode(_dispatcher_log, "dispatch (trying again every second)")
        try:
            while not self.stopping:
                idle = await self._fill(workers)
                if self.stopping:
                    break
                await self._wait_for_work(workers, idle=idle)
        finally:
            if workers:
                await asyncio.gather(*workers, return_exceptions=True)

    def _max_workers(self) -> int:
        return self.engine.runtime.config.service.max_workers

    async def _fill(self, workers: set[asyncio.Task[None]]) -> bool:
        """Claim into free workers; True when the store had nothing more to claim."""
        while len(workers) < self._max_workers() and not self.stopping:
            try:
                claimed = await self.engine.claim_one()
            except Exception as e:
                fault = isinstance(e, StoreFaultError)  # the store logged that episode's error itself
                self._episode.failed(e, level=WARNING if fault else ERROR, traceback=not fault)
                await asyncio.sleep(1.0)
                return False
            self._episode.ended()
            if claimed is None:
                return True
            task = asyncio.create_task(self._work(claimed), name=f"ductile-job-{claimed.job.id}")
            workers.add(task)
            task.add_done_callback(workers.discard)
        return False

    async def _work(self, claimed: Claimed | None) -> None:
        """Run the claimed job, then the one its settle claimed (ADR 0068), and so on while
        the settles find work; then this worker is free again."""
        while claimed is not None:
            job = claimed.job
            try:
                claimed = await self.engine.run_claimed(claimed, chain=not self.stopping)
            except UnsettledError:  # logged by the dispatcher; the job is left to crash recovery
                return
            except Exception:  # the dispatcher logs its own failures; this is a bug showing
                _dispatcher_log.bind(plugin=job.plugin, job_id=job.id).exception("a job's worker failed")
                return

    async def _wait_for_work(self, workers: set[asyncio.Task[None]], *, idle: bool) -> None:
        """Until a worker finishes or, when a worker is free, work may have arrived."""
        if len(workers) >= self._max_workers():
            await asyncio.wait(workers, return_when=asyncio.FIRST_COMPLETED)
            return
        if not idle:
            return
        try:
            timeout = await self.engine.idle_wait()
        except Exception:
            timeout = 1.0
        if not workers:
            await self.engine.inbox.wait(timeout)
            return
        waiter = asyncio.ensure_future(self.engine.inbox.wait(timeout))
        try:
            await asyncio.wait({waiter, *workers}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not waiter.done():
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter

    async def _reload_loop(self) -> None:
        while True:
            await self._reload_requested.wait()
            self._reload_requested.clear()
            if self.stopping:
                return
            if self._notifier is not None:
                self._notifier.reloading()
            if self._reload_source is None:
                _reload_log.warning("reload requested but there is no config file to re-read")
            else:
                try:
                    await self._reload_source()
                except Exception:
                    _reload_log.exception("reload failed; the previous configuration stays in force")
            # Applied or refused, the reload is over: systemd waits for READY=1 either way.
            if self._notifier is not None and not self.stopping:
                self._notifier.ready()
                await self._send_status(self._notifier)
            self._wake_scheduler.set()

    def _publish_report(self) -> None:
        """Hand the tick report to ``publish`` when it changed (a failed write is logged once)."""
        if self._publish is None:
            return
        doc = {"scheduler": self.engine.tick_report.to_json()}
        if doc == self._published:
            return
        try:
            self._publish(doc)
        except Exception as e:
            if not self._publish_failing:
                _daemon_log.warning(f"could not write the daemon's status file: {e}")
            self._publish_failing = True
            self._published = None
            return
        self._publish_failing = False
        self._published = doc

    # ----------------------------------------------------------------- systemd
    def _tell_stopping(self) -> None:
        if self._notifier is not None and not self._told_stopping:
            self._told_stopping = True
            self._notifier.stopping()
            self._notifier.status("stopping: intake closed, waiting for the running jobs")

    async def _systemd_loop(self, notifier: Notifier) -> None:
        """``WATCHDOG=1`` while alive (see the module's docstring), ``STATUS=`` now and then."""
        loop = asyncio.get_running_loop()
        interval = notifier.watchdog_interval()
        period = STATUS_EVERY if interval is None else min(interval, STATUS_EVERY)
        # Each read of a round waits at most half a period, so two pings are never more
        # than 1.5 periods apart (systemd's limit is 2) while the store answers in time.
        bound = period / 2
        next_status = loop.time()
        while True:
            started = loop.time()
            try:
                reason = await self._why_not_alive(timeout=bound)
                self._note_health(reason)
                if interval is not None and reason is None:
                    notifier.watchdog()
                if started >= next_status and not self.stopping:
                    next_status = started + STATUS_EVERY
                    notifier.status(await self.status_text(timeout=bound))
            except Exception:  # the monitor must outlive its own bugs; no ping this round
                _systemd_log.exception("the systemd monitor failed a round")
            await asyncio.sleep(max(0.0, started + period - loop.time()))

    async def _why_not_alive(self, *, timeout: float) -> str | None:
        """None when the daemon is alive enough to deserve a watchdog ping; else why not."""
        if not self.stopping:  # while stopping, the loops end on purpose
            for task in self._tasks:
                if task.done():
                    return f"the {task.get_name().removeprefix('ductile-')} loop has ended"
        try:
            await asyncio.wait_for(self.engine.store.queue_depth(), timeout)
        except TimeoutError:
            return f"the store did not answer a read within {timeout:g} s"
        except Exception:  # an answer all the same: the store's thread is alive
            return None
        return None

    def _note_health(self, reason: str | None) -> None:
        if reason == self._unhealthy:
            return
        if reason is not None:
            _systemd_log.error(f"withholding systemd watchdog pings: {reason}")
        else:
            _systemd_log.info("alive again: systemd watchdog pings resume")
        self._unhealthy = reason

    async def _send_status(self, notifier: Notifier) -> None:
        notifier.status(await self.status_text())

    async def status_text(self, *, timeout: float = 5.0) -> str:
        """One line for ``systemctl status``: queue depth, plugins loaded, open circuits."""
        engine = self.engine
        loaded = len(engine.runtime.plugins)
        plugins = f"{loaded} plugin{'s' if loaded != 1 else ''} loaded"

        async def read() -> tuple[int, list[Breaker]]:
            return await engine.store.queue_depth(), await engine.store.breakers()

        try:
            depth, breakers = await asyncio.wait_for(read(), timeout)
        except TimeoutError:
            return f"{plugins}; the database did not answer within {timeout:g} s"
        except Exception as e:
            return f"{plugins}; database error: {e}"
        text = f"{depth} queued, {plugins}"
        tripped = len({b.plugin for b in breakers if b.status is not BreakerStatus.CLOSED})
        if tripped:
            text += f", {tripped} with an open circuit"
        if self._unhealthy is not None:
            text += f"; NOT alive: {self._unhealthy}"
        report = engine.tick_report
        if not report.ok:
            text += f"; scheduler failing: {report.tick_error or ', '.join(sorted(report.failing))}"
        return text
