"""The errors of the SQLite store: every one is a :class:`StoreError`.

The faults of the machine are also the port's :class:`~ductile.ports.store_faults.StoreFaultError`:
transient (:class:`StoreBusyError`, :class:`StoreFullError`, :class:`StoreIOError`) or permanent
(:class:`StoreCorruptError`), so the app tells them apart without knowing SQLite.
"""

from __future__ import annotations

from ductile.domain.errors import DuctileError
from ductile.ports.store_faults import PermanentStoreError, TransientStoreError


class StoreError(DuctileError):
    """The SQLite store could not do what was asked (locked, full disk, bad file...)."""


class SchemaVersionError(StoreError):
    """The database was written by a newer ductile: this one refuses to touch it."""


class MigrationError(StoreError):
    """A migration step failed; the database was rolled back to its old version."""


class StoreBusyError(StoreError, TransientStoreError):
    """The database stayed locked by another connection for longer than ``busy_timeout``."""

    kind = "busy"


class StoreFullError(StoreError, TransientStoreError):
    """The disk (or the filesystem) holding the database is full; ``needed`` bytes would let it go on."""

    kind = "full"

    def __init__(self, message: str, *, needed: int | None = None) -> None:
        super().__init__(message)
        #: Free bytes the database needs to move its write-ahead log in and carry on (None: unknown).
        self.needed = needed


class StoreIOError(StoreError, TransientStoreError):
    """The disk reported an I/O error, or the file became read-only or unreachable."""

    kind = "io"


class StoreCorruptError(StoreError, PermanentStoreError):
    """The database file is damaged (a corrupt page) or is not a database at all."""

    kind = "corrupt"


class StoreClosedError(StoreError):
    """The store was used before :meth:`SqliteStore.open` finished or after :meth:`SqliteStore.close`."""
