"""Lanes in the simulation: several jobs in flight at once, in seeded interleavings.

With ``service.max_workers`` above 1 (in the config or in one a reload may
switch to) the simulation drives the engine as the daemon does: it claims
while a worker is free (:meth:`~ductile.app.engine.Engine.claim_one`) and runs
each claimed job in a task of its own
(:meth:`~ductile.app.engine.Engine.run_claimed`). The
:class:`~ductile.fakes.ScriptedSpawner` then sleeps on the fake clock instead
of moving it, so runs overlap; a run ends when the clock reaches its end.

Each step, the :class:`Workers` choose among what may happen *now* — a tick
that is due, an arrival that is due, a claim while a worker is free — with the
run's one random source (the serial simulation's fixed order is one of the
interleavings it explores), and move the clock to the next instant anything
can happen (a run's end included) only when nothing may happen now. After
every step the tasks run until each is asleep in its plugin or done, so the
world between steps is settled and the invariants can be checked. A step that
itself waits for a run (an ``init`` at start or reload) is driven the same way:
while everything sleeps, the clock jumps to the next wake-up, as the serial
spawner moves it. A crash in
one task (a port call of that run) is a crash of the whole process: every
other task is cancelled where it stands — its run is lost, as after ``kill
-9`` — and the engine restarts on the same store, whose recovery finds
several running orphans.

Lanes are simulated on the in-memory stores only: a real SQLite store answers
from its threads, which would make the interleavings depend on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from ductile.app.sim.faults import SimulatedCrash

if TYPE_CHECKING:
    from ductile.app.engine import Claimed
    from ductile.app.sim.faults import Reload
    from ductile.app.sim.simulation import Simulation
    from ductile.domain.config import Config


def with_lanes(config: Config, reloads: Sequence[Reload]) -> bool:
    """Whether the run needs lanes: the config, or one a reload may switch to, runs several jobs at once."""
    configs = [config, *(c for reload in reloads for _, c in reload.choices)]
    return any(c.service.max_workers > 1 for c in configs)


T = TypeVar("T")

#: Turns of the event loop a settle waits, at most, for the tasks to fall asleep (a bug otherwise).
MAX_SETTLE_TURNS = 100_000


class Workers:
    """The jobs in flight in a simulation with lanes, and the steps that move them."""

    def __init__(self, sim: Simulation) -> None:
        self._sim = sim
        #: The task of each job in flight, by job id.
        self._tasks: dict[str, asyncio.Task[Claimed | None]] = {}
        #: Runs stopped in flight by crashes so far (beside the one each crash struck).
        self.killed = 0

    @property
    def in_flight(self) -> frozenset[str]:
        """The ids of the jobs whose runs are in flight (claimed, not yet settled or lost)."""
        return frozenset(self._tasks)

    def capacity(self) -> int:
        return self._sim.config.service.max_workers

    # ------------------------------------------------------------- the steps
    async def next_step(self, end: datetime | None) -> bool:
        """One step: a tick, an arrival or a claim, drawn among those that may happen now; or,
        when none may, the clock to the next instant something can. True when that was
        progress (a job claimed, time moving, a run ending)."""
        sim = self._sim
        now = sim.clock.now()
        options: list[str] = []
        if now >= sim.next_tick:
            options.append("tick")
        due = sim.agenda.next_at()
        if due is not None and due <= now:
            options.append("arrive")
        if not sim.idle and len(self._tasks) < self.capacity():
            options.append("claim")
        if not options:
            return await self._advance(end, due)
        choice = options[0] if len(options) == 1 else sim.rng.choice(options)
        if choice == "tick":
            await sim.step(sim.tick_action)
            return False
        if choice == "arrive":
            await sim.apply_next()
            return False
        before = len(self._tasks)
        completed = await sim.step(self._claim)
        return completed and len(self._tasks) > before

    async def _claim(self) -> None:
        sim = self._sim
        assert sim.engine is not None
        claimed = await sim.engine.claim_one()
        if claimed is None:
            sim.idle = True
            return
        self._start(claimed)

    def _start(self, claimed: Claimed) -> None:
        """Run a claimed job in a task of its own; its settle claims the next job, as the
        daemon's worker does (ADR 0068), which :meth:`_reap` starts in turn."""
        assert self._sim.engine is not None
        self._tasks[claimed.job.id] = asyncio.ensure_future(self._sim.engine.run_claimed(claimed, chain=True))

    async def _advance(self, end: datetime | None, due: datetime | None) -> bool:
        """Move the clock to the next instant anything can happen: a tick, an arrival, a retry,
        the end, or the end of a run in flight (whose task then goes on, within a step)."""
        sim = self._sim
        now = sim.clock.now()
        retry_at = await sim.next_retry()
        # A retry already due that the claim passed by waits for its lane: not a next instant.
        candidates = [
            c
            for c in (sim.next_tick, retry_at, due, end, sim.clock.next_wakeup())
            if c is not None and c > now
        ]
        if not candidates:
            return False  # nothing can happen any more: the stall check reports it
        target = min(candidates)
        sim.idle = False

        async def move() -> None:
            sim.clock.set(target)

        await sim.step(move)
        return True

    async def drive(self, action: Callable[[], Awaitable[T]]) -> T:
        """Run ``action`` while the tasks in flight run too, until it is done and each task is
        asleep in its plugin's run or done. When everything sleeps while ``action`` still waits
        (a run of its own: ``init``), the clock jumps to the next wake-up. A task that ended
        frees its worker; one that raised (a crash at its port call, an invariant) raises here."""
        main = asyncio.ensure_future(action())
        spawner = self._sim.spawner
        clock = self._sim.clock
        try:
            for _ in range(MAX_SETTLE_TURNS):
                self._reap()
                live = len(self._tasks) + (0 if main.done() else 1)
                if live <= spawner.asleep():
                    if main.done():
                        return main.result()
                    if not clock.jump():  # pragma: no cover - a run sleeps, so a wake-up is pending
                        raise RuntimeError("the simulation waits for a run that never ends")
                await asyncio.sleep(0)
            raise RuntimeError(f"{live} simulated run(s) neither sleep nor end (a bug)")
        finally:
            if not main.done():
                main.cancel()
                with contextlib.suppress(BaseException):
                    await main

    def _reap(self) -> None:
        for job_id, task in list(self._tasks.items()):
            if not task.done():
                continue
            del self._tasks[job_id]
            self._sim.idle = False
            if task.cancelled():
                continue
            error = task.exception()
            if error is not None:
                raise error
            following = task.result()
            if following is not None:  # the settle claimed the next job: this worker runs it
                self._start(following)

    async def kill(self) -> None:
        """``kill -9``: every run in flight stops where it stands (its result is never recorded)."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        self.killed += len(tasks)
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:  # a run that had already crashed or failed on its own: lost with the rest
            if isinstance(result, BaseException) and not isinstance(
                result, asyncio.CancelledError | SimulatedCrash
            ):
                raise result
