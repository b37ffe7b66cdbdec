"""Taking over another store's contents, for ``ductile store copy`` (the target side).

One transaction: every job in the source's insertion order (so FIFO and the
sequence of ``seq`` are kept) with its transitions and runs, the plugin
states, breakers and the schedule index. Refused, untouched, when the target
already holds jobs, states or plans: a copy never merges two histories.
"""

from __future__ import annotations

from typing import Any

import attrs
import psycopg

from ductile.adapters.postgres import sql
from ductile.adapters.postgres.errors import StoreError
from ductile.adapters.postgres.rows import (
    breaker_params,
    job_params,
    planned_params,
    run_params,
    transition_params,
)
from ductile.adapters.postgres.schema import migrate, redact
from ductile.domain.state import serialize_state
from ductile.ports.store_values import StoreDump


@attrs.frozen(kw_only=True)
class Loaded:
    jobs: int
    transitions: int
    runs: int
    states: int
    breakers: int
    planned: int


def load(url: str, source: StoreDump) -> Loaded:
    """Write ``source`` into the empty PostgreSQL database at ``url`` (migrated first)."""
    where = redact(url)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn, where)
            with conn.transaction():
                _refuse_unless_empty(conn, where)
                _write(conn, source)
    except psycopg.OperationalError as e:
        raise StoreError(f"{where}: the copy failed: {e}; nothing was written") from e
    return Loaded(
        jobs=len(source.jobs),
        transitions=len(source.transitions),
        runs=len(source.runs),
        states=len(source.states),
        breakers=len(source.breakers),
        planned=len(source.planned),
    )


def _refuse_unless_empty(conn: psycopg.Connection[Any], where: str) -> None:
    for table in ("jobs", "plugin_state", "planned", "breakers"):
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608 - a fixed name
        if row is not None and row[0]:
            raise StoreError(
                f"{where}: the target already holds {row[0]} row(s) in {table}; a copy goes into an "
                "empty database only (nothing was written)"
            )


def _write(conn: psycopg.Connection[Any], source: StoreDump) -> None:
    with conn.cursor() as cursor:
        cursor.executemany(sql.INSERT_JOB, [job_params(j) for j in source.jobs])
        cursor.executemany(sql.INSERT_TRANSITION, [transition_params(t) for t in source.transitions])
        cursor.executemany(sql.INSERT_RUN, [run_params(r, plugin) for r, plugin in source.runs])
        cursor.executemany(
            sql.PUT_STATE,
            [(plugin, serialize_state(state).decode()) for plugin, state in source.states.items()],
        )
        cursor.executemany(sql.PUT_BREAKER, [breaker_params(b) for b in source.breakers])
        cursor.executemany(sql.PUT_PLANNED, [planned_params(p) for p in source.planned])
