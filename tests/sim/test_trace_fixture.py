"""Recorded traces: the indexed fake, real SQLite and the quiet scenario still
produce, seed for seed, the traces recorded in ``trace_hashes.json``.

(The 500 ``sweep/memory`` seeds are checked by ``test_seed_sweep.py``, which
runs them anyway.) A hash that moves means behaviour moved: if that was the
purpose of a change, regenerate the file in its own commit (see
``tests/sim/trace_fixture.py``).
"""

from __future__ import annotations

import pytest

from tests.sim.trace_fixture import SETS, load, trace_hash

RECORDED = load()
CASES = [
    pytest.param(key, scenario, store, days, seed, id=f"{key}/{seed}")
    for key, scenario, store, days, seeds in SETS
    if key != "sweep/memory"
    for seed in seeds
]


def test_the_fixture_covers_every_set() -> None:
    for key, _, _, _, seeds in SETS:
        assert sorted(RECORDED[key], key=int) == [str(s) for s in seeds]


def test_the_indexed_fake_records_the_plain_fakes_traces() -> None:
    memory = RECORDED["sweep/memory"]
    assert all(memory[seed] == digest for seed, digest in RECORDED["sweep/indexed"].items())


@pytest.mark.parametrize(("key", "scenario", "store", "days", "seed"), CASES)
def test_the_trace_is_the_recorded_one(
    key: str, scenario: str, store: str, days: float | None, seed: int
) -> None:
    assert trace_hash(scenario, store, days, seed) == RECORDED[key][str(seed)]
