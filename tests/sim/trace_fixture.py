"""The trace hashes of fixed seeds, recorded so that a restructure can prove it changed nothing.

A trace is the simulation's line-by-line account of everything the engine did
(each port call, each decision, each invariant check point); its hash is a
function of the seed, the scenario and the code's behaviour. ``trace_hashes.json``
holds the hashes of:

* ``sweep/memory``: the 500 seeds of the default sweep (checked by
  ``test_seed_sweep.py`` as it runs them, at no extra cost);
* ``sweep/indexed``: seeds 0-49 on the indexed fake (equal to ``sweep/memory``);
* ``sweep/sqlite``: seeds 0-19 on real SQLite, 0.25 simulated days;
* ``quiet/memory``: seeds 0-19 of the quiet scenario.

A change that moves a hash on purpose (say, a unified event-id scheme)
regenerates the file in its own commit, whose message names the change:

    python -m tests.sim.trace_fixture --write
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

FIXTURE = Path(__file__).with_name("trace_hashes.json")

#: (key, scenario, store, simulated days or None for the scenario's own, seeds)
SETS: tuple[tuple[str, str, str, float | None, range], ...] = (
    ("sweep/memory", "sweep", "memory", None, range(500)),
    ("sweep/indexed", "sweep", "indexed", None, range(50)),
    ("sweep/sqlite", "sweep", "sqlite", 0.25, range(20)),
    ("quiet/memory", "quiet", "memory", None, range(20)),
)


def trace_hash(scenario: str, store: str, days: float | None, seed: int) -> str:
    from ductile.app.sim import run_scenario

    result = asyncio.run(run_scenario(scenario, seed, store=store, days=days))  # type: ignore[arg-type]
    return result.trace_hash


def load() -> dict[str, dict[str, str]]:
    recorded: dict[str, dict[str, str]] = json.loads(FIXTURE.read_text())
    return recorded


def compute() -> Iterator[tuple[str, int, str]]:
    for key, scenario, store, days, seeds in SETS:
        for seed in seeds:
            yield key, seed, trace_hash(scenario, store, days, seed)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--write", action="store_true", help="record the hashes of the code as it is now")
    args = parser.parse_args()
    table: dict[str, dict[str, str]] = {}
    for key, seed, digest in compute():
        table.setdefault(key, {})[str(seed)] = digest
    if args.write:
        FIXTURE.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
        print(f"wrote {FIXTURE}")
        return
    recorded = load()
    moved = [(k, s) for k, rows in table.items() for s, h in rows.items() if recorded.get(k, {}).get(s) != h]
    print(f"{len(moved)} hash(es) moved" + (f": {moved[:10]}" if moved else ""))


if __name__ == "__main__":
    main()
