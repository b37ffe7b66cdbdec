"""The errors of the PostgreSQL store: every one is a :class:`StoreError`, a DuctileError.

Nothing here imports the driver: the message that names the missing extra
(:data:`MISSING_DRIVER`) is given before psycopg is ever imported.
"""

from __future__ import annotations

from ductile.domain.errors import DuctileError

#: What a config with ``store.url`` gets when psycopg is not installed.
MISSING_DRIVER = (
    "store.url names a PostgreSQL database, but its driver is not installed: "
    "pip install 'ductile[postgres]' (psycopg 3 and psycopg-pool)"
)


class StoreError(DuctileError):
    """The PostgreSQL store could not do what was asked (unreachable, refused, misconfigured...)."""


class DriverMissingError(StoreError):
    """psycopg (the ``postgres`` extra) is not installed."""


class SchemaVersionError(StoreError):
    """The database was written by a newer ductile: this one refuses to touch it."""


class MigrationError(StoreError):
    """A migration step failed; the database was rolled back to its old version."""


class StoreBusyError(StoreError):
    """No connection of the pool came free in time (too many units at once, or the server is away)."""


class StoreClosedError(StoreError):
    """The store was used before it was opened or after it was closed."""
