"""Membership: the daemon's life among the others on a shared store (ADR 0034).

:class:`Membership` runs the cluster loop of a daemon whose engine has a
:class:`~ductile.ports.cluster.Cluster`: every ``store.heartbeat`` it renews
the node's lease and the leadership (:meth:`Cluster.beat`, bounded by the
heartbeat itself), tells the engine whether it leads (the singleton duties)
and whether its config agrees with the leader's (claims wait otherwise), and,
as the leader, recovers the jobs of dead peers every :data:`SWEEP_EVERY`
seconds (and once at start, leader or not).

**The fence.** When a renewal says the lease is gone (peers declared this
node dead: it was frozen, or cut off), or no renewal succeeded for two thirds
of a lease (measured on this host's monotonic clock from the last renewal
sent), the node fences itself: it stops claiming, SIGKILLs the process groups
of its runs in flight (their settles then either record a failure, or are
refused by the claim token if a peer took the job over), waits a bounded
while for its workers, registers again under a **new** node id (an expired
lease is never revived), recovers its instance's claims at once (as at
start) and claims again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection

from ductile.app.engine import Engine
from ductile.log import Log
from ductile.ports.cluster import Beat, Cluster

_log = Log("cluster")

#: Seconds between two peer-recovery sweeps of the leader.
SWEEP_EVERY = 5.0


class Membership:
    """The cluster loop of one daemon (see the module's docs)."""

    def __init__(
        self,
        engine: Engine,
        cluster: Cluster,
        *,
        workers: Callable[[], Collection[asyncio.Task[None]]],
        stopping: Callable[[], bool],
        on_leading: Callable[[], None],
    ) -> None:
        self.engine = engine
        self.cluster = cluster
        self._workers = workers
        self._stopping = stopping
        self._on_leading = on_leading
        self.fences = 0
        self._failing: str | None = None

    def _timings(self) -> tuple[float, float]:
        store = self.engine.runtime.config.store
        lease = store.lease.total_seconds()
        return store.heartbeat.total_seconds(), lease * 2 / 3

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        last_ok = loop.time()  # the store registered the node with a fresh lease
        next_sweep = loop.time()
        first = True  # every node sweeps once at start, leader or not
        while not self._stopping():
            heartbeat, fence_after = self._timings()
            started = loop.time()
            beat = await self._beat(heartbeat)
            if beat is not None and beat.alive:
                last_ok = started
                self._apply(beat)
            elif beat is not None or started - last_ok > fence_after:
                why = (
                    "its lease was gone (peers declared this node dead)"
                    if beat is not None
                    else f"no lease renewal succeeded for {started - last_ok:.1f} s"
                )
                await self.fence(why)
                last_ok = loop.time()
                next_sweep = loop.time()
                continue
            if started >= next_sweep:
                if self.engine.leading or first:
                    await self._sweep()
                await self._strays()
                next_sweep = started + SWEEP_EVERY
            first = False
            await asyncio.sleep(max(0.0, started + heartbeat - loop.time()))

    async def _beat(self, heartbeat: float) -> Beat | None:
        try:
            beat = await asyncio.wait_for(self.cluster.beat(self.engine.fingerprint()), timeout=heartbeat)
        except Exception as e:  # the database is away: the lease runs on, the fence decides
            reason = f"{type(e).__name__}: {e}"
            if self._failing is None:
                _log.warning(f"could not renew this node's lease ({reason}); retrying every heartbeat")
            self._failing = reason
            return None
        if self._failing is not None:
            _log.info("lease renewed again", node=self.cluster.node)
            self._failing = None
        return beat

    def _apply(self, beat: Beat) -> None:
        engine = self.engine
        if beat.leading != engine.leading:
            _log.info(
                "this node leads now" if beat.leading else "this node no longer leads", node=self.cluster.node
            )
            engine.leading = beat.leading
            if beat.leading:
                self._on_leading()
        if beat.agreed != engine.agreed:
            if beat.agreed:
                _log.info("this node's config is the leader's again: claiming", node=self.cluster.node)
            else:
                _log.error(
                    "this node's config differs from the leader's: it claims nothing until they agree "
                    "(the same config file and plugins on every host; ductile reload on each)",
                    node=self.cluster.node,
                    leader=beat.leader,
                )
            engine.agreed = beat.agreed
        engine.claiming = beat.agreed

    async def _sweep(self) -> None:
        try:
            await self.engine.recover_peers()
        except Exception:
            _log.exception("peer recovery failed; trying again at the next sweep")

    async def _strays(self) -> None:
        try:
            for s in await self.engine.recover_strays():
                _log.warning(
                    "a claim this node never heard of was given back (its commit's answer was lost)",
                    plugin=s.job.plugin,
                    job_id=s.job.id,
                )
        except Exception:
            _log.exception("could not look for stray claims; trying again at the next sweep")

    async def fence(self, why: str) -> None:
        """Stop claiming, kill this node's runs, rejoin under a new id, recover, claim again."""
        engine = self.engine
        old = self.cluster.node
        self.fences += 1
        engine.claiming = False
        engine.leading = False
        killed = await engine.kill_in_flight()
        _log.error(
            f"fenced: {why}; claims stopped, {len(killed)} plugin group(s) killed, rejoining under a new id",
            node=old,
            pgids=killed,
        )
        heartbeat, _ = self._timings()
        workers = list(self._workers())
        if workers:
            await asyncio.wait(workers, timeout=engine.runtime.config.store.lease.total_seconds())
        while not self._stopping():
            try:
                node = await self.cluster.rejoin(engine.fingerprint())
                break
            except Exception as e:
                _log.warning(f"could not rejoin yet ({type(e).__name__}: {e}); retrying")
                await asyncio.sleep(heartbeat)
        else:
            return
        await engine.recover()
        engine.claiming = engine.agreed
        _log.warning("rejoined the cluster under a new id", node=node, previous=old)
