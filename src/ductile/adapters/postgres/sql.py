"""Every SQL statement the PostgreSQL store runs, as module constants (``%s`` parameters)."""

# Assembled from module constants (column lists) only; every value is a parameter.
# ruff: noqa: S608

from __future__ import annotations

from typing import Final

from ductile.adapters.postgres.rows import (
    ACTIVITY_COLS,
    BREAKER_COLS,
    FACT_COLS,
    INIT_COLS,
    JOB_COLS,
    JOB_COLS_J,
    JOB_FIELDS,
    PLANNED_COLS,
    RUN_COLS,
)

_TRANSITION_COLS = "job_id, from_status, to_status, reason, actor, at"
_TERMINAL = "('succeeded', 'dead')"
#: The channel every unit that makes work runnable notifies (ADR 0034); the payload is the plugin.
CHANNEL: Final = "ductile_jobs"

# ----------------------------------------------------------------- locks (see ports/tx.py for the order)
#: Namespaces of the two-key advisory locks: ductile's transaction locks never meet an application's.
NS_STATE: Final = 0x44550002
NS_BREAKER: Final = 0x44550003
NS_DEDUPE: Final = 0x44550004
LOCK_PLANNED: Final = "SELECT 1 FROM planned WHERE key = %s FOR UPDATE"
LOCK_JOB: Final = "SELECT 1 FROM jobs WHERE id = %s FOR UPDATE"
LOCK_IDENTITY: Final = "SELECT pg_advisory_xact_lock(%s, hashtext(%s))"

# ----------------------------------------------------------------- jobs
INSERT_JOB: Final = f"INSERT INTO jobs ({JOB_COLS}) VALUES ({', '.join(['%s'] * len(JOB_FIELDS))})"
GET_JOB: Final = f"SELECT {JOB_COLS} FROM jobs WHERE id = %s"
JOB_STATUS: Final = "SELECT status FROM jobs WHERE id = %s"
JOB_EXISTS: Final = "SELECT 1 FROM jobs WHERE id = %s"
CHILD_LOOKUP: Final = (
    "SELECT id FROM jobs WHERE parent_job_id = %s AND source_event_id = %s AND plugin = %s AND command = %s"
)
DEDUPE_CANDIDATES: Final = (
    f"SELECT {JOB_COLS} FROM jobs WHERE plugin = %s AND command = %s AND dedupe_key = %s "
    "AND status IN ('queued', 'running', 'succeeded') ORDER BY seq"
)
#: The claim's candidate: due, its lane not full, its identity not running, only while this node's
#: lease is valid (a NULL node: a store that claims without a node), skipping rows another claimer
#: holds (``LIMIT`` sits above the row locks: a skipped row is replaced by the next one).
OLDEST_RUNNABLE: Final = (
    f"SELECT {JOB_COLS_J} FROM jobs AS j WHERE j.status = 'queued' "
    "AND (j.next_retry_at IS NULL OR j.next_retry_at <= %(now)s) "
    "AND j.plugin <> ALL(%(skip)s::text[]) "
    "AND (j.dedupe_key IS NULL OR NOT EXISTS (SELECT 1 FROM jobs AS r WHERE r.status = 'running' "
    "AND r.plugin = j.plugin AND r.command = j.command AND r.dedupe_key = j.dedupe_key)) "
    "AND (%(node)s::text IS NULL OR EXISTS (SELECT 1 FROM nodes AS n WHERE n.id = %(node)s "
    "AND n.lease_until > now())) "
    "ORDER BY j.created_at, j.seq LIMIT 1 FOR UPDATE OF j SKIP LOCKED"
)
IN_FLIGHT: Final = f"SELECT {JOB_COLS} FROM jobs WHERE status = 'running'"
#: Own-instance recovery: this instance's claims (its flock proves their nodes dead).
RUNNING_OF_INSTANCE: Final = (
    f"SELECT {JOB_COLS} FROM jobs WHERE status = 'running' AND claimed_instance = %s "
    "ORDER BY created_at, seq FOR UPDATE"
)
#: Peer recovery: claims whose node is not live, past their deadline and the margin (ADR 0034).
#: "Not live", never "in a list of dead nodes": deleting a node's row cannot hide its jobs.
RUNNING_OF_DEAD_PEERS: Final = (
    f"SELECT {JOB_COLS} FROM jobs AS j WHERE j.status = 'running' "
    "AND NOT EXISTS (SELECT 1 FROM nodes AS n WHERE n.id = j.node AND n.lease_until >= now()) "
    "AND (j.deadline_at IS NULL OR j.deadline_at + %s < now()) "
    "ORDER BY j.created_at, j.seq FOR UPDATE OF j SKIP LOCKED"
)
#: A node's own claims it does not hold: a claim whose commit it never heard of.
RUNNING_STRAYS: Final = (
    f"SELECT {JOB_COLS} FROM jobs WHERE status = 'running' AND node = %s AND NOT (id = ANY(%s::text[])) "
    "AND started_at < %s ORDER BY created_at, seq FOR UPDATE SKIP LOCKED"
)
RETRYING: Final = (
    f"SELECT {JOB_COLS} FROM jobs WHERE status = 'queued' AND next_retry_at IS NOT NULL "
    "ORDER BY next_retry_at FOR UPDATE"
)
QUEUED_OF_PLUGIN: Final = (
    f"SELECT {JOB_COLS} FROM jobs WHERE plugin = %s AND status = 'queued' ORDER BY created_at, seq FOR UPDATE"
)
OUTSTANDING: Final = (
    "SELECT count(*) FROM jobs WHERE plugin = %s AND command = %s AND status IN ('queued', 'running')"
)
_SET = (
    "status = %s, attempt = %s, started_at = %s, completed_at = %s, next_retry_at = %s, last_error = %s, "
    "claim_token = %s, slot = %s, node = %s"
)
#: Compare-and-set on the expected status and the claim token (the fence).
UPDATE_JOB: Final = (
    f"UPDATE jobs SET {_SET}, deadline_at = %s WHERE id = %s AND status = %s AND claim_token = %s "
    f"RETURNING {JOB_COLS}"
)
#: A claim: the same, the deadline on the database's clock (now + the hold), the claimer's instance.
CLAIM_JOB: Final = (
    f"UPDATE jobs SET {_SET}, deadline_at = now() + %s::interval, claimed_instance = %s "
    f"WHERE id = %s AND status = %s AND claim_token = %s RETURNING {JOB_COLS}"
)
NOTIFY: Final = "SELECT pg_notify(%s, %s)"
INSERT_TRANSITION: Final = f"INSERT INTO transitions ({_TRANSITION_COLS}) VALUES (%s, %s, %s, %s, %s, %s)"
INSERT_RUN: Final = f"INSERT INTO runs ({RUN_COLS}, plugin) VALUES ({', '.join(['%s'] * 14)})"
PUT_PROCESS: Final = (
    "INSERT INTO processes (job_id, pid, pgid, start_time, instance) VALUES (%s, %s, %s, %s, %s) "
    "ON CONFLICT (job_id) DO UPDATE SET pid = excluded.pid, pgid = excluded.pgid, "
    "start_time = excluded.start_time, instance = excluded.instance"
)
DELETE_PROCESS: Final = "DELETE FROM processes WHERE job_id = %s"
#: One step of retention: at most %s terminal jobs completed before the cut-off (NULL: all), the
#: first completed first; their history goes with them (ON DELETE CASCADE).
RETENTION_JOBS: Final = (
    f"DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE status IN {_TERMINAL} "
    "AND completed_at < %s ORDER BY completed_at LIMIT %s)"
)

# ----------------------------------------------------------------- state, breakers, plans, inits
GET_STATE: Final = "SELECT state FROM plugin_state WHERE plugin = %s"
PUT_STATE: Final = (
    "INSERT INTO plugin_state (plugin, state) VALUES (%s, %s) "
    "ON CONFLICT (plugin) DO UPDATE SET state = excluded.state"
)
GET_BREAKER: Final = f"SELECT {BREAKER_COLS} FROM breakers WHERE plugin = %s AND command = %s"
BREAKERS: Final = f"SELECT {BREAKER_COLS} FROM breakers ORDER BY plugin, command"
OPEN_BREAKERS: Final = (
    f"SELECT {BREAKER_COLS} FROM breakers WHERE status != 'closed' ORDER BY plugin, command"
)
BREAKERS_OF_PLUGIN: Final = f"SELECT {BREAKER_COLS} FROM breakers WHERE plugin = %s ORDER BY command"
PUT_BREAKER: Final = (
    f"INSERT INTO breakers ({BREAKER_COLS}) VALUES (%s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (plugin, command) DO UPDATE SET status = excluded.status, failures = excluded.failures, "
    "opened_at = excluded.opened_at, probe_at = excluded.probe_at"
)
GET_PLANNED: Final = f"SELECT {PLANNED_COLS} FROM planned WHERE key = %s"
ALL_PLANNED: Final = f"SELECT {PLANNED_COLS} FROM planned ORDER BY planned_at, key"
DUE: Final = (
    f"SELECT {PLANNED_COLS} FROM planned WHERE planned_at >= %s AND planned_at < %s ORDER BY planned_at, key"
)
PUT_PLANNED: Final = (
    f"INSERT INTO planned ({PLANNED_COLS}) VALUES (%s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, nominal_at = excluded.nominal_at, "
    "planned_at = excluded.planned_at, offset_us = excluded.offset_us, snapped = excluded.snapped"
)
REPLACE_PLANNED: Final = (
    "UPDATE planned SET fingerprint = %s, nominal_at = %s, planned_at = %s, offset_us = %s, snapped = %s "
    "WHERE key = %s AND fingerprint = %s AND nominal_at = %s AND planned_at = %s AND offset_us = %s "
    "AND snapped = %s"
)
DELETE_PLANNED: Final = "DELETE FROM planned WHERE key = %s"
GET_INIT: Final = f"SELECT {INIT_COLS} FROM inits WHERE instance = %s AND plugin = %s"
PUT_INIT: Final = (
    f"INSERT INTO inits (instance, {INIT_COLS}) VALUES (%s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (instance, plugin) DO UPDATE SET fingerprint = excluded.fingerprint, ok = excluded.ok, "
    "error = excluded.error, at = excluded.at"
)

# ----------------------------------------------------------------- reads of the store (one statement each)
RUNNING: Final = (
    f"SELECT {JOB_COLS_J}, p.pid, p.pgid, p.start_time FROM jobs AS j "
    "LEFT JOIN processes AS p ON p.job_id = j.id AND p.instance = %s "
    "WHERE j.status = 'running' ORDER BY j.created_at, j.seq"
)
TRANSITIONS: Final = f"SELECT {_TRANSITION_COLS} FROM transitions WHERE job_id = %s ORDER BY seq"
RUNS: Final = f"SELECT {RUN_COLS} FROM runs WHERE job_id = %s ORDER BY seq"
_RUN_COLS_R = ", ".join(f"r.{c.strip()}" for c in RUN_COLS.split(","))
RECENT_RUNS: Final = (
    f"SELECT {_RUN_COLS_R}, {JOB_COLS_J} FROM runs r JOIN jobs j ON j.id = r.job_id "
    "ORDER BY r.finished_at DESC, r.seq DESC LIMIT %s"
)
RECENT_RUNS_OF_PLUGIN: Final = (
    f"SELECT {_RUN_COLS_R}, {JOB_COLS_J} FROM runs r JOIN jobs j ON j.id = r.job_id "
    "WHERE r.plugin = %s ORDER BY r.finished_at DESC, r.seq DESC LIMIT %s"
)
LIST_JOBS: Final = (
    f"SELECT {JOB_COLS} FROM jobs WHERE (%(statuses)s::text[] IS NULL OR status = ANY(%(statuses)s::text[])) "
    "AND (%(plugin)s::text IS NULL OR plugin = %(plugin)s) ORDER BY created_at DESC, seq DESC LIMIT %(limit)s"
)
QUEUE_DEPTH: Final = "SELECT count(*) FROM jobs WHERE status = 'queued'"
NEXT_RETRY_AT: Final = (
    "SELECT min(next_retry_at) FROM jobs WHERE status = 'queued' AND next_retry_at IS NOT NULL"
)

# ----------------------------------------------------------------- the operator's reads and the activity log
OLDEST_QUEUED: Final = "SELECT min(created_at) FROM jobs WHERE status = 'queued'"
IDS_FROM: Final = "SELECT id FROM jobs WHERE id >= %s ORDER BY id LIMIT %s"
#: The next ids of the activity log (the last one is returned). Its row lock, held to commit,
#: serialises appends: an id is given only once every smaller one is committed (a reader resuming
#: after the largest id it saw misses none), and a rolled-back append gives its ids back.
NEXT_ACTIVITY_IDS: Final = "UPDATE activity_last SET id = id + %s RETURNING id"
APPEND_ACTIVITY: Final = f"INSERT INTO activity ({ACTIVITY_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s)"
ACTIVITY_AFTER: Final = f"SELECT {ACTIVITY_COLS} FROM activity WHERE id > %s ORDER BY id LIMIT %s"
LAST_ACTIVITY_ID: Final = "SELECT id FROM activity_last"
PRUNE_ACTIVITY: Final = (
    "DELETE FROM activity WHERE id IN (SELECT id FROM activity WHERE at < %s ORDER BY at LIMIT %s)"
)

# ----------------------------------------------------------------- protocol v2: cancels, facts, pauses
#: The poll guard of one schedule: its jobs queued or running.
OUTSTANDING_OF_SCHEDULE: Final = (
    "SELECT count(*) FROM jobs WHERE plugin = %s AND schedule_id = %s AND status IN ('queued', 'running')"
)
#: ``if_running: cancel``: those jobs themselves, oldest first, locked.
SCHEDULE_JOBS: Final = (
    f"SELECT {JOB_COLS} FROM jobs WHERE plugin = %s AND schedule_id = %s "
    "AND status IN ('queued', 'running') ORDER BY created_at, seq FOR UPDATE"
)
PUT_CANCEL: Final = (
    "INSERT INTO cancels (job_id, reason) VALUES (%s, %s) "
    "ON CONFLICT (job_id) DO UPDATE SET reason = excluded.reason"
)
GET_CANCEL: Final = "SELECT reason FROM cancels WHERE job_id = %s"
DELETE_CANCEL: Final = "DELETE FROM cancels WHERE job_id = %s"
ADD_COUNT: Final = (
    "INSERT INTO counters (name, value) VALUES (%s, %s) "
    "ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value"
)
COUNTERS: Final = "SELECT name, value FROM counters ORDER BY name"
INSERT_FACT: Final = "INSERT INTO facts (plugin, fact_type, job_id, at, body) VALUES (%s, %s, %s, %s, %s)"
#: Retention of facts: those recorded before the cut-off, except the newest of each (plugin, type).
RETENTION_FACTS: Final = (
    "DELETE FROM facts WHERE seq IN (SELECT old.seq FROM facts AS old WHERE old.at < %s "
    "AND EXISTS (SELECT 1 FROM facts AS newer WHERE newer.plugin = old.plugin "
    "AND newer.fact_type = old.fact_type AND newer.seq > old.seq) ORDER BY old.at LIMIT %s)"
)
FACTS_OF_PLUGIN: Final = f"SELECT {FACT_COLS} FROM facts WHERE plugin = %s ORDER BY seq DESC LIMIT %s"
FACTS_OF_TYPE: Final = (
    f"SELECT {FACT_COLS} FROM facts WHERE plugin = %s AND fact_type = %s ORDER BY seq DESC LIMIT %s"
)
#: A pause already there stays as it was (the unit read it first; a concurrent pause is the same).
PUT_PAUSE: Final = (
    "INSERT INTO pauses (plugin, schedule_id, at) VALUES (%s, %s, %s) "
    "ON CONFLICT (plugin, schedule_id) DO NOTHING"
)
GET_PAUSE: Final = "SELECT plugin, schedule_id, at FROM pauses WHERE plugin = %s AND schedule_id = %s"
DELETE_PAUSE: Final = "DELETE FROM pauses WHERE plugin = %s AND schedule_id = %s"
PAUSES: Final = "SELECT plugin, schedule_id, at FROM pauses ORDER BY plugin, schedule_id"
