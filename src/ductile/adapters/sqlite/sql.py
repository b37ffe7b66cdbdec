"""Every SQL statement the SQLite store runs, as module constants.

Kept in one place so ``tests/integration/test_sqlite_query_plans.py`` checks
the real statements: each one in :data:`HOT_QUERIES` must use an index.
"""

# All SQL here is assembled from module constants (column lists, placeholders);
# every value goes through a "?" parameter, so S608 does not apply.
# ruff: noqa: S608

from __future__ import annotations

from typing import Final

JOB_FIELDS = (
    "id",
    "plugin",
    "command",
    "payload",
    "status",
    "attempt",
    "max_attempts",
    "submitted_by",
    "dedupe_key",
    "created_at",
    "started_at",
    "completed_at",
    "next_retry_at",
    "last_error",
    "parent_job_id",
    "source_event_id",
    "schedule_id",
    "route_depth",
    "retry_of",
    "claim_token",
    "slot",
    "node",
    "deadline_at",
)
JOB_COLS = ", ".join(JOB_FIELDS)
_JOB_COLS = JOB_COLS
_JOB_COLS_J = ", ".join(f"j.{c}" for c in JOB_FIELDS)
_TRANSITION_COLS = "job_id, from_status, to_status, reason, actor, at"
RUN_COLS = (
    "job_id, attempt, started_at, finished_at, duration, exit_code, signal, timed_out, "
    "error, stderr_tail, stdout_head, logs, result"
)
_BREAKER_COLS = "plugin, command, status, failures, opened_at, probe_at"
_PLANNED_COLS = "key, fingerprint, nominal_at, planned_at, offset_us, snapped"
_INIT_COLS = "plugin, fingerprint, ok, error, at"
_TERMINAL_SQL = "('succeeded', 'dead')"


def _marks(n: int) -> str:
    return ", ".join("?" * n)


SQL_INSERT_JOB: Final = f"INSERT INTO jobs ({_JOB_COLS}) VALUES ({_marks(len(JOB_FIELDS))})"
SQL_GET_JOB: Final = f"SELECT {_JOB_COLS} FROM jobs WHERE id = ?"
SQL_JOB_EXISTS: Final = "SELECT 1 FROM jobs WHERE id = ?"
SQL_JOB_STATUS: Final = "SELECT status FROM jobs WHERE id = ?"
#: D8: the child a (parent, source event, target plugin, command) already made.
SQL_CHILD_LOOKUP: Final = (
    "SELECT id FROM jobs WHERE parent_job_id = ? AND source_event_id = ? AND plugin = ? AND command = ?"
)
#: D1: jobs of one identity that may block a new enqueue (``blocks`` decides), oldest first.
SQL_DEDUPE_CANDIDATES: Final = (
    f"SELECT {_JOB_COLS} FROM jobs WHERE plugin = ? AND command = ? AND dedupe_key = ? "
    "AND status IN ('queued', 'running', 'succeeded') ORDER BY seq"
)
#: The queued job to claim next: due (no retry time, or it has passed), FIFO by created_at, then insertion.
SQL_OLDEST_RUNNABLE: Final = (
    f"SELECT {_JOB_COLS} FROM jobs WHERE status = 'queued' "
    "AND (next_retry_at IS NULL OR next_retry_at <= ?) ORDER BY created_at, seq LIMIT 1"
)
#: The same, passing by the jobs whose lane is full (plugins in a JSON array) or whose dedupe
#: identity is running (ADR 0031). Used only while something runs: the serial dispatcher's
#: claims never have anything to pass by, and run the statement above.
SQL_OLDEST_RUNNABLE_IN_LANES: Final = (
    f"SELECT {_JOB_COLS_J} FROM jobs AS j WHERE j.status = 'queued' "
    "AND (j.next_retry_at IS NULL OR j.next_retry_at <= ?) "
    "AND j.plugin NOT IN (SELECT value FROM json_each(?)) "
    "AND (j.dedupe_key IS NULL OR NOT EXISTS (SELECT 1 FROM jobs AS r WHERE r.plugin = j.plugin "
    "AND r.command = j.command AND r.dedupe_key = j.dedupe_key AND r.status = 'running')) "
    "ORDER BY j.created_at, j.seq LIMIT 1"
)
#: Compare-and-set of a job's mutable fields on its expected status and claim token (the fence).
SQL_UPDATE_JOB: Final = (
    "UPDATE jobs SET status = ?, attempt = ?, started_at = ?, completed_at = ?, next_retry_at = ?, "
    "last_error = ?, claim_token = ?, slot = ?, node = ?, deadline_at = ? "
    "WHERE id = ? AND status = ? AND claim_token = ?"
)
SQL_INSERT_TRANSITION: Final = f"INSERT INTO transitions ({_TRANSITION_COLS}) VALUES ({_marks(6)})"
SQL_TRANSITIONS: Final = f"SELECT {_TRANSITION_COLS} FROM transitions WHERE job_id = ? ORDER BY seq"
SQL_INSERT_RUN: Final = f"INSERT INTO runs ({RUN_COLS}, plugin) VALUES ({_marks(14)})"
SQL_RUNS: Final = f"SELECT {RUN_COLS} FROM runs WHERE job_id = ? ORDER BY seq"
_RUN_COLS_R = ", ".join(f"r.{c.strip()}" for c in RUN_COLS.split(","))
#: ``ductile logs``: the newest runs, of all plugins or of one, each with its job.
SQL_RECENT_RUNS: Final = (
    f"SELECT {_RUN_COLS_R}, {_JOB_COLS_J} FROM runs r JOIN jobs j ON j.id = r.job_id "
    "ORDER BY r.finished_at DESC, r.seq DESC LIMIT ?"
)
SQL_RECENT_RUNS_OF_PLUGIN: Final = (
    f"SELECT {_RUN_COLS_R}, {_JOB_COLS_J} FROM runs r JOIN jobs j ON j.id = r.job_id "
    "WHERE r.plugin = ? ORDER BY r.finished_at DESC, r.seq DESC LIMIT ?"
)
SQL_PUT_PROCESS: Final = (
    "INSERT INTO processes (job_id, pid, pgid, start_time) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (job_id) DO UPDATE SET pid = excluded.pid, pgid = excluded.pgid, "
    "start_time = excluded.start_time"
)
SQL_DELETE_PROCESS: Final = "DELETE FROM processes WHERE job_id = ?"
SQL_RUNNING: Final = (
    f"SELECT {_JOB_COLS_J}, p.pid, p.pgid, p.start_time FROM jobs AS j "
    "LEFT JOIN processes AS p ON p.job_id = j.id WHERE j.status = 'running' ORDER BY j.created_at, j.seq"
)
SQL_RUNNING_JOBS: Final = f"SELECT {_JOB_COLS} FROM jobs WHERE status = 'running' ORDER BY created_at, seq"
SQL_QUEUED_OF_PLUGIN: Final = (
    f"SELECT {_JOB_COLS} FROM jobs WHERE plugin = ? AND status = 'queued' ORDER BY created_at, seq"
)
SQL_QUEUE_DEPTH: Final = "SELECT COUNT(*) FROM jobs WHERE status = 'queued'"
SQL_OLDEST_QUEUED: Final = "SELECT MIN(created_at) FROM jobs WHERE status = 'queued'"
SQL_OUTSTANDING: Final = (
    "SELECT COUNT(*) FROM jobs WHERE plugin = ? AND command = ? AND status IN ('queued', 'running')"
)
SQL_NEXT_RETRY_AT: Final = (
    "SELECT MIN(next_retry_at) FROM jobs WHERE status = 'queued' AND next_retry_at IS NOT NULL"
)
#: The queued jobs waiting for a retry time (a backward clock step moves them, ADR 0045).
SQL_RETRYING: Final = (
    f"SELECT {_JOB_COLS} FROM jobs WHERE status = 'queued' AND next_retry_at IS NOT NULL "
    "ORDER BY next_retry_at"
)
#: One step of retention (ADR 0064): the ids of at most ? terminal jobs completed before the
#: cut-off (-1: all), then each table's rows of those ids (a JSON array), found by index.
SQL_RETENTION_IDS: Final = f"SELECT id FROM jobs WHERE status IN {_TERMINAL_SQL} AND completed_at < ? LIMIT ?"
_DOOMED = "SELECT value FROM json_each(?)"
SQL_RETENTION_TRANSITIONS: Final = f"DELETE FROM transitions WHERE job_id IN ({_DOOMED})"
SQL_RETENTION_RUNS: Final = f"DELETE FROM runs WHERE job_id IN ({_DOOMED})"
SQL_RETENTION_PROCESSES: Final = f"DELETE FROM processes WHERE job_id IN ({_DOOMED})"
SQL_RETENTION_CANCELS: Final = f"DELETE FROM cancels WHERE job_id IN ({_DOOMED})"
SQL_RETENTION_JOBS: Final = f"DELETE FROM jobs WHERE id IN ({_DOOMED})"
#: Retention of facts: those recorded before the cut-off, except the newest of each (plugin, type);
#: at most ? of them (-1: all), the oldest first.
SQL_RETENTION_FACTS: Final = (
    "DELETE FROM facts WHERE seq IN (SELECT old.seq FROM facts AS old WHERE old.at < ? "
    "AND EXISTS (SELECT 1 FROM facts AS newer WHERE newer.plugin = old.plugin "
    "AND newer.fact_type = old.fact_type AND newer.seq > old.seq) ORDER BY old.at LIMIT ?)"
)
#: The poll guard of one schedule: its jobs queued or running.
SQL_OUTSTANDING_OF_SCHEDULE: Final = (
    "SELECT COUNT(*) FROM jobs WHERE plugin = ? AND schedule_id = ? AND status IN ('queued', 'running')"
)
#: ``if_running: cancel``: those jobs themselves, oldest first (from the schedule's index, not
#: the plugin's whole history: the few rows found are sorted).
SQL_SCHEDULE_JOBS: Final = (
    f"SELECT {_JOB_COLS} FROM jobs INDEXED BY jobs_schedule "
    "WHERE plugin = ? AND schedule_id = ? AND status IN ('queued', 'running') ORDER BY created_at, seq"
)
SQL_PUT_CANCEL: Final = (
    "INSERT INTO cancels (job_id, reason) VALUES (?, ?) "
    "ON CONFLICT (job_id) DO UPDATE SET reason = excluded.reason"
)
SQL_GET_CANCEL: Final = "SELECT reason FROM cancels WHERE job_id = ?"
SQL_DELETE_CANCEL: Final = "DELETE FROM cancels WHERE job_id = ?"
_FACT_COLS = "seq, plugin, fact_type, job_id, at, body"
SQL_INSERT_FACT: Final = "INSERT INTO facts (plugin, fact_type, job_id, at, body) VALUES (?, ?, ?, ?, ?)"
SQL_FACTS_OF_PLUGIN: Final = f"SELECT {_FACT_COLS} FROM facts WHERE plugin = ? ORDER BY seq DESC LIMIT ?"
SQL_FACTS_OF_TYPE: Final = (
    f"SELECT {_FACT_COLS} FROM facts WHERE plugin = ? AND fact_type = ? ORDER BY seq DESC LIMIT ?"
)
SQL_PUT_PAUSE: Final = "INSERT INTO pauses (plugin, schedule_id, at) VALUES (?, ?, ?)"
SQL_GET_PAUSE: Final = "SELECT plugin, schedule_id, at FROM pauses WHERE plugin = ? AND schedule_id = ?"
SQL_DELETE_PAUSE: Final = "DELETE FROM pauses WHERE plugin = ? AND schedule_id = ?"
SQL_PAUSES: Final = "SELECT plugin, schedule_id, at FROM pauses ORDER BY plugin, schedule_id"
SQL_ADD_COUNT: Final = (
    "INSERT INTO counters (name, value) VALUES (?, ?) "
    "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value"
)
SQL_COUNTERS: Final = "SELECT name, value FROM counters ORDER BY name"
SQL_GET_STATE: Final = "SELECT state FROM plugin_state WHERE plugin = ?"
SQL_PUT_STATE: Final = (
    "INSERT INTO plugin_state (plugin, state) VALUES (?, ?) "
    "ON CONFLICT (plugin) DO UPDATE SET state = excluded.state"
)
SQL_GET_BREAKER: Final = f"SELECT {_BREAKER_COLS} FROM breakers WHERE plugin = ? AND command = ?"
SQL_BREAKERS: Final = f"SELECT {_BREAKER_COLS} FROM breakers ORDER BY plugin, command"
SQL_BREAKERS_OF_PLUGIN: Final = f"SELECT {_BREAKER_COLS} FROM breakers WHERE plugin = ? ORDER BY command"
SQL_OPEN_BREAKERS: Final = (
    f"SELECT {_BREAKER_COLS} FROM breakers WHERE status != 'closed' ORDER BY plugin, command"
)
SQL_PUT_BREAKER: Final = (
    f"INSERT INTO breakers ({_BREAKER_COLS}) VALUES ({_marks(6)}) "
    "ON CONFLICT (plugin, command) DO UPDATE SET status = excluded.status, "
    "failures = excluded.failures, opened_at = excluded.opened_at, probe_at = excluded.probe_at"
)
SQL_GET_PLANNED: Final = f"SELECT {_PLANNED_COLS} FROM planned WHERE key = ?"
SQL_ALL_PLANNED: Final = f"SELECT {_PLANNED_COLS} FROM planned ORDER BY planned_at, key"
SQL_DUE: Final = (
    f"SELECT {_PLANNED_COLS} FROM planned WHERE planned_at >= ? AND planned_at < ? ORDER BY planned_at, key"
)
SQL_PUT_PLANNED: Final = (
    f"INSERT INTO planned ({_PLANNED_COLS}) VALUES ({_marks(6)}) "
    "ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, "
    "nominal_at = excluded.nominal_at, planned_at = excluded.planned_at, "
    "offset_us = excluded.offset_us, snapped = excluded.snapped"
)
#: Compare-and-set of a planned run: replaced only if it is still exactly the one that fired.
SQL_REPLACE_PLANNED: Final = (
    "UPDATE planned SET fingerprint = ?, nominal_at = ?, planned_at = ?, offset_us = ?, snapped = ? "
    "WHERE key = ? AND fingerprint = ? AND nominal_at = ? AND planned_at = ? AND offset_us = ? "
    "AND snapped = ?"
)
SQL_DELETE_PLANNED: Final = "DELETE FROM planned WHERE key = ?"
SQL_GET_INIT: Final = f"SELECT {_INIT_COLS} FROM inits WHERE plugin = ?"
SQL_PUT_INIT: Final = (
    f"INSERT INTO inits ({_INIT_COLS}) VALUES ({_marks(5)}) "
    "ON CONFLICT (plugin) DO UPDATE SET fingerprint = excluded.fingerprint, ok = excluded.ok, "
    "error = excluded.error, at = excluded.at"
)


_ACTIVITY_COLS = "id, kind, at, plugin, command, job_id, data"
SQL_APPEND_ACTIVITY: Final = (
    f"INSERT INTO activity ({_ACTIVITY_COLS.removeprefix('id, ')}) VALUES ({_marks(6)})"
)
SQL_ACTIVITY_AFTER: Final = f"SELECT {_ACTIVITY_COLS} FROM activity WHERE id > ? ORDER BY id LIMIT ?"
#: AUTOINCREMENT keeps the highest id ever given here, whatever was pruned since.
SQL_LAST_ACTIVITY_ID: Final = "SELECT seq FROM sqlite_sequence WHERE name = 'activity'"
SQL_PRUNE_ACTIVITY: Final = (
    "DELETE FROM activity WHERE id IN (SELECT id FROM activity WHERE at < ? ORDER BY at LIMIT ?)"
)
#: Ids from ``prefix`` on, in order (the caller stops at the first that does not start with it).
SQL_IDS_FROM: Final = "SELECT id FROM jobs WHERE id >= ? ORDER BY id LIMIT ?"


def sql_list_jobs(*, statuses: int | None, plugin: bool) -> str:
    """The ``list_jobs`` statement for ``statuses`` status parameters (None: any) and a plugin filter."""
    where: list[str] = []
    if statuses is not None:
        where.append(f"status IN ({_marks(statuses)})")
    if plugin:
        where.append("plugin = ?")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return f"SELECT {_JOB_COLS} FROM jobs{clause} ORDER BY created_at DESC, seq DESC LIMIT ?"


#: The statements every hot path runs, by name: each must use an index (see the query-plan test).
HOT_QUERIES: Final[dict[str, str]] = {
    "oldest runnable (claim)": SQL_OLDEST_RUNNABLE,
    "oldest runnable in lanes (claim)": SQL_OLDEST_RUNNABLE_IN_LANES,
    "dedupe lookup": SQL_DEDUPE_CANDIDATES,
    "child lookup": SQL_CHILD_LOOKUP,
    "job by id": SQL_GET_JOB,
    "job exists": SQL_JOB_EXISTS,
    "job status": SQL_JOB_STATUS,
    "update job (CAS)": SQL_UPDATE_JOB,
    "breaker lookup": SQL_GET_BREAKER,
    "breakers of plugin": SQL_BREAKERS_OF_PLUGIN,
    "due schedules": SQL_DUE,
    "planned by key": SQL_GET_PLANNED,
    "replace planned (CAS)": SQL_REPLACE_PLANNED,
    "delete planned": SQL_DELETE_PLANNED,
    "queue depth": SQL_QUEUE_DEPTH,
    "outstanding (poll guard)": SQL_OUTSTANDING,
    "next retry at": SQL_NEXT_RETRY_AT,
    "retrying jobs (clock step)": SQL_RETRYING,
    "running jobs": SQL_RUNNING,
    "running jobs (recovery)": SQL_RUNNING_JOBS,
    "queued of plugin (cancel)": SQL_QUEUED_OF_PLUGIN,
    "transitions of job": SQL_TRANSITIONS,
    "runs of job": SQL_RUNS,
    "recent runs": SQL_RECENT_RUNS,
    "recent runs of plugin": SQL_RECENT_RUNS_OF_PLUGIN,
    "delete process": SQL_DELETE_PROCESS,
    "retention: ids": SQL_RETENTION_IDS,
    "retention: transitions": SQL_RETENTION_TRANSITIONS,
    "retention: runs": SQL_RETENTION_RUNS,
    "retention: processes": SQL_RETENTION_PROCESSES,
    "retention: jobs": SQL_RETENTION_JOBS,
    "retention: cancels": SQL_RETENTION_CANCELS,
    "retention: facts": SQL_RETENTION_FACTS,
    "outstanding of schedule (poll guard)": SQL_OUTSTANDING_OF_SCHEDULE,
    "jobs of schedule (if_running: cancel)": SQL_SCHEDULE_JOBS,
    "cancel request": SQL_GET_CANCEL,
    "delete cancel request": SQL_DELETE_CANCEL,
    "facts of plugin": SQL_FACTS_OF_PLUGIN,
    "facts of type": SQL_FACTS_OF_TYPE,
    "pause": SQL_GET_PAUSE,
    "delete pause": SQL_DELETE_PAUSE,
    "plugin state": SQL_GET_STATE,
    "init record": SQL_GET_INIT,
    "activity after an id": SQL_ACTIVITY_AFTER,
    "oldest queued": SQL_OLDEST_QUEUED,
    "activity retention": SQL_PRUNE_ACTIVITY,
    "job ids by prefix": SQL_IDS_FROM,
}
