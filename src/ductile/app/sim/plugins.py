"""The simulated plugins: what one run of a :class:`Behaviour` prints, and what the model expects.

The ScriptedSpawner runs one script per plugin (:meth:`PluginScripts.script_for`).
A run reads the request the engine built (command, job id, state), follows the
plugin's behaviour (or a forced one), draws what it needs from the run's one
random source, tells the monitor what it produced (an :class:`Expectation`, the
model's input), and answers with the outcome a real plugin would have produced.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from ductile.app.sim.behaviour import GARBAGE, Behaviour, Kind, behaviour_for
from ductile.app.sim.invariants import Expectation
from ductile.app.sim.trace import ref
from ductile.domain.job import Command
from ductile.domain.outcome import SpawnOutcome
from ductile.domain.protocol import EmittedEvent
from ductile.domain.routing import Route
from ductile.ports.spawner import SpawnRequest

if TYPE_CHECKING:
    from ductile.app.sim.simulation import Simulation

Verdict = Literal["ok", "retryable", "fatal"]


class PluginScripts:
    """Every simulated plugin's script, following the simulation's behaviours."""

    def __init__(self, sim: Simulation) -> None:
        self._sim = sim
        #: Behaviours the next runs follow instead of their plugins' own (one each, in order).
        self.forced: list[Behaviour] = []
        self._texts: dict[int, tuple[Behaviour, str]] = {}
        self._auto_emit: tuple[tuple[Route, ...], dict[str, tuple[str, ...]]] = (sim.config.routes, {})

    def script_for(self, plugin: str) -> Callable[[SpawnRequest], SpawnOutcome]:
        """The script of ``plugin``'s executable; an alias shares it and is told apart by the
        ``DUCTILE_PLUGIN`` the engine sets for each instance."""

        def run(request: SpawnRequest) -> SpawnOutcome:
            return self._perform(request.env.get("DUCTILE_PLUGIN") or plugin, request)

        return run

    def auto_emit(self, plugin: str) -> tuple[str, ...]:
        """The event types the plugin's routes listen for (the default of ``ok``)."""
        routes, cache = self._auto_emit
        if routes is not self._sim.config.routes:  # a reload: derive again
            routes, cache = self._sim.config.routes, {}
            self._auto_emit = (routes, cache)
        found = cache.get(plugin)
        if found is None:
            found = cache[plugin] = tuple(sorted({r.event_type for r in routes if r.source == plugin}))
        return found

    def _perform(self, plugin: str, request: SpawnRequest) -> SpawnOutcome:
        sim = self._sim
        body = json.loads(request.stdin)
        command = str(body["command"])
        job_id = str(body["job_id"])
        attempt = int(request.env.get("DUCTILE_ATTEMPT", "0"))
        behaviour = self.forced.pop(0) if self.forced else behaviour_for(sim.behaviours, plugin, command)
        state = body.get("state") or {}
        outcome, expectation = self.outcome(plugin, command, behaviour, state, request.timeout)
        sim.monitor.on_spawned(job_id, attempt, expectation)
        sim.note(f"run {ref(job_id)} {plugin}.{command} [{expectation.behaviour}] -> {expectation.verdict}")
        return outcome

    def _text(self, behaviour: Behaviour) -> str:
        known = self._texts.get(id(behaviour))
        if known is None or known[0] is not behaviour:  # str() once per behaviour, not per run
            known = self._texts[id(behaviour)] = (behaviour, str(behaviour))
        return known[1]

    def outcome(
        self, plugin: str, command: str, behaviour: Behaviour, state: Mapping[str, Any], timeout: float
    ) -> tuple[SpawnOutcome, Expectation]:
        """What one run prints (or how it ends), and what the model expects of it."""
        took = behaviour.duration.total_seconds()
        kind = behaviour.kind
        text = self._text(behaviour)
        if kind is Kind.TIMEOUT:
            return SpawnOutcome(timed_out=True, duration=timeout), Expectation("retryable", behaviour=text)
        if kind is Kind.EXIT78:
            outcome = SpawnOutcome(
                exit_code=78, stderr_tail=b"simulated: exit 78 (EX_CONFIG)\n", duration=took
            )
            return outcome, Expectation("fatal", behaviour=text)
        if kind is Kind.GARBAGE:
            outcome = SpawnOutcome(exit_code=0, stdout=self._sim.rng.choice(GARBAGE), duration=took)
            return outcome, Expectation("retryable", behaviour=text)
        if kind is Kind.ERROR or (kind is Kind.FLAKY and self._sim.rng.random() < behaviour.rate):
            return _failure(behaviour, took, timeout, text)
        body, events = self._success(plugin, command, behaviour, state)
        outcome = SpawnOutcome(exit_code=0, stdout=json.dumps(body).encode(), duration=took)
        if took > timeout:  # the spawner kills it at the deadline: a timeout, whatever it would have said
            return outcome, Expectation("retryable", behaviour=text)
        return outcome, Expectation("ok", events=events, behaviour=text)

    def _success(
        self, plugin: str, command: str, behaviour: Behaviour, state: Mapping[str, Any]
    ) -> tuple[dict[str, Any], tuple[EmittedEvent, ...]]:
        """``ok``: the body that adds 1 to the state's count and emits the behaviour's events
        (``init``: neither), and those events."""
        body: dict[str, Any] = {"status": "ok"}
        if command == Command.INIT:
            return body, ()
        count = state.get("count", 0)
        count = count + 1 if isinstance(count, int) else 1
        if behaviour.emit is not None:
            types = behaviour.emit
        else:  # by default only polls emit: a handler that re-emitted could loop forever
            types = self.auto_emit(plugin) if command == Command.POLL else ()
        events = tuple(
            EmittedEvent(
                type=t,
                payload={"n": count},
                dedupe_key=f"{t}-{count // behaviour.dedupe}" if behaviour.dedupe else None,
            )
            for t in types
        )
        body["state_updates"] = {"count": count}
        body["events"] = [
            {"type": e.type, "payload": e.payload, **({"dedupe_key": e.dedupe_key} if e.dedupe_key else {})}
            for e in events
        ]
        return body, events


def _failure(
    behaviour: Behaviour, took: float, timeout: float, text: str
) -> tuple[SpawnOutcome, Expectation]:
    """``error`` (or a failing ``flaky`` run): ``{"status": "error"}``, retryable unless fatal."""
    kind = behaviour.kind
    fatal = kind is Kind.ERROR and behaviour.fatal
    body = {"status": "error", "error": f"simulated {kind} failure", "retry": not fatal}
    outcome = SpawnOutcome(exit_code=0, stdout=json.dumps(body).encode(), duration=took)
    verdict: Verdict = "fatal" if fatal else "retryable"
    if took > timeout:
        verdict = "retryable"
    return outcome, Expectation(verdict, behaviour=text)
