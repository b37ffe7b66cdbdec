"""The fakes live in ``ductile.fakes`` (the simulation ships them); re-exported here for tests."""

from ductile.fakes import FakeClock, FakeInbox, InMemoryStore, ScriptedSpawner

__all__ = ["FakeClock", "FakeInbox", "InMemoryStore", "ScriptedSpawner"]
