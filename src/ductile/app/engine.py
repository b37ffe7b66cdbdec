"""The engine: ductile's behaviour, independent of how it is driven.

The daemon drives it with asyncio tasks (a scheduler loop calling
:meth:`Engine.tick`, a dispatcher loop calling :meth:`Engine.dispatch_one`);
the simulation drives the very same methods step by step on a fake clock.
Every decision is the domain's; the engine fetches inputs, calls the ports
and logs what happened.

This module is the façade: it holds the ports, the runtime in force and the
lock that serializes ticks, claims and reloads, and delegates each story to
its module: :mod:`~ductile.app.intake` (queueing a job),
:mod:`~ductile.app.dispatch` (claim, run, settle),
:mod:`~ductile.app.scheduler` (timers and retention) and
:mod:`~ductile.app.lifecycle` (start, recovery, ``init``, reload).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import attrs

from ductile.app import intake
from ductile.app.dispatch import Dispatcher
from ductile.app.intake import EnqueueRefusedError, Manual, Submission
from ductile.app.lifecycle import Lifecycle, ReloadReport
from ductile.app.runtime import Runtime
from ductile.app.scheduler import Scheduler
from ductile.app.spawn import plugin_env
from ductile.app.tick_report import TickReport
from ductile.domain.config import Config
from ductile.domain.job import Command, Job, SubmittedBy
from ductile.domain.plugin import Discovery
from ductile.domain.settle import Settlement
from ductile.ports.catalog import Catalog
from ductile.ports.clock import Clock
from ductile.ports.cluster import Cluster
from ductile.ports.inbox import Inbox
from ductile.ports.spawner import Spawner
from ductile.ports.store import EnqueueResult, Store

__all__ = ["Claimed", "Engine", "EnqueueRefusedError", "ReloadReport"]


@attrs.frozen
class Claimed:
    """A job just claimed, and the runtime it was claimed under (it runs and ends under it, D13)."""

    job: Job
    runtime: Runtime


class Engine:
    def __init__(
        self,
        *,
        config: Config,
        store: Store,
        spawner: Spawner,
        clock: Clock,
        inbox: Inbox,
        catalog: Catalog,
        draw: Callable[[], float] | None = None,
        new_id: Callable[[], str] | None = None,
        environ: Mapping[str, str] | None = None,
        cluster: Cluster | None = None,
    ) -> None:
        self.store = store
        self._among(cluster)
        self.spawner = spawner
        self.clock = clock
        self.inbox = inbox
        self.catalog = catalog
        self.draw: Callable[[], float] = draw or random.random
        self.new_id: Callable[[], str] = new_id or (lambda: str(uuid.uuid4()))
        self.environ: Mapping[str, str] = dict(environ or {})
        self.base_env = plugin_env(self.environ)
        self.runtime = Runtime(config=config, discovery=Discovery())
        self.started_at: datetime | None = None
        #: When the last claim found nothing to take (None: it took a job).
        self._found_nothing_at: datetime | None = None
        #: The jobs this engine claimed and has not settled yet (a shared store's strays are the others).
        self._claimed: set[str] = set()
        #: Ticks, claims and reloads never overlap (D13: reloads are serialized and atomic).
        self._lock = asyncio.Lock()
        #: Set by :meth:`halt`: a settle the store refuses is then abandoned after one more try.
        self._halt = asyncio.Event()
        self._dispatcher = self._new_dispatcher()
        self._scheduler = Scheduler(
            store=store, clock=clock, inbox=inbox, draw=self.draw, new_id=self.new_id, spawner=spawner
        )
        self._lifecycle = Lifecycle(
            store=store,
            spawner=spawner,
            clock=clock,
            inbox=inbox,
            catalog=catalog,
            draw=self.draw,
            new_id=self.new_id,
            run=self._dispatcher.run,
            shared=cluster is not None,
        )

    def _new_dispatcher(self) -> Dispatcher:
        """The dispatcher, sharing the engine's lock (a settle that claims holds it) and halt."""
        return Dispatcher(
            store=self.store,
            spawner=self.spawner,
            clock=self.clock,
            inbox=self.inbox,
            catalog=self.catalog,
            draw=self.draw,
            base_env=self.base_env,
            watchdog=self.cluster is not None,
            environ=self.environ,
            halt=self._halt,
            claim_lock=self._lock,
        )

    def _among(self, cluster: Cluster | None) -> None:
        #: This daemon among others on a shared store (ADR 0034); None: alone (SQLite, the fakes).
        self.cluster = cluster
        #: Claims are allowed (False while fenced, or while this node's config differs from the leader's).
        self.claiming = True
        #: This daemon runs the singleton duties: the tick, retention, schedule sync (alone: always).
        self.leading = cluster is None
        #: Every node runs the leader's config: the leader may re-plan schedules and cancel jobs.
        self.agreed = True

    # ----------------------------------------------------------------- start-up
    async def start(self) -> list[Settlement]:
        """Crash recovery (D6), plugin discovery, ``init`` where due, schedules."""
        self.started_at = self.clock.now()
        config = self.runtime.config
        async with self._lock:
            # Discovery first, so the deaths recovery finds are routed (job.dead) like any other.
            discovery = self._lifecycle.discover(config)
            recovered = await self._lifecycle.recover(Runtime(config=config, discovery=discovery).alerts())
            self.runtime = await self._lifecycle.start(config, discovery)
        return recovered

    async def recover(self) -> list[Settlement]:
        return await self._lifecycle.recover(self.runtime.alerts())

    # ----------------------------------------------------------------- reload (D13)
    async def reload(self, config: Config) -> ReloadReport:
        """Switch to ``config``: atomically, serialized with ticks and other reloads.

        The new runtime is built first (discovery, ``init`` where due) and
        swapped in whole; only then are its consequences carried out in the
        store — removed or disabled plugins' queued jobs moved to dead, the
        schedule index re-planned. Those steps are idempotent: if the store
        fails half-way they are retried by the next tick, under the new
        runtime, so the system is never left half old and half new. In-flight
        jobs keep the runtime they were claimed with.
        """
        async with self._lock:
            switch = await self._lifecycle.switch(self.runtime, config)
            self.runtime = switch.runtime
            cancelled = await self._lifecycle.reconcile(switch.runtime)
            return ReloadReport(
                cancelled=cancelled,
                added=switch.added,
                removed=switch.removed,
                unhealthy=switch.runtime.unhealthy,
            )

    # ----------------------------------------------------------------- scheduler runner (D17)
    async def tick(self) -> datetime:
        """Catch the store up with the last reload if need be, then fire what is due
        (see :meth:`Scheduler.tick`). Returns when the next run is planned. On a shared
        store only the leader ticks, and catches the store up only while every node runs
        its config (the others just wait).

        A tick that fails as a whole is noted in :attr:`tick_report` (logged once per
        episode) and raised: the caller tries again shortly."""
        async with self._lock:
            runtime = self.runtime
            if not self.leading:
                return self.clock.now() + runtime.config.service.tick_interval
            try:
                if self._lifecycle.pending and self.agreed:
                    await self._lifecycle.reconcile(runtime)
                return await self._scheduler.tick(runtime)
            except Exception as e:
                self._scheduler.report.tick_failed(e, self.clock.now())
                raise

    @property
    def tick_report(self) -> TickReport:
        """How the scheduler's ticks are going (``/healthz``, ``ductile status``)."""
        return self._scheduler.report

    def fingerprint(self) -> str:
        """The config fingerprint this node registers (:func:`~ductile.app.runtime.config_fingerprint`)."""
        return self.runtime.fingerprint()

    async def kill_in_flight(self) -> list[int]:
        """SIGKILL the process group of every run in flight here (a fenced node); their group ids."""
        killed: list[int] = []
        for handle in list(self._dispatcher.in_flight.values()):
            if await self.spawner.kill_orphan(handle):
                killed.append(handle.pgid)
        return killed

    async def recover_strays(self) -> list[Settlement]:
        """This node's claims it does not hold (see :meth:`Cluster.strays`), re-queued."""
        assert self.cluster is not None
        settlements = await self.cluster.strays(
            self.clock.now(), keep=set(self._claimed), alerts=self.runtime.alerts()
        )
        if settlements:
            self.inbox.notify()
        return settlements

    async def recover_peers(self) -> list[Settlement]:
        """Peer recovery (a shared store's leader): see :meth:`Lifecycle.recover_peers`."""
        assert self.cluster is not None
        return await self._lifecycle.recover_peers(self.cluster, alerts=self.runtime.alerts())

    # ----------------------------------------------------------------- intake
    async def submit(self, submission: Submission) -> EnqueueResult:
        """Queue a job asked for from outside: the one intake path (:func:`ductile.app.intake.enqueue`)."""
        return await intake.enqueue(
            submission,
            runtime=self.runtime,
            store=self.store,
            now=self.clock.now(),
            new_id=self.new_id,
            notify=self.inbox.notify,
        )

    async def enqueue(
        self,
        plugin: str,
        *,
        command: str = Command.POLL,
        payload: dict[str, Any] | None = None,
        event_type: str | None = None,
        dedupe_key: str | None = None,
        submitted_by: SubmittedBy = SubmittedBy.API,
        strict: bool = True,
    ) -> EnqueueResult:
        """Queue one job by hand: :meth:`submit` of a :class:`~ductile.app.intake.Manual`.
        For ``handle``, ``payload`` is the payload of the event the job receives."""
        return await self.submit(
            Manual(
                plugin=plugin,
                command=command,
                payload=payload,
                event_type=event_type,
                dedupe_key=dedupe_key,
                submitted_by=submitted_by,
                strict=strict,
            )
        )

    # ----------------------------------------------------------------- dispatcher (D14)
    async def dispatch_one(self) -> bool:
        """Claim the oldest runnable job, run it, settle it. False when idle."""
        claimed = await self.claim_one()
        if claimed is None:
            return False
        await self.run_claimed(claimed)
        return True

    async def claim_one(self) -> Claimed | None:
        """Claim the oldest runnable job whose lane has room (None: nothing to claim now);
        run it with :meth:`run_claimed`. The daemon keeps up to ``service.max_workers`` claimed."""
        if not self.claiming:
            self._found_nothing_at = None
            return None
        # Under the lock: a reload's ``init`` job (enqueued, then claimed by the
        # reload itself) is never taken here, and the runtime is the claim's.
        async with self._lock:
            now = self.clock.now()
            job = await self._dispatcher.claim(self.runtime, now)
            runtime = self.runtime
        if job is None:
            self._found_nothing_at = now
            return None
        self._found_nothing_at = None
        self._claimed.add(job.id)
        return Claimed(job, runtime)

    async def run_claimed(self, claimed: Claimed, *, chain: bool = False) -> Claimed | None:
        """Run a claimed job and settle it. With ``chain``, the settle's own unit also claims the
        next job (one write transaction per job, ADR 0068), returned for the caller to run at
        once, claimed under the runtime current then; None when nothing was claimed (nothing
        runnable, claims paused, a tick or reload in progress, or this job's claim was lost)."""
        under: list[Runtime] = []

        def runtime_for_next() -> Runtime | None:  # called holding the lock, as claim_one does
            if not self.claiming:
                return None
            under.append(self.runtime)
            return self.runtime

        try:
            committed = await self._dispatcher.run(
                claimed.job, claimed.runtime, then=runtime_for_next if chain else None
            )
        finally:
            self._claimed.discard(claimed.job.id)
        following = committed.next_job if committed is not None else None
        if following is None:
            return None
        self._found_nothing_at = None
        self._claimed.add(following.id)
        return Claimed(following, under[-1])

    def halt(self) -> None:
        """The daemon is stopping: the job in flight still runs to its end, but if the store
        will not record that end it is tried once more and then left to crash recovery
        (:class:`~ductile.app.dispatch.UnsettledError`), so a stop stays bounded."""
        self._halt.set()

    async def idle_wait(self) -> float:
        """Seconds the dispatcher may wait for work: until the next retry, at most 1 s
        (so another process's enqueue is noticed within a second); 1 s when a retry that
        was due at the last claim was passed by (its lane is full)."""
        return await self._dispatcher.idle_wait(found_nothing_at=self._found_nothing_at)
