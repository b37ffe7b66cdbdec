"""A store that rewrites a job's past is caught (I2): the monitor checks a job's whole
transition log at every read, not only what it gained since the last one.

(An incremental check, only the entries added since the last read, was measured and not
kept: a job's log has 3 to 6 entries, and checking it whole costs 2.0 us a read against 2.4 us
for the bookkeeping of what was already checked; docs/benchmarks.md §22. A tail-only check
would miss this planted store.)
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import attrs
import pytest

from ductile.app.sim import InvariantError, quiet_scenario
from ductile.domain.job import Transition
from ductile.fakes import InMemoryStore
from ductile.fakes.memory_tx import MemoryTx


class RewritesHistory(MemoryTx):
    """Moves the claim of every job's first run back before the job existed, once the job has
    run: a past the monitor checked when it was written, changed behind it."""

    def add_transition(self, transition: Transition) -> None:
        super().add_transition(transition)
        history = self.transitions[transition.job_id]
        if len(history) == 3:
            history[1] = attrs.evolve(history[1], at=history[0].at - timedelta(hours=1))


def test_a_rewritten_past_is_caught() -> None:
    scenario = quiet_scenario()
    sim = scenario.simulation(3, days=1.0, memory_store=InMemoryStore(RewritesHistory()))
    with pytest.raises(InvariantError) as caught:
        asyncio.run(sim.run(scenario.until(1.0)))
    assert caught.value.code.startswith("I2"), str(caught.value)
    assert "goes back in time" in caught.value.detail
