"""The engine's life: start (crash recovery, discovery, ``init``), reload, and catching the store up.

A runtime is built whole (discovery, then ``init`` where due) before it is
used; what it implies for the store (queued jobs of plugins that went away
cancelled, the schedule index re-planned) is carried out afterwards, and
idempotently: a step the store refuses stays pending and is retried at the
next tick, under the runtime in force.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import attrs

from ductile.app.runtime import InitState, PluginState, PluginStatus, Runtime
from ductile.domain.config import Config
from ductile.domain.job import Actor, Command, Job, JobStatus, SubmittedBy
from ductile.domain.lifecycle import Alerts
from ductile.domain.plugin import Discovery
from ductile.domain.schedule import plan_next
from ductile.domain.settle import Settlement
from ductile.log import Log
from ductile.ports.catalog import Catalog
from ductile.ports.clock import Clock
from ductile.ports.cluster import Cluster
from ductile.ports.inbox import Inbox
from ductile.ports.spawner import Spawner
from ductile.ports.store import Committed, InitRecord, Store

_recovery_log = Log("recovery")
_plugins_log = Log("plugins")
_reload_log = Log("reload")
_scheduler_log = Log("scheduler")

#: Runs a claimed job under a runtime and commits its end (the dispatcher's :meth:`run`).
RunClaimed = Callable[[Job, Runtime], Awaitable[Committed | None]]


def _cancel_reason(status: PluginStatus) -> str:
    """Why the queued jobs of a plugin that went away with a reload are cancelled."""
    if status.state is PluginState.REFUSED:
        return f"plugin refused: {status.reason}"
    if status.state is PluginState.DISABLED:
        return "plugin disabled"
    return "plugin removed"


@attrs.frozen(kw_only=True)
class ReloadReport:
    cancelled: Mapping[str, tuple[str, ...]]
    added: tuple[str, ...]
    removed: tuple[str, ...]
    unhealthy: Mapping[str, str]


@attrs.frozen(kw_only=True)
class Switch:
    """A reload's new runtime, built whole, and the plugins it added and removed."""

    runtime: Runtime
    added: tuple[str, ...]
    removed: tuple[str, ...]


@attrs.define(kw_only=True)
class Lifecycle:
    store: Store
    spawner: Spawner
    clock: Clock
    inbox: Inbox
    catalog: Catalog
    draw: Callable[[], float]
    new_id: Callable[[], str]
    run: RunClaimed
    #: A shared store (ADR 0034): the leader plans the schedules, in its ticks, not every node at start.
    shared: bool = False
    #: Consequences of the last reload still to be written (see :meth:`reconcile`).
    _pending_cancel: dict[str, str] = attrs.field(factory=dict, init=False)
    _schedules_dirty: bool = attrs.field(default=False, init=False)

    # ----------------------------------------------------------------- start-up
    def discover(self, config: Config) -> Discovery:
        """The plugins ``config`` names, found and judged (each refusal logged)."""
        discovery = self.catalog.discover(config)
        self._log_discovery(discovery)
        return discovery

    async def start(self, config: Config, discovery: Discovery | None = None) -> Runtime:
        """Discovery (unless given), ``init`` where due, schedules: the runtime to start with."""
        if discovery is None:
            discovery = self.discover(config)
        unhealthy = await self._run_inits(Runtime(config=config, discovery=discovery))
        runtime = Runtime(config=config, discovery=discovery, unhealthy=unhealthy)
        if self.shared:
            self._schedules_dirty = True
        else:
            await self._sync_schedules(runtime, started=True)
        return runtime

    async def recover(self, alerts: Alerts | None = None) -> list[Settlement]:
        """Crash recovery (D6): kill orphaned process groups, settle the orphans (their
        ``job.recovered`` and ``job.dead`` events routed by ``alerts``)."""
        for orphan in await self.store.running():
            if orphan.process is not None:
                killed = await self.spawner.kill_orphan(orphan.process)
                if killed:
                    _recovery_log.bind(plugin=orphan.job.plugin, job_id=orphan.job.id).warning(
                        "killed the process group of an orphaned job", pgid=orphan.process.pgid
                    )
        settlements = await self.store.recover(self.clock.now(), alerts=alerts)
        for s in settlements:
            job = s.job
            job_log = _recovery_log.bind(plugin=job.plugin, job_id=job.id)
            if job.status is JobStatus.QUEUED:
                job_log.warning(f"orphaned job re-queued (attempt {job.attempt} of {job.max_attempts})")
            else:
                job_log.error(f"orphaned job is dead: {job.last_error}")
        if settlements:
            self.inbox.notify()
        return settlements

    async def recover_peers(self, cluster: Cluster, alerts: Alerts | None = None) -> list[Settlement]:
        """Peer recovery (ADR 0034): the running jobs of nodes that are not live, past their
        deadline and the margin, settled as interrupted; logged like the orphans of D6."""
        settlements = await cluster.sweep(self.clock.now(), alerts=alerts)
        for s in settlements:
            job = s.job
            job_log = _recovery_log.bind(plugin=job.plugin, job_id=job.id)
            if job.status is JobStatus.QUEUED:
                job_log.warning(
                    f"job of a dead node re-queued (attempt {job.attempt} of {job.max_attempts})",
                    node=job.node,
                )
            else:
                job_log.error(f"job of a dead node is dead: {job.last_error}", node=job.node)
        if settlements:
            self.inbox.notify()
        return settlements

    def _log_discovery(self, discovery: Discovery) -> None:
        for name, plugin in sorted(discovery.plugins.items()):
            _plugins_log.info(f"plugin loaded (version {plugin.manifest.version})", plugin=name)
        for refusal in discovery.refused:
            _plugins_log.error(f"plugin refused: {refusal.reason}", plugin=refusal.name)

    # ----------------------------------------------------------------- init (D5)
    async def _run_inits(self, provisional: Runtime) -> dict[str, str]:
        """Run ``init`` where it is due (see :meth:`Runtime.init_status`) under
        ``provisional``, a runtime not yet in force. Returns the plugins left unhealthy."""
        config = provisional.config
        unhealthy: dict[str, str] = {}
        for name, plugin in sorted(provisional.plugins.items()):
            if not plugin.supports(Command.INIT):
                continue
            status = provisional.init_status(name, await self.store.get_init(name))
            if status.state is InitState.OK:
                continue
            now = self.clock.now()
            job = Job(
                id=self.new_id(),
                plugin=name,
                command=Command.INIT,
                max_attempts=1,
                submitted_by=SubmittedBy.API,
                created_at=now,
            )
            await self.store.enqueue(job, actor=Actor.API, now=now, dedupe_ttl=config.service.dedupe_ttl)
            claimed = await self.store.claim(job.id, self.clock.now(), lanes=provisional.lanes())
            if claimed is None:  # pragma: no cover - we just created it
                continue
            committed = await self.run(claimed, provisional)
            error: str | None
            if committed is None:  # the claim was lost (a shared store fenced this node)
                ok, error = False, "the claim of init was lost before its end was recorded"
            else:
                ok = committed.settlement.succeeded
                error = None if ok else (committed.settlement.job.last_error or "init failed")
            await self.store.put_init(
                InitRecord(
                    plugin=name, fingerprint=status.fingerprint, ok=ok, error=error, at=self.clock.now()
                )
            )
            init_log = _plugins_log.bind(plugin=name, job_id=job.id)
            if not ok:
                assert error is not None
                unhealthy[name] = f"init failed: {error}"
                init_log.error(f"plugin unhealthy, not scheduled: init failed: {error}")
            else:
                init_log.info("plugin initialized")
        return unhealthy

    # ----------------------------------------------------------------- reload (D13)
    async def switch(self, old: Runtime, config: Config) -> Switch:
        """Build the runtime of ``config`` (discovery, ``init`` where due) and note
        what it implies for the store, for :meth:`reconcile` to carry out."""
        discovery = self.discover(config)
        gone = sorted(set(old.plugins) - set(discovery.plugins))
        provisional = Runtime(config=config, discovery=discovery)
        for name in gone:
            self._pending_cancel[name] = _cancel_reason(provisional.status_of(name))
        unhealthy = await self._run_inits(provisional)
        runtime = Runtime(config=config, discovery=discovery, unhealthy=unhealthy)
        self._schedules_dirty = True
        added = tuple(sorted(set(discovery.plugins) - set(old.plugins)))
        _reload_log.info("configuration reloaded", added=list(added), removed=gone)
        return Switch(runtime=runtime, added=added, removed=tuple(gone))

    @property
    def pending(self) -> bool:
        """Whether the store has yet to catch up with the last reload."""
        return bool(self._pending_cancel) or self._schedules_dirty

    async def reconcile(self, runtime: Runtime) -> dict[str, tuple[str, ...]]:
        """Carry out what the current runtime implies for the store; idempotent.

        Errors are logged and the work stays pending for the next tick.
        """
        cancelled: dict[str, tuple[str, ...]] = {}
        try:
            for name, reason in sorted(self._pending_cancel.items()):
                if name in runtime.plugins:  # came back before we got to it
                    del self._pending_cancel[name]
                    continue
                ids = await self.store.cancel_queued(
                    name, reason=reason, now=self.clock.now(), alerts=runtime.alerts()
                )
                del self._pending_cancel[name]
                cancelled[name] = tuple(ids)
                _reload_log.warning(f"{reason}: {len(ids)} queued job(s) cancelled", plugin=name)
            if self._schedules_dirty:
                await self._sync_schedules(runtime)
                self._schedules_dirty = False
        except Exception:
            _reload_log.exception(
                "could not apply the configuration to the store yet; retrying at the next tick"
            )
        return cancelled

    async def _sync_schedules(self, runtime: Runtime, *, started: bool = False) -> None:
        """Make the schedule index match ``runtime``: plan new or changed
        schedules, drop the ones that went away. Unchanged ones keep their plan
        (a one-shot that is done stays done), except that when the daemon has
        just ``started`` every ``after`` one-shot is planned again from now."""
        now = self.clock.now()
        schedules = runtime.schedules()
        for stale in await self.store.all_planned():
            if stale.key not in schedules:
                await self.store.delete_planned(stale.key)
        for key, schedule in sorted(schedules.items()):
            entry = await self.store.planned(key)
            again = started and schedule.after is not None
            if entry is not None and entry.fingerprint == schedule.fingerprint() and not again:
                continue
            run = plan_next(schedule, key=key, previous=None if again else entry, now=now, draw=self.draw())
            await self.store.put_planned(run)
            _scheduler_log.info(
                f"schedule planned: next run at {run.planned_at.isoformat()}",
                plugin=run.plugin,
                schedule=run.schedule_id,
            )
