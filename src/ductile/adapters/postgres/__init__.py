"""The Store port on PostgreSQL, for daemons on more than one host (ADR 0033, 0034).

* :mod:`~ductile.adapters.postgres.schema`: the tables and their migrations;
* :mod:`~ductile.adapters.postgres.sql`: every statement the store runs;
* :mod:`~ductile.adapters.postgres.rows`: domain values <-> rows;
* :mod:`~ductile.adapters.postgres.tx`: ``PgTx``, the Tx with real locks;
* :mod:`~ductile.adapters.postgres.store`: :class:`PostgresStore` itself;
* :mod:`~ductile.adapters.postgres.cluster`: nodes, leases, leadership, peer recovery;
* :mod:`~ductile.adapters.postgres.inbox`: wake-ups through ``LISTEN``/``NOTIFY``.

The driver (psycopg 3 and its pool) is the optional ``postgres`` extra: this
package imports it only when a module above is imported, and
:func:`require_driver` names the extra when it is missing.
"""

from __future__ import annotations

import importlib.util

from ductile.adapters.postgres.errors import MISSING_DRIVER, DriverMissingError

#: The modules of the ``postgres`` extra.
DRIVER_MODULES = ("psycopg", "psycopg_pool")


def require_driver() -> None:
    """Raise :class:`DriverMissingError` naming the ``postgres`` extra when psycopg is missing."""
    missing = [name for name in DRIVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise DriverMissingError(f"{MISSING_DRIVER} (missing: {', '.join(missing)})")
