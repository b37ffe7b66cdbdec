"""The Store port on SQLite: one file, WAL, a writer thread with group commit.

* :mod:`~ductile.adapters.sqlite.schema`: the tables and their migrations;
* :mod:`~ductile.adapters.sqlite.sql`: every statement the store runs;
* :mod:`~ductile.adapters.sqlite.rows`: domain values <-> rows;
* :mod:`~ductile.adapters.sqlite.worker`: the writer (group commit) and reader threads;
* :mod:`~ductile.adapters.sqlite.store`: :class:`SqliteStore` itself.
"""

from ductile.adapters.sqlite.errors import (
    MigrationError,
    SchemaVersionError,
    StoreBusyError,
    StoreClosedError,
    StoreError,
)
from ductile.adapters.sqlite.schema import SCHEMA_VERSION
from ductile.adapters.sqlite.store import SqliteStore
from ductile.adapters.sqlite.worker import WriterStats

__all__ = [
    "SCHEMA_VERSION",
    "MigrationError",
    "SchemaVersionError",
    "SqliteStore",
    "StoreBusyError",
    "StoreClosedError",
    "StoreError",
    "WriterStats",
]
