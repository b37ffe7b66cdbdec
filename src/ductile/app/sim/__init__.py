"""Deterministic simulation: the real engine on fakes, driven by one seed.

A :class:`Simulation` runs the very :class:`~ductile.app.engine.Engine` the
daemon runs — ``start`` (crash recovery), ``tick``, ``dispatch_one``,
``enqueue``, ``reload`` — on a :class:`~ductile.fakes.FakeClock`, a
:class:`~ductile.fakes.ScriptedSpawner` whose plugins follow
:class:`Behaviour` values, and an :class:`~ductile.fakes.InMemoryStore` or a
real :class:`~ductile.adapters.sqlite.SqliteStore` in a temporary
directory. There is no thread of its own and no real sleep: a simulated week
takes as long as the work done in it.

Everything random comes from ONE ``random.Random(seed)``: the engine's draws
(jitter, backoff), job ids, the plugins' outcomes, arrival instants, faults.
The same seed gives the same run, line for line (see :attr:`SimulationResult.trace_hash`).

Faults: every call the engine makes on the Store and the Spawner goes through
a proxy that numbers it and can raise :class:`SimulatedCrash` before or after
forwarding it (at the k-th call, or with a seeded probability per call). A
crash throws the engine away, keeps the store (the InMemoryStore object as
is; SQLite closed and reopened from its file) and starts a new engine on it —
``start()`` runs crash recovery exactly as after ``kill -9``.

The same proxies feed a :class:`~ductile.app.sim.monitor.Monitor` that keeps
an independent ledger of every job and checks the invariants I1-I8 (each a
function in :mod:`~ductile.app.sim.invariants`, citing the SPEC) after every
port call and every step. A failing invariant raises :class:`InvariantError`,
whose message holds the one command that replays it.

Run one seed of the canonical scenario::

    python -m ductile.app.sim --seed 1234 --scenario sweep

``ductile simulate`` runs an operator's own config through the same machinery
and prints what would happen (:mod:`ductile.app.cli.simulate`); the simulation
never imports the command line.

The package, in reading order: :mod:`~ductile.app.sim.behaviour` (what a
simulated plugin does), :mod:`~ductile.app.sim.plugins` (one run of a
behaviour), :mod:`~ductile.app.sim.catalog` (the plugins without a
filesystem), :mod:`~ductile.app.sim.faults` (the settings of crashes,
arrivals and reloads), :mod:`~ductile.app.sim.agenda` (arrivals and reloads
at their instants), :mod:`~ductile.app.sim.trace`,
:mod:`~ductile.app.sim.invariants`, :mod:`~ductile.app.sim.ledger` and
:mod:`~ductile.app.sim.monitor` (what is known of each job, and the checks),
:mod:`~ductile.app.sim.proxies` (the observed ports and the crash switch),
:mod:`~ductile.app.sim.simulation` (the loop), :mod:`~ductile.app.sim.results`
and :mod:`~ductile.app.sim.scenarios`.
"""

from ductile.app.sim.behaviour import (
    BEHAVIOUR_SYNTAX,
    Behaviour,
    BehaviourError,
    Kind,
    behaviour_for,
    parse_assignment,
    parse_behaviour,
    split_key,
)
from ductile.app.sim.catalog import SimCatalog, sim_manifest
from ductile.app.sim.faults import CRASH_POINTS, Arrivals, CrashPoint, Faults, Reload, SimulatedCrash
from ductile.app.sim.invariants import INVARIANTS, InvariantError
from ductile.app.sim.ledger import RunNote, SimEvent
from ductile.app.sim.results import JobReport, PluginStats, SimulationResult
from ductile.app.sim.scenarios import SCENARIOS, Scenario, quiet_scenario, run_scenario, sweep_scenario
from ductile.app.sim.simulation import STORE_KINDS, Simulation, StoreKind

__all__ = [
    "BEHAVIOUR_SYNTAX",
    "CRASH_POINTS",
    "INVARIANTS",
    "SCENARIOS",
    "STORE_KINDS",
    "Arrivals",
    "Behaviour",
    "BehaviourError",
    "CrashPoint",
    "Faults",
    "InvariantError",
    "JobReport",
    "Kind",
    "PluginStats",
    "Reload",
    "RunNote",
    "Scenario",
    "SimCatalog",
    "SimEvent",
    "SimulatedCrash",
    "Simulation",
    "SimulationResult",
    "StoreKind",
    "behaviour_for",
    "parse_assignment",
    "parse_behaviour",
    "quiet_scenario",
    "run_scenario",
    "sim_manifest",
    "split_key",
    "sweep_scenario",
]
