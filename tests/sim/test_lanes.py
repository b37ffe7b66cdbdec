"""Lanes in the simulation (D14 [A2]): several runs at once, in seeded interleavings.

The ``lanes`` scenario is the sweep with four workers, handlers three and two
wide, a counter two wide, runs of minutes, three times the deliveries and a
reload that may go back to one worker. Every invariant holds for every seed
(I1-I8 as in the sweep, and I9, I10 of the lanes); the scenario reaches what
it should (overlapping runs, a crash with several runs in flight); the same
seed gives the same trace; and planted bugs in the lanes are caught by the
invariant that names them. Replay a seed with::

    python -m ductile.app.sim --seed <N> --scenario lanes
"""

from __future__ import annotations

import asyncio
import collections
import re
from datetime import datetime

import pytest

from ductile.app.sim import InvariantError, SimulationResult, run_scenario
from ductile.app.sim.lane_checks import check_identities
from ductile.app.sim.scenarios import lanes_scenario
from ductile.domain.job import Job
from ductile.fakes import InMemoryStore
from ductile.fakes.memory_tx import MemoryTx
from tests.support.builders import job as make_job

SEEDS = range(40)


def _run(seed: int) -> SimulationResult:
    return asyncio.run(run_scenario("lanes", seed))


@pytest.mark.parametrize("seed", SEEDS)
def test_every_invariant_holds_with_lanes_for_seed(seed: int) -> None:
    result = _run(seed)
    assert result.jobs, "the scenario ran nothing"
    unfinished = [
        j.id for j in result.jobs if j.created_at < result.end and j.status.value not in ("succeeded", "dead")
    ]
    assert not unfinished


def _overlap(result: SimulationResult) -> collections.Counter[str]:
    """The most runs of each plugin seen in flight at once (from the runs' start and end)."""
    edges: list[tuple[datetime, int, str]] = []
    for job in result.jobs:
        for run in job.runs:
            if run.started_at is not None and run.finished_at > run.started_at:
                edges += [(run.started_at, 1, job.plugin), (run.finished_at, -1, job.plugin)]
    now: collections.Counter[str] = collections.Counter()
    most: collections.Counter[str] = collections.Counter()
    for _, step, plugin in sorted(edges, key=lambda e: (e[0], e[1])):
        now[plugin] += step
        most[plugin] = max(most[plugin], now[plugin])
    return most


def test_the_lanes_scenario_exercises_what_it_claims_to() -> None:
    """Overlapping runs of one plugin, several plugins at once, a crash with several runs in
    flight (recovered together), and lanes never wider than configured."""
    widths = {"mailer": 3, "archive": 2, "counter": 2}
    most: collections.Counter[str] = collections.Counter()
    several_recovered = 0
    for seed in range(8):
        result = _run(seed)
        for plugin, count in _overlap(result).items():
            most[plugin] = max(most[plugin], count)
            assert count <= widths.get(plugin, 1), f"seed {seed}: {count} runs of {plugin} at once"
        recovered: collections.Counter[str] = collections.Counter(
            line[:24] for line in result.trace if re.search(r" recover \w+ ", line)
        )
        several_recovered += sum(1 for n in recovered.values() if n > 1)
    assert most["mailer"] >= 2, dict(most)
    assert most["archive"] >= 2, dict(most)
    assert several_recovered > 0, "no crash caught several runs in flight in 8 seeds"


def test_the_same_seed_gives_the_same_interleaving() -> None:
    assert _run(7).trace_hash == _run(7).trace_hash
    assert _run(7).trace_hash != _run(8).trace_hash


# --------------------------------------------------------------------------- planted bugs


class BlindToRunningJobs(MemoryTx):
    """A claim that sees nothing running (every lane looks empty, every slot free), and a
    store that forgot its constraints."""

    def in_flight(self) -> list[Job]:
        return []

    def _check_constraints(self, job: Job) -> None:
        pass


def _first_error(tx: MemoryTx, seeds: range) -> tuple[int, InvariantError] | None:
    scenario = lanes_scenario()
    for seed in seeds:
        sim = scenario.simulation(seed, memory_store=InMemoryStore(type(tx)()))
        try:
            asyncio.run(sim.run(scenario.until()))
        except InvariantError as error:
            return seed, error
    return None


def _expect(code: str, tx: MemoryTx, seeds: range = range(6)) -> InvariantError:
    caught = _first_error(tx, seeds)
    assert caught is not None, f"no seed of {list(seeds)} caught the planted bug with {code}"
    seed, error = caught
    assert error.code.split()[0] == code, f"expected {code}, got: {error}"
    assert f"--seed {seed} --scenario lanes" in str(error)
    return error


def test_i9_catches_a_claim_that_overfills_a_lane() -> None:
    error = _expect("I9", BlindToRunningJobs())
    assert "lane is" in error.detail or "hold one slot" in error.detail or "max_workers" in error.detail


def test_i10_catches_two_runs_of_one_dedupe_identity() -> None:
    """I10's check on a hand-made set of running jobs. The simulation can no longer reach two
    runs of one identity through a store that is only blind at the claim: since D1's amendment
    (a running job absorbs a duplicate) no second job of a running identity is ever queued, so
    a planted claim bug has nothing to claim. The claim's fence stays as defence in depth
    against racing nodes; the store contracts test it (test_store_lanes_contract.py)."""
    first, second = (
        make_job("first", "mailer", "handle", dedupe_key="k"),
        make_job("second", "mailer", "handle", dedupe_key="k"),
    )
    other_key, no_key = (
        make_job("third", "mailer", "handle", dedupe_key="j"),
        make_job("fourth", "mailer", "handle"),
    )
    elsewhere = make_job("fifth", "archive", "handle", dedupe_key="k")  # another plugin: another identity
    assert check_identities([first, other_key, no_key, elsewhere]) == []
    [problem] = check_identities([first, other_key, second, no_key, elsewhere])
    assert "run at once" in problem
    assert "first" in problem
    assert "second" in problem


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("seed", range(40, 1040))
def test_every_invariant_holds_with_lanes_for_many_seeds(seed: int) -> None:
    test_every_invariant_holds_with_lanes_for_seed(seed)
