"""The SQLite schema of :class:`~ductile.adapters.sqlite.SqliteStore` and its migrations.

The schema version lives in ``PRAGMA user_version``. :data:`MIGRATIONS` is the
whole history: step *i* takes a database from version *i* to *i + 1*, and
:data:`SCHEMA_VERSION` is their count. Opening an older database applies the
missing steps and the new version in **one** ``BEGIN IMMEDIATE`` transaction
(all or nothing, and safe against another process migrating at the same time);
a database written by a newer ductile is refused with
:class:`SchemaVersionError` and left untouched.

Storage conventions:

* instants are ``INTEGER`` microseconds since the Unix epoch, UTC: exact to
  the microsecond, and SQL ordering/comparison is numeric ordering;
* durations (a planned run's jitter offset) are ``INTEGER`` microseconds;
* JSON (payloads, plugin state, log lines) is compact UTF-8 ``TEXT``;
* plugin output kept with a run (stderr tail, stdout head) is ``BLOB``;
* ``jobs.seq`` (the rowid) is the insertion order, the FIFO tie-breaker
  after ``created_at``. Without ``AUTOINCREMENT`` a new row still gets a seq
  above every living row, which is all FIFO needs.

Every hot query has an index; ``tests/integration/test_sqlite_query_plans.py``
checks each statement the store runs with ``EXPLAIN QUERY PLAN``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ductile.adapters.sqlite.errors import MigrationError, SchemaVersionError

#: One migration step: statements run in order inside the migration transaction.
Migration = tuple[str, ...]

_V1: Migration = (
    # ------------------------------------------------------------------ jobs
    """
    CREATE TABLE jobs (
        seq             INTEGER PRIMARY KEY,
        id              TEXT    NOT NULL UNIQUE,
        plugin          TEXT    NOT NULL,
        command         TEXT    NOT NULL,
        payload         TEXT    NOT NULL,
        status          TEXT    NOT NULL CHECK (status IN
                            ('queued', 'running', 'succeeded', 'failed', 'timed_out', 'dead')),
        attempt         INTEGER NOT NULL CHECK (attempt >= 1),
        max_attempts    INTEGER NOT NULL CHECK (max_attempts >= 1),
        submitted_by    TEXT    NOT NULL,
        dedupe_key      TEXT,
        created_at      INTEGER NOT NULL,
        started_at      INTEGER,
        completed_at    INTEGER,
        next_retry_at   INTEGER,
        last_error      TEXT,
        parent_job_id   TEXT,
        source_event_id TEXT
    )
    """,
    # claim (FIFO among queued: rowid = seq is the implicit last column), queue depth,
    # running/recovery, list by status
    "CREATE INDEX jobs_status_created ON jobs (status, created_at)",
    # the earliest retry time among queued jobs
    "CREATE INDEX jobs_retry ON jobs (status, next_retry_at)",
    # retention: terminal jobs completed before a cut-off
    "CREATE INDEX jobs_finished ON jobs (status, completed_at)",
    # poll guard / outstanding, cancel on reload
    "CREATE INDEX jobs_pair ON jobs (plugin, command, status)",
    # D1 dedupe identity
    "CREATE INDEX jobs_dedupe ON jobs (plugin, command, dedupe_key, status) WHERE dedupe_key IS NOT NULL",
    # D8 child idempotency: one job per (parent, source event, target plugin, command)
    """
    CREATE UNIQUE INDEX jobs_child ON jobs (parent_job_id, source_event_id, plugin, command)
        WHERE parent_job_id IS NOT NULL AND source_event_id IS NOT NULL
    """,
    # list newest first
    "CREATE INDEX jobs_created ON jobs (created_at)",
    "CREATE INDEX jobs_plugin_created ON jobs (plugin, created_at)",
    # ------------------------------------------------------------------ history
    """
    CREATE TABLE transitions (
        seq         INTEGER PRIMARY KEY,
        job_id      TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        from_status TEXT,
        to_status   TEXT    NOT NULL,
        reason      TEXT    NOT NULL,
        actor       TEXT    NOT NULL,
        at          INTEGER NOT NULL
    )
    """,
    "CREATE INDEX transitions_job ON transitions (job_id)",
    """
    CREATE TABLE runs (
        seq          INTEGER PRIMARY KEY,
        job_id       TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        attempt      INTEGER NOT NULL,
        started_at   INTEGER,
        finished_at  INTEGER NOT NULL,
        duration     REAL    NOT NULL,
        exit_code    INTEGER,
        signal       INTEGER,
        timed_out    INTEGER NOT NULL,
        error        TEXT,
        stderr_tail  BLOB    NOT NULL,
        stdout_head  BLOB    NOT NULL,
        logs         TEXT    NOT NULL
    )
    """,
    "CREATE INDEX runs_job ON runs (job_id)",
    """
    CREATE TABLE processes (
        job_id     TEXT    PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
        pid        INTEGER NOT NULL,
        pgid       INTEGER NOT NULL,
        start_time INTEGER NOT NULL
    )
    """,
    # ------------------------------------------------------------------ plugins
    """
    CREATE TABLE plugin_state (
        plugin TEXT PRIMARY KEY,
        state  TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE breakers (
        plugin    TEXT    NOT NULL,
        command   TEXT    NOT NULL,
        status    TEXT    NOT NULL CHECK (status IN ('closed', 'open', 'half_open')),
        failures  INTEGER NOT NULL,
        opened_at INTEGER,
        probe_at  INTEGER,
        PRIMARY KEY (plugin, command)
    )
    """,
    """
    CREATE TABLE inits (
        plugin      TEXT    PRIMARY KEY,
        fingerprint TEXT    NOT NULL,
        ok          INTEGER NOT NULL,
        error       TEXT,
        at          INTEGER NOT NULL
    )
    """,
    # ------------------------------------------------------------------ schedule index
    """
    CREATE TABLE planned (
        key         TEXT    PRIMARY KEY,
        fingerprint TEXT    NOT NULL,
        nominal_at  INTEGER NOT NULL,
        planned_at  INTEGER NOT NULL,
        offset_us   INTEGER NOT NULL,
        snapped     INTEGER NOT NULL
    )
    """,
    "CREATE INDEX planned_due ON planned (planned_at, key)",
)

#: Version 2: runs know their plugin, so ``ductile logs <plugin>`` reads the newest
#: runs from an index instead of guessing from the newest jobs.
_V2: Migration = (
    "ALTER TABLE runs ADD COLUMN plugin TEXT NOT NULL DEFAULT ''",
    "UPDATE runs SET plugin = (SELECT jobs.plugin FROM jobs WHERE jobs.id = runs.job_id)",
    "CREATE INDEX runs_finished ON runs (finished_at, seq)",
    "CREATE INDEX runs_plugin_finished ON runs (plugin, finished_at, seq)",
)

#: Version 3 (the operator API, issue 14): the activity log, a retried job's link to the
#: job it repeats, and an index for each filter of a job listing.
_V3: Migration = (
    # AUTOINCREMENT: an id is never reused after retention pruned the newest rows, so a
    # client resuming a stream from an id never misses entries appended later.
    """
    CREATE TABLE activity (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        kind    TEXT    NOT NULL,
        at      INTEGER NOT NULL,
        plugin  TEXT,
        command TEXT,
        job_id  TEXT,
        data    TEXT    NOT NULL
    )
    """,
    "CREATE INDEX activity_at ON activity (at)",
    "ALTER TABLE jobs ADD COLUMN retry_of TEXT",
    "CREATE INDEX jobs_command_created ON jobs (command, created_at)",
    "CREATE INDEX jobs_submitted_created ON jobs (submitted_by, created_at)",
    # a job's routed children (``ductile job``, ``GET /job/{id}``)
    "CREATE INDEX jobs_parent ON jobs (parent_job_id, created_at) WHERE parent_job_id IS NOT NULL",
)

#: Version 4: protocol v2 and several schedules per plugin (issue 13). Jobs know the schedule
#: that made them (the poll guard counts per schedule) and their route depth (the loop guard);
#: runs keep the response's ``result``; the schedule index is keyed ``<plugin>/<schedule id>``
#: (a plugin's one schedule is ``default``: its planned run keeps its grid); and four small
#: tables: cancel requests of running jobs, facts, pauses, lifetime counters.
_V4: Migration = (
    "ALTER TABLE jobs ADD COLUMN schedule_id TEXT",
    "ALTER TABLE jobs ADD COLUMN route_depth INTEGER NOT NULL DEFAULT 0 CHECK (route_depth >= 0)",
    "UPDATE jobs SET schedule_id = 'default' WHERE submitted_by = 'scheduler'",
    # the poll guard per schedule, and if_running: cancel
    "CREATE INDEX jobs_schedule ON jobs (plugin, schedule_id, status) WHERE schedule_id IS NOT NULL",
    "ALTER TABLE runs ADD COLUMN result TEXT",
    "UPDATE planned SET key = key || '/default' WHERE instr(key, '/') = 0",
    """
    CREATE TABLE cancels (
        job_id TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
        reason TEXT NOT NULL
    )
    """,
    # Facts outlive their jobs (retention keeps the newest of each plugin and type): no foreign key.
    """
    CREATE TABLE facts (
        seq       INTEGER PRIMARY KEY,
        plugin    TEXT    NOT NULL,
        fact_type TEXT    NOT NULL,
        job_id    TEXT    NOT NULL,
        at        INTEGER NOT NULL,
        body      TEXT    NOT NULL
    )
    """,
    "CREATE INDEX facts_plugin ON facts (plugin, seq)",
    "CREATE INDEX facts_type ON facts (plugin, fact_type, seq)",
    "CREATE INDEX facts_at ON facts (at)",
    # schedule_id '' is the whole plugin
    """
    CREATE TABLE pauses (
        plugin      TEXT    NOT NULL,
        schedule_id TEXT    NOT NULL,
        at          INTEGER NOT NULL,
        PRIMARY KEY (plugin, schedule_id)
    )
    """,
    """
    CREATE TABLE counters (
        name  TEXT    PRIMARY KEY,
        value INTEGER NOT NULL
    )
    """,
)

#: Version 5: lanes and the claim fence (ADR 0031, 0032). Every claim raises ``claim_token``
#: and records the lane ``slot`` it took, the ``node`` that took it (NULL on SQLite: one
#: process) and its ``deadline_at``; two constraints keep one running job per (plugin, slot)
#: and per dedupe identity, whatever a claimer believes.
_V5: Migration = (
    "ALTER TABLE jobs ADD COLUMN claim_token INTEGER NOT NULL DEFAULT 0 CHECK (claim_token >= 0)",
    "ALTER TABLE jobs ADD COLUMN slot INTEGER",
    "ALTER TABLE jobs ADD COLUMN node TEXT",
    "ALTER TABLE jobs ADD COLUMN deadline_at INTEGER",
    "CREATE UNIQUE INDEX jobs_running_slot ON jobs (plugin, slot) WHERE status = 'running'",
    """
    CREATE UNIQUE INDEX jobs_running_identity ON jobs (plugin, command, dedupe_key)
        WHERE status = 'running' AND dedupe_key IS NOT NULL
    """,
)

#: Version 6 (issue 18, goal 7): a job listing filtered by plugin and status reads that pair's
#: rows newest first from one index, instead of every job of the plugin (70 ms at 1M jobs when
#: the status is rare). It replaces ``jobs_pair`` (plugin, command, status), whose one reader,
#: the poll guard of a pair without a schedule, finds the pair's few queued and running jobs
#: through it as well: a status change still updates as many indexes as before.
_V6: Migration = (
    "DROP INDEX jobs_pair",
    "CREATE INDEX jobs_plugin_status ON jobs (plugin, status, created_at)",
)

#: The whole history of the schema, oldest first. Append; never edit a released step.
MIGRATIONS: tuple[Migration, ...] = (_V1, _V2, _V3, _V4, _V5, _V6)

#: The version this code reads and writes.
SCHEMA_VERSION = len(MIGRATIONS)


def user_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def refuse_newer(conn: sqlite3.Connection, where: str, known: int = SCHEMA_VERSION) -> int:
    """The database's version; :class:`SchemaVersionError` when it is newer than ``known``."""
    version = user_version(conn)
    if version > known:
        raise SchemaVersionError(
            f"{where}: the database has schema version {version}, newer than the {known} this "
            "ductile understands; it was written by a newer ductile. Upgrade ductile, or point "
            "state_dir at another database. Nothing was changed."
        )
    return version


def migrate(
    conn: sqlite3.Connection, where: str, migrations: Sequence[Migration] = MIGRATIONS
) -> tuple[int, int]:
    """Bring the database up to ``len(migrations)``; returns (version before, version after).

    ``conn`` must be in autocommit mode (``isolation_level=None``). All missing
    steps run in one ``BEGIN IMMEDIATE`` transaction; the version is re-read
    inside it, so two processes opening a fresh file at once migrate it once.
    A failing step rolls everything back and raises :class:`MigrationError`.
    """
    target = len(migrations)
    if refuse_newer(conn, where, target) == target:
        return target, target
    conn.execute("BEGIN IMMEDIATE")
    try:
        before = refuse_newer(conn, where, target)
        for number in range(before, target):
            for statement in migrations[number]:
                try:
                    conn.execute(statement)
                except sqlite3.Error as e:
                    raise MigrationError(
                        f"{where}: migrating the database from schema version {number} to "
                        f"{number + 1} failed ({e}); it was left at version {before}, unchanged"
                    ) from e
        # PRAGMA cannot take a parameter; target is an int we computed.
        conn.execute(f"PRAGMA user_version = {int(target)}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return before, target
