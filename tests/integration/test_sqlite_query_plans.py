"""Every statement the SQLite store runs on a hot path uses an index.

The statements are the store's own module constants (``HOT_QUERIES``), so a
query edited in the store is checked here as it is. A full ``SCAN`` of jobs,
transitions or runs fails; so does sorting the whole queue for a claim.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ductile.adapters.sqlite import sql as sqlite_sql
from ductile.adapters.sqlite.queries import JobFilters, sql_find_jobs
from ductile.adapters.sqlite.schema import migrate

BIG_TABLES = ("jobs", "transitions", "runs", "facts")


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> sqlite3.Connection:
    path = Path(tmp_path_factory.mktemp("plans")) / "plans.db"
    connection = sqlite3.connect(path, isolation_level=None)
    migrate(connection, str(path))
    return connection


def plan(conn: sqlite3.Connection, sql: str) -> list[str]:
    params = (None,) * sql.count("?")
    return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()]


def full_scans(steps: list[str], *, allow_index_scan: bool = False) -> list[str]:
    bad = []
    for step in steps:
        words = step.split()
        if len(words) >= 2 and words[0] == "SCAN" and words[1] in BIG_TABLES:
            if allow_index_scan and "USING" in words and "INDEX" in words:
                continue
            bad.append(step)
    return bad


def test_every_sql_constant_of_the_store_is_checked() -> None:
    """A new SELECT/UPDATE/DELETE constant must be added to HOT_QUERIES (or be an insert/upsert)."""
    checked = set(sqlite_sql.HOT_QUERIES.values())
    constants = {
        name: value
        for name, value in vars(sqlite_sql).items()
        if name.startswith("SQL_") and isinstance(value, str)
    }
    unchecked = [
        name
        for name, sql in constants.items()
        if sql not in checked
        and not sql.startswith("INSERT")  # inserts and upserts look rows up by key only
        # small tables, read whole (the open breakers once per backward clock step, ADR 0045)
        and sql
        not in (
            sqlite_sql.SQL_BREAKERS,
            sqlite_sql.SQL_ALL_PLANNED,
            sqlite_sql.SQL_OPEN_BREAKERS,
            sqlite_sql.SQL_PAUSES,
            sqlite_sql.SQL_COUNTERS,
        )
        and sql != sqlite_sql.SQL_LAST_ACTIVITY_ID  # sqlite_sequence: one row per AUTOINCREMENT table
    ]
    assert unchecked == [], f"SQL constants missing from HOT_QUERIES: {unchecked}"


@pytest.mark.parametrize("name", sorted(sqlite_sql.HOT_QUERIES))
def test_hot_query_uses_an_index(conn: sqlite3.Connection, name: str) -> None:
    steps = plan(conn, sqlite_sql.HOT_QUERIES[name])
    assert full_scans(steps) == [], f"{name}: full scan in plan {steps}"
    assert any(step.startswith("SEARCH") for step in steps), f"{name}: no index search in {steps}"


def test_claim_reads_the_queue_in_index_order(conn: sqlite3.Connection) -> None:
    steps = plan(conn, sqlite_sql.SQL_OLDEST_RUNNABLE)
    assert not any("TEMP B-TREE" in s for s in steps), f"claim sorts the whole queue: {steps}"
    assert any("jobs_status_created" in s for s in steps), steps


def test_next_retry_at_is_an_index_range(conn: sqlite3.Connection) -> None:
    steps = plan(conn, sqlite_sql.SQL_NEXT_RETRY_AT)
    assert any("jobs_retry" in s and "next_retry_at>" in s for s in steps), steps


@pytest.mark.parametrize("statuses", [None, 1, 3])
@pytest.mark.parametrize("plugin", [False, True])
def test_list_jobs_never_scans_the_table(
    conn: sqlite3.Connection, statuses: int | None, plugin: bool
) -> None:
    """Listing newest-first may walk an index in order (it stops at LIMIT), never the table."""
    steps = plan(conn, sqlite_sql.sql_list_jobs(statuses=statuses, plugin=plugin))
    assert full_scans(steps, allow_index_scan=True) == [], steps


def test_the_checker_catches_a_full_scan(conn: sqlite3.Connection) -> None:
    steps = plan(conn, "SELECT id FROM jobs WHERE payload = ?")
    assert full_scans(steps) == ["SCAN jobs"]


#: Each filter of ``GET /jobs`` / ``ductile jobs`` alone, and the usual combinations.
FIND_SHAPES = {
    "no filter": JobFilters(),
    "one status": JobFilters(statuses=1),
    "three statuses": JobFilters(statuses=3),
    "plugin": JobFilters(plugin=True),
    "command": JobFilters(command=True),
    "submitted_by": JobFilters(submitted_by=True),
    "children of a job": JobFilters(parent=True),
    "since": JobFilters(since=True),
    "until": JobFilters(until=True),
    "since and until": JobFilters(since=True, until=True),
    "text": JobFilters(text=True),
    "next page": JobFilters(after=True),
    "plugin, status, next page": JobFilters(plugin=True, statuses=1, after=True),
    "dead since, text": JobFilters(statuses=1, since=True, text=True),
    "everything": JobFilters(
        statuses=2,
        plugin=True,
        command=True,
        submitted_by=True,
        since=True,
        until=True,
        text=True,
        after=True,
    ),
}
#: Shapes whose first filter narrows by an index range (a SEARCH, not a walk of the whole order).
SEARCHED = set(FIND_SHAPES) - {"no filter", "text"}


@pytest.mark.parametrize("name", sorted(FIND_SHAPES))
def test_every_job_filter_is_answered_from_an_index(conn: sqlite3.Connection, name: str) -> None:
    """A listing walks or searches an index, never the table; a selective filter searches
    its index; the text filter reads a job's runs through their index."""
    steps = plan(conn, sql_find_jobs(FIND_SHAPES[name]))
    assert full_scans(steps, allow_index_scan=True) == [], f"{name}: {steps}"
    jobs_steps = [s for s in steps if s.split()[1:2] == ["jobs"]]
    assert jobs_steps, steps
    if name in SEARCHED:
        assert all(s.startswith("SEARCH") for s in jobs_steps), f"{name}: {steps}"
    if FIND_SHAPES[name].text:
        assert any(s.startswith("SEARCH r USING INDEX runs_job") for s in steps), f"{name}: {steps}"


@pytest.mark.parametrize("after", [False, True])
def test_a_listing_by_plugin_and_one_status_reads_only_that_pair(
    conn: sqlite3.Connection, after: bool
) -> None:
    """Issue 18: with the plugin's index alone, a status the plugin rarely has (failed, dead)
    read every job of the plugin (62 ms at 1M jobs); the pair's own index reads one page."""
    steps = plan(conn, sql_find_jobs(JobFilters(statuses=1, plugin=True, after=after)))
    assert steps[0].startswith("SEARCH jobs USING INDEX jobs_plugin_status (plugin=? AND status=?"), steps
    assert not any("TEMP B-TREE" in s for s in steps), steps
