"""ScriptedSpawner keeps the requests it ran, unless told not to (a simulation runs too many)."""

from __future__ import annotations

import asyncio

from ductile.fakes import ScriptedSpawner
from ductile.fakes.spawner import ok
from ductile.ports.spawner import SpawnRequest


def _request() -> SpawnRequest:
    return SpawnRequest(executable="/p/run", cwd="/p", stdin=b'{"command":"poll"}', env={}, timeout=5.0)


def test_the_requests_are_kept_by_default_and_not_when_told() -> None:
    for record, kept in ((True, 1), (False, 0)):
        spawner = ScriptedSpawner({"/p/run": lambda _: ok()}, record=record)
        outcome = asyncio.run(spawner.run(_request()))
        assert outcome.exit_code == 0
        assert len(spawner.calls) == kept
        assert spawner.requests_for("/p/run") == [{"command": "poll"}] * kept
