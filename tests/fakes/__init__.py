"""The fakes live in ``ductile.fakes`` (the simulation ships them); re-exported here for tests."""

from ductile.fakes import DictCatalog, FakeClock, FakeInbox, InMemoryStore, ScriptedSpawner

__all__ = ["DictCatalog", "FakeClock", "FakeInbox", "InMemoryStore", "ScriptedSpawner"]
