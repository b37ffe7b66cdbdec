"""The errors of the SQLite store: every one is a :class:`StoreError`."""

from __future__ import annotations

from ductile.domain.errors import DuctileError


class StoreError(DuctileError):
    """The SQLite store could not do what was asked (locked, full disk, bad file...)."""


class SchemaVersionError(StoreError):
    """The database was written by a newer ductile: this one refuses to touch it."""


class MigrationError(StoreError):
    """A migration step failed; the database was rolled back to its old version."""


class StoreBusyError(StoreError):
    """The database stayed locked by another connection for longer than ``busy_timeout``."""


class StoreClosedError(StoreError):
    """The store was used before :meth:`SqliteStore.open` finished or after :meth:`SqliteStore.close`."""
