"""Small, real implementations of the ports, for tests and the simulation.

They live in the package (not only under ``tests/``) because ``ductile
simulate`` is a product feature that runs on them. Each passes the same
contract suite as the adapter it stands in for.
"""

from ductile.fakes.catalog import DictCatalog
from ductile.fakes.clock import FakeClock
from ductile.fakes.inbox import FakeInbox
from ductile.fakes.memory_store import InMemoryStore
from ductile.fakes.spawner import ScriptedSpawner

__all__ = ["DictCatalog", "FakeClock", "FakeInbox", "InMemoryStore", "ScriptedSpawner"]
