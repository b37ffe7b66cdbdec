"""The PostgreSQL schema of :class:`~ductile.adapters.postgres.PostgresStore` and its migrations.

The version lives in ``ductile_schema``; :data:`MIGRATIONS` is the whole
history (step *i* takes the database from version *i* to *i + 1*). Opening an
older database applies the missing steps in **one** transaction (PostgreSQL's
DDL is transactional: all or nothing), under a transaction-scoped advisory
lock, so two daemons starting at once migrate it once. A database of a newer
ductile is refused untouched.

The tables are SQLite's (``adapters/sqlite/schema.py``) in PostgreSQL's types:
instants are ``timestamptz`` (microseconds: an exact round trip of Python's
datetimes), JSON stays compact ``text`` (byte for byte what the domain
serialised), run output is ``bytea``, ``seq`` an identity column. Beside them:

* on ``jobs``, the claim's facts (ADR 0032): ``claim_token``, ``slot``, ``node``,
  ``deadline_at`` (on the database's clock), and ``claimed_instance``;
* ``processes.instance``: a process group means something on one host only;
* ``inits`` keyed by (instance, plugin): ``init`` prepares one host's plugin;
* ``activity``: the log of what happened (the operator API's stream), its ids
  given in commit order from ``activity_last``;
* ``nodes`` (one row per running daemon, a lease on the database's clock) and
  ``leadership`` (one lease row for the singleton duties), ADR 0034.

Constraints hold the invariants whatever a node believes: one running job per
(plugin, slot) and per dedupe identity; one child per (parent, event, plugin,
command); unique ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from ductile.adapters.postgres.errors import MigrationError, SchemaVersionError

Migration = tuple[str, ...]

_V1: Migration = (
    """
    CREATE TABLE jobs (
        seq              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id               text        NOT NULL UNIQUE,
        plugin           text        NOT NULL,
        command          text        NOT NULL,
        payload          text        NOT NULL,
        status           text        NOT NULL CHECK (status IN
                             ('queued', 'running', 'succeeded', 'failed', 'timed_out', 'dead')),
        attempt          integer     NOT NULL CHECK (attempt >= 1),
        max_attempts     integer     NOT NULL CHECK (max_attempts >= 1),
        submitted_by     text        NOT NULL,
        dedupe_key       text,
        created_at       timestamptz NOT NULL,
        started_at       timestamptz,
        completed_at     timestamptz,
        next_retry_at    timestamptz,
        last_error       text,
        parent_job_id    text,
        source_event_id  text,
        claim_token      bigint      NOT NULL DEFAULT 0 CHECK (claim_token >= 0),
        slot             integer,
        node             text,
        deadline_at      timestamptz,
        claimed_instance text,
        retry_of         text,
        schedule_id      text,
        route_depth      integer     NOT NULL DEFAULT 0 CHECK (route_depth >= 0)
    )
    """,
    "CREATE INDEX jobs_claimable ON jobs (created_at, seq) WHERE status = 'queued'",
    "CREATE INDEX jobs_retry ON jobs (next_retry_at) WHERE status = 'queued' AND next_retry_at IS NOT NULL",
    "CREATE INDEX jobs_running ON jobs (created_at, seq) WHERE status = 'running'",
    "CREATE INDEX jobs_finished ON jobs (completed_at) WHERE status IN ('succeeded', 'dead')",
    "CREATE INDEX jobs_pair ON jobs (plugin, command, status)",
    "CREATE INDEX jobs_dedupe ON jobs (plugin, command, dedupe_key, status) WHERE dedupe_key IS NOT NULL",
    """
    CREATE UNIQUE INDEX jobs_child ON jobs (parent_job_id, source_event_id, plugin, command)
        WHERE parent_job_id IS NOT NULL AND source_event_id IS NOT NULL
    """,
    "CREATE INDEX jobs_created ON jobs (created_at, seq)",
    "CREATE INDEX jobs_plugin_created ON jobs (plugin, created_at, seq)",
    "CREATE INDEX jobs_status_created ON jobs (status, created_at, seq)",
    "CREATE INDEX jobs_schedule ON jobs (plugin, schedule_id, status) WHERE schedule_id IS NOT NULL",
    "CREATE INDEX jobs_command_created ON jobs (command, created_at, seq)",
    "CREATE INDEX jobs_submitted_created ON jobs (submitted_by, created_at, seq)",
    "CREATE INDEX jobs_parent ON jobs (parent_job_id, created_at, seq) WHERE parent_job_id IS NOT NULL",
    "CREATE UNIQUE INDEX jobs_running_slot ON jobs (plugin, slot) WHERE status = 'running'",
    """
    CREATE UNIQUE INDEX jobs_running_identity ON jobs (plugin, command, dedupe_key)
        WHERE status = 'running' AND dedupe_key IS NOT NULL
    """,
    "CREATE INDEX jobs_running_instance ON jobs (claimed_instance) WHERE status = 'running'",
    """
    CREATE TABLE transitions (
        seq         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        job_id      text        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        from_status text,
        to_status   text        NOT NULL,
        reason      text        NOT NULL,
        actor       text        NOT NULL,
        at          timestamptz NOT NULL
    )
    """,
    "CREATE INDEX transitions_job ON transitions (job_id, seq)",
    """
    CREATE TABLE runs (
        seq          bigint           GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        job_id       text             NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        attempt      integer          NOT NULL,
        started_at   timestamptz,
        finished_at  timestamptz      NOT NULL,
        duration     double precision NOT NULL,
        exit_code    integer,
        signal       integer,
        timed_out    boolean          NOT NULL,
        error        text,
        stderr_tail  bytea            NOT NULL,
        stdout_head  bytea            NOT NULL,
        logs         text             NOT NULL,
        result       text,
        plugin       text             NOT NULL
    )
    """,
    "CREATE INDEX runs_job ON runs (job_id, seq)",
    "CREATE INDEX runs_finished ON runs (finished_at, seq)",
    "CREATE INDEX runs_plugin_finished ON runs (plugin, finished_at, seq)",
    """
    CREATE TABLE processes (
        job_id     text    PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
        pid        integer NOT NULL,
        pgid       integer NOT NULL,
        start_time bigint  NOT NULL,
        instance   text    NOT NULL
    )
    """,
    "CREATE TABLE plugin_state (plugin text PRIMARY KEY, state text NOT NULL)",
    """
    CREATE TABLE breakers (
        plugin    text        NOT NULL,
        command   text        NOT NULL,
        status    text        NOT NULL CHECK (status IN ('closed', 'open', 'half_open')),
        failures  integer     NOT NULL,
        opened_at timestamptz,
        probe_at  timestamptz,
        PRIMARY KEY (plugin, command)
    )
    """,
    """
    CREATE TABLE inits (
        instance    text        NOT NULL,
        plugin      text        NOT NULL,
        fingerprint text        NOT NULL,
        ok          boolean     NOT NULL,
        error       text,
        at          timestamptz NOT NULL,
        PRIMARY KEY (instance, plugin)
    )
    """,
    """
    CREATE TABLE planned (
        key         text        PRIMARY KEY,
        fingerprint text        NOT NULL,
        nominal_at  timestamptz NOT NULL,
        planned_at  timestamptz NOT NULL,
        offset_us   bigint      NOT NULL,
        snapped     boolean     NOT NULL
    )
    """,
    "CREATE INDEX planned_due ON planned (planned_at, key)",
    # Protocol v2 (issue 13): cancel requests of running jobs, facts, pauses, lifetime counters.
    """
    CREATE TABLE cancels (
        job_id text PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
        reason text NOT NULL
    )
    """,
    # Facts outlive their jobs (retention keeps the newest of each plugin and type): no foreign key.
    """
    CREATE TABLE facts (
        seq       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        plugin    text        NOT NULL,
        fact_type text        NOT NULL,
        job_id    text        NOT NULL,
        at        timestamptz NOT NULL,
        body      text        NOT NULL
    )
    """,
    "CREATE INDEX facts_plugin ON facts (plugin, seq)",
    "CREATE INDEX facts_type ON facts (plugin, fact_type, seq)",
    "CREATE INDEX facts_at ON facts (at)",
    # schedule_id '' is the whole plugin
    """
    CREATE TABLE pauses (
        plugin      text        NOT NULL,
        schedule_id text        NOT NULL,
        at          timestamptz NOT NULL,
        PRIMARY KEY (plugin, schedule_id)
    )
    """,
    "CREATE TABLE counters (name text PRIMARY KEY, value bigint NOT NULL)",
    """
    CREATE TABLE nodes (
        id          text        PRIMARY KEY,
        instance    text        NOT NULL,
        host        text        NOT NULL,
        pid         integer     NOT NULL,
        config_fp   text        NOT NULL,
        started_at  timestamptz NOT NULL DEFAULT now(),
        lease_until timestamptz NOT NULL
    )
    """,
    "CREATE INDEX nodes_instance ON nodes (instance)",
    # The activity log (docs/api.md). Ids come from ``activity_last``, whose one row each append
    # updates: appends are serialised on that row lock until commit, so ids are gapless, become
    # visible in order, and are never reused after pruning.
    "CREATE TABLE activity_last (id bigint NOT NULL)",
    "INSERT INTO activity_last (id) VALUES (0)",
    """
    CREATE TABLE activity (
        id      bigint      PRIMARY KEY,
        kind    text        NOT NULL,
        at      timestamptz NOT NULL,
        plugin  text,
        command text,
        job_id  text,
        data    text        NOT NULL
    )
    """,
    "CREATE INDEX activity_at ON activity (at)",
    """
    CREATE TABLE leadership (
        name       text        PRIMARY KEY,
        node_id    text        NOT NULL,
        elected_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL
    )
    """,
)

#: Version 2 (issue 18, goal 7; SQLite's version 6): a job listing filtered by plugin and status
#: reads that pair's rows newest first from one index. It replaces ``jobs_pair`` (plugin,
#: command, status), whose one reader (the poll guard of a pair without a schedule) finds the
#: pair's queued and running jobs through it too: a status change updates as many indexes.
_V2: Migration = (
    "DROP INDEX jobs_pair",
    "CREATE INDEX jobs_plugin_status ON jobs (plugin, status, created_at, seq)",
)

#: The whole history of the schema, oldest first. Append; never edit a released step.
MIGRATIONS: tuple[Migration, ...] = (_V1, _V2)
SCHEMA_VERSION = len(MIGRATIONS)

#: The advisory-lock namespace of migrations (the two-key form: ductile's locks never meet an
#: application's own).
NS_MIGRATE = 0x44550001

_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS ductile_schema (version integer NOT NULL)"


def _version(conn: Any) -> int:
    row = conn.execute("SELECT max(version) FROM ductile_schema").fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0


def migrate(conn: Any, where: str, migrations: Sequence[Migration] = MIGRATIONS) -> tuple[int, int]:
    """Bring the database to ``len(migrations)`` in one transaction; (version before, after).

    ``conn`` is a psycopg connection in autocommit mode.
    """
    target = len(migrations)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (NS_MIGRATE,))
        conn.execute(_VERSION_TABLE)
        before = _version(conn)
        if before > target:
            raise SchemaVersionError(
                f"{where}: the database has schema version {before}, newer than the {target} this "
                "ductile understands; it was written by a newer ductile. Upgrade ductile. "
                "Nothing was changed."
            )
        for number in range(before, target):
            for statement in migrations[number]:
                try:
                    conn.execute(statement)
                except Exception as e:
                    raise MigrationError(
                        f"{where}: migrating the database from schema version {number} to {number + 1} "
                        f"failed ({e}); it was left at version {before}, unchanged"
                    ) from e
        if before != target:
            conn.execute("DELETE FROM ductile_schema")
            conn.execute("INSERT INTO ductile_schema (version) VALUES (%s)", (target,))
    return before, target


def migrate_url(url: str) -> tuple[int, int]:
    """Migrate the database at ``url`` (tests make their template with it)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return migrate(conn, redact(url))


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    userinfo, at, hostpart = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{hostpart}"
