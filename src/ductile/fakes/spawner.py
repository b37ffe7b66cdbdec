"""ScriptedSpawner: a Spawner whose plugins are Python functions.

A script receives the :class:`SpawnRequest` and returns a
:class:`SpawnOutcome`; the run takes ``outcome.duration`` seconds of a
FakeClock's time (capped at the deadline plus grace, where a real spawner
would have killed it), so timeouts cost simulated time, not real time. By
default the run moves the clock itself (one run at a time: the serial
dispatcher), and ``while_running``, when set, is awaited with the run's end
instant before the clock gets there: what else happens while the plugin runs
(the simulation delivers webhooks then, as a daemon whose dispatcher is busy
receives them). ``concurrent=True`` sleeps on the clock instead, so several
runs overlap and whoever drives the clock decides when they end (the
simulation's lanes).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from ductile.domain.outcome import SpawnOutcome
from ductile.fakes.clock import FakeClock
from ductile.ports.spawner import OnStart, ProcessHandle, SpawnRequest

Script = Callable[[SpawnRequest], SpawnOutcome]


def ok(**fields: Any) -> SpawnOutcome:
    """An outcome carrying ``{"status": "ok", **fields}``."""
    return SpawnOutcome(exit_code=0, stdout=json.dumps({"status": "ok", **fields}).encode())


def error(message: str, *, retry: bool = True, exit_code: int = 0) -> SpawnOutcome:
    body = {"status": "error", "error": message, "retry": retry}
    return SpawnOutcome(exit_code=exit_code, stdout=json.dumps(body).encode())


class ScriptedSpawner:
    def __init__(
        self,
        scripts: dict[str, Script] | None = None,
        *,
        clock: FakeClock | None = None,
        concurrent: bool = False,
    ) -> None:
        #: Keyed by the request's ``executable``.
        self.scripts: dict[str, Script] = dict(scripts or {})
        self.clock = clock
        self.concurrent = concurrent
        self.calls: list[SpawnRequest] = []
        self.killed: list[ProcessHandle] = []
        #: When each run asleep on the clock (``concurrent``) wakes up.
        self._wakes: list[datetime] = []
        #: Awaited with the run's end instant while the run takes its time (see the module's docs).
        self.while_running: Callable[[datetime], Awaitable[None]] | None = None
        self._pid = 1000

    def script(self, executable: str, script: Script) -> None:
        self.scripts[executable] = script

    async def run(self, request: SpawnRequest, *, on_start: OnStart | None = None) -> SpawnOutcome:
        self.calls.append(request)
        script = self.scripts.get(request.executable)
        if script is None:
            # Like a failed exec: no process ever existed, so ``on_start`` is not called.
            return SpawnOutcome(spawn_error=f"no such file: {request.executable}")
        self._pid += 1
        if on_start is not None:
            await on_start(ProcessHandle(pid=self._pid, pgid=self._pid, start_time=self._pid))
        outcome = script(request)
        if outcome.timed_out or outcome.duration > request.timeout:
            outcome = SpawnOutcome(
                timed_out=True,
                stderr_tail=outcome.stderr_tail,
                duration=request.timeout,
            )
        if self.clock is not None and outcome.duration > 0:
            end = self.clock.now() + timedelta(seconds=outcome.duration)
            if self.concurrent:
                self._wakes.append(end)
                try:
                    await self.clock.sleep_until(end)
                finally:
                    self._wakes.remove(end)
            else:
                if self.while_running is not None:
                    await self.while_running(end)
                self.clock.set(max(end, self.clock.now()))
        return outcome

    def asleep(self) -> int:
        """Runs asleep on the clock (``concurrent``) that it has not reached yet: the others are
        runnable, or about to be, or done."""
        if self.clock is None:
            return 0
        now = self.clock.now()
        return sum(1 for wake in self._wakes if wake > now)

    async def kill_orphan(self, handle: ProcessHandle) -> bool:
        self.killed.append(handle)
        return False

    def requests_for(self, executable: str) -> list[dict[str, Any]]:
        """The decoded request bodies sent to one plugin, in order."""
        return [json.loads(r.stdin) for r in self.calls if r.executable == executable]
