"""The dispatcher (D14): claim a job, run its plugin, settle the outcome, commit.

One job per call: the daemon runs up to ``service.max_workers`` of them at once
(``app/daemon.py``), the lanes decided by the claim (:mod:`ductile.domain.lanes`).
A claimed job is never stranded: whatever goes wrong while preparing the run
or in the spawner becomes a failed run. Its settlement is
committed as soon as the store accepts it: while the store refuses writes for
a passing reason (a full disk, a lock held by another process) it is tried
again every :data:`SETTLE_RETRY` seconds, logged once. It is abandoned — the
job stays ``running`` in the store, and crash recovery runs it again at the
next start — when the store's fault is permanent (a corrupt page: retrying
would wedge the lane for good), or when the daemon is stopping (after one
more try: a stop stays bounded). Either way :class:`UnsettledError` says so.
A settle the store refuses because the claim was lost (a shared store's fence:
another node recovered the job meanwhile) is logged and dropped: that result
belongs to nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Final

import attrs

from ductile.app.dispatch_log import log_route_depth, log_settlement
from ductile.app.runtime import Runtime
from ductile.app.spawn import job_request_parts, plugin_env, spawn_request
from ductile.domain.classify import RunEnd, classify
from ductile.domain.errors import DuctileError
from ductile.domain.job import Job
from ductile.domain.outcome import NotRun, NotStarted, Outcome, SpawnOutcome
from ductile.domain.plugin import Plugin
from ductile.domain.protocol import PROTOCOL_V1
from ductile.domain.settle import SettleContext
from ductile.log import Log
from ductile.ports.catalog import Catalog
from ductile.ports.clock import Clock
from ductile.ports.inbox import Inbox
from ductile.ports.spawner import ProcessHandle, Spawner
from ductile.ports.store import Committed, PermanentStoreError, StaleJobError, Store, StoreFaultError

_log = Log("dispatcher")
#: Seconds between two tries to record a job's end while the store refuses writes.
SETTLE_RETRY: Final = 1.0


def _user(runtime: Runtime, plugin: str) -> str | None:
    run_as = runtime.config.run_as(plugin)
    return run_as[0] if run_as is not None else None


class UnsettledError(DuctileError):
    """A run's end could not be recorded (permanent store fault, or a stop): the job stays
    ``running`` in the store and crash recovery runs it again at the next start. Logged already."""


def _run_end(outcome: Outcome, timeout: timedelta, protocol: int) -> RunEnd:
    """What settle decides from: a spawn that failed for lack of resources is no attempt of the
    plugin (issue 19, item 11); any other spawn outcome is classified."""
    if isinstance(outcome, SpawnOutcome):
        if outcome.out_of_resources:
            return NotStarted(reason=outcome.spawn_error or "no resources to start the plugin")
        return classify(outcome, timeout, protocol=protocol)
    return outcome


@attrs.frozen(kw_only=True)
class Dispatcher:
    store: Store
    spawner: Spawner
    clock: Clock
    inbox: Inbox
    catalog: Catalog
    draw: Callable[[], float]
    #: The environment every plugin starts from (see :func:`ductile.app.spawn.plugin_env`).
    base_env: Mapping[str, str]
    #: Run plugins under a watchdog bound to their claim's deadline (a shared store, ADR 0035).
    watchdog: bool = False
    #: The process group of each job in flight here (a fenced node kills them).
    in_flight: dict[str, ProcessHandle] = attrs.field(factory=dict)
    #: The daemon's whole environment, where ``env.pass`` names are looked up.
    environ: Mapping[str, str] = attrs.field(factory=dict)
    #: Set when the daemon stops: a settle the store refuses is tried once more, then abandoned.
    halt: asyncio.Event = attrs.field(factory=asyncio.Event)
    #: The engine's lock (claims, ticks and reloads never overlap): held by a settle that claims.
    claim_lock: asyncio.Lock = attrs.field(factory=asyncio.Lock)

    async def claim(self, runtime: Runtime, now: datetime) -> Job | None:
        """The oldest runnable job whose lane has room, now running; None when there is none."""
        return await self.store.claim_next(now, lanes=runtime.lanes())

    async def idle_wait(self, *, found_nothing_at: datetime | None = None) -> float:
        """Seconds the dispatcher may wait for work: until the next retry, at most 1 s
        (so another process's enqueue is noticed within a second). A retry that was already
        due when a claim found nothing (``found_nothing_at``) waits for its lane: a worker
        ending or the inbox wakes the dispatcher before the second is up."""
        nxt = await self.store.next_retry_at()
        if nxt is None or (found_nothing_at is not None and nxt <= found_nothing_at):
            return 1.0
        return max(0.0, min(1.0, (nxt - self.clock.now()).total_seconds()))

    async def run(
        self, job: Job, runtime: Runtime, *, then: Callable[[], Runtime | None] | None = None
    ) -> Committed | None:
        """Run a claimed job under ``runtime`` (the one it was claimed with) and commit its end;
        None when the claim was lost meanwhile (the fence refused the settle). With ``then``, the
        settle's own unit also claims the next job (``Committed.next_job``) in the lanes of the
        runtime ``then()`` names (None: claim nothing now); see :meth:`_settle_once`."""
        settings = runtime.settings(job.plugin)
        timeout = settings.timeouts.for_command(job.command)
        plugin = runtime.plugins.get(job.plugin)
        try:
            outcome: Outcome = await self._execute(job, runtime)
        except Exception as e:  # e.g. the store could not read the state: fail the run, never strand it
            _log.bind(plugin=job.plugin, job_id=job.id).exception("could not prepare the run")
            outcome = SpawnOutcome(spawn_error=f"internal error: {e!r}")
        ctx = SettleContext(
            now=self.clock.now(),
            draw=self.draw(),
            retry=settings.retry,
            breaker=settings.circuit_breaker,
            routes=runtime.config.routes,
            targets=runtime.targets(),
            max_route_depth=runtime.config.service.max_route_depth,
            fact=plugin.manifest.fact_rule(job.command) if plugin is not None else None,
            alerts=runtime.alerts(),
        )
        protocol = plugin.protocol if plugin is not None else PROTOCOL_V1
        # Classified here, not in the store's unit: parsing stdout holds no write transaction.
        end = _run_end(outcome, timeout, protocol)
        try:
            committed = await self._settle(
                job, functools.partial(self._settle_once, job, end, ctx, runtime, then)
            )
        except StaleJobError as e:
            _log.bind(plugin=job.plugin, job_id=job.id).warning(
                f"claim lost, result discarded: {e}", claim_token=job.claim_token
            )
            return None
        if _log.enabled_for(logging.ERROR):  # the highest level there: nothing is built unheard
            log_settlement(job, outcome, committed)
        if committed.settlement.too_deep:
            await log_route_depth(
                self.store, job, committed.settlement, runtime.config.service.max_route_depth
            )
        if any(r.created for r in (*committed.children, *committed.alerts)):
            self.inbox.notify()
        return committed

    async def _execute(self, job: Job, runtime: Runtime) -> Outcome:
        job_log = _log.bind(plugin=job.plugin, job_id=job.id)
        reason = runtime.why_not_runnable(job.plugin, job.command)
        plugin: Plugin | None = runtime.plugins.get(job.plugin)
        if reason is None and plugin is not None:
            refused = self.catalog.verify(plugin)
            if refused is not None:
                reason = f"plugin '{job.plugin}' refused before spawn: {refused}"
        if reason is not None or plugin is None:
            return NotRun(reason=reason or f"plugin '{job.plugin}' is not loaded")
        # Read here for the request, and again by the store inside the settle unit: that
        # one decides on the rows as they are then (ADR 0007).
        state = await self.store.get_state(job.plugin)
        depth = runtime.config.service.max_route_depth
        event, payload, context = job_request_parts(job, protocol=plugin.protocol, max_route_depth=depth)
        spawn = spawn_request(
            plugin,
            job.command,
            job_id=job.id,
            attempt=job.attempt,
            settings=runtime.settings(job.plugin),
            state=state,
            now=self.clock.now(),
            base_env=self._env_of(job.plugin, runtime),
            event=event,
            payload=payload,
            context=context,
            watchdog=self._left(job, runtime) if self.watchdog else None,
            user=_user(runtime, job.plugin),
        )

        async def remember(handle: ProcessHandle) -> None:
            self.in_flight[job.id] = handle
            try:
                await self.store.record_process(job.id, handle, token=job.claim_token)
            except Exception:  # the run goes on; recovery just cannot kill this group
                job_log.exception("could not record the process group of a running job")

        if job_log.enabled_for(logging.DEBUG):
            job_log.debug(f"running {job.command} (attempt {job.attempt} of {job.max_attempts})")
        try:
            return await self.spawner.run(spawn, on_start=remember)
        except Exception as e:  # a bug in the spawner must not lose the job
            job_log.exception("the spawner failed")
            return SpawnOutcome(spawn_error=f"internal error: {e!r}")
        finally:
            self.in_flight.pop(job.id, None)

    def _left(self, job: Job, runtime: Runtime) -> float | None:
        """Seconds left of the claim's hold: the claim was made at ``started_at`` on this clock."""
        hold = runtime.lanes().hold(job.plugin)
        if hold is None or job.started_at is None:
            return None
        return (job.started_at + hold - self.clock.now()).total_seconds()

    def _env_of(self, name: str, runtime: Runtime) -> Mapping[str, str]:
        """The plugin's environment: the shared allow-listed one, unless it passes or sets more."""
        extra = runtime.config.env_of(name)
        if not extra.passed and not extra.values:
            return self.base_env
        return plugin_env(self.environ, extra)

    async def _settle(self, job: Job, once: Callable[[], Awaitable[Committed]]) -> Committed:
        """Commit the settlement, trying ``once`` (:meth:`_settle_once`) until the store takes it
        (see the module's docs): the job stays ``running`` in the store while this waits, and
        crash recovery would pick it up if we died."""
        job_log = _log.bind(plugin=job.plugin, job_id=job.id)
        tries = 0
        while True:
            halting = self.halt.is_set()
            try:
                committed = await once()
            except StaleJobError:
                raise
            except Exception as e:
                tries += 1
                self._settle_failed(job_log, e, tries=tries, halting=halting)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.halt.wait(), SETTLE_RETRY)
                continue
            if tries:
                job_log.info(f"the end of the job was recorded, after {tries} failed tries")
            return committed

    async def _settle_once(
        self,
        job: Job,
        end: RunEnd,
        ctx: SettleContext,
        runtime: Runtime,
        then: Callable[[], Runtime | None] | None,
    ) -> Committed:
        """One try to commit the end; with ``then``, claim the next job in the same unit (one
        write transaction per job, ADR 0068) while holding the engine's lock, so the claim never
        overlaps a tick or a reload. The lock is never waited for: while a tick or a reload holds
        it, or the daemon stops, the settle claims nothing and the dispatcher claims as usual."""
        ttl = runtime.config.service.dedupe_ttl
        if then is None or self.claim_lock.locked() or self.halt.is_set():
            return await self.store.settle(job.id, end, ctx=ctx, dedupe_ttl=ttl, token=job.claim_token)
        async with self.claim_lock:
            under = then()
            return await self.store.settle(
                job.id,
                end,
                ctx=ctx,
                dedupe_ttl=ttl,
                token=job.claim_token,
                then_claim=under.lanes() if under is not None else None,
            )

    def _settle_failed(self, job_log: Log, error: Exception, *, tries: int, halting: bool) -> None:
        """Log a failed settle once; raise :class:`UnsettledError` when it is abandoned."""
        fault = isinstance(error, StoreFaultError)
        left = "it stays 'running' in the database and crash recovery runs it again at the next start"
        if isinstance(error, PermanentStoreError):
            job_log.critical(f"could not record the end of the job: {error}; {left}")
            raise UnsettledError(f"job {job_log.context.get('job_id')}: {error}") from error
        if halting:
            job_log.error(f"could not record the end of the job before stopping: {error}; {left}")
            raise UnsettledError(f"job {job_log.context.get('job_id')}: {error}") from error
        if tries == 1:
            job_log.log(
                logging.WARNING if fault else logging.ERROR,
                f"could not record the end of the job: {error}; trying again every {SETTLE_RETRY:g} s "
                "until the store accepts it",
                exc_info=None if fault else error,
            )
