"""The long help texts of the verbs that need more than a line (``ductile <verb> --help``).

Standard library only at import: the parser imports this at start-up.
"""

RUN_HELP = """\
Queue one job of <plugin> durably, as if the scheduler had made it (submitted_by
"cli"). The job is written straight into the database without the instance lock;
the running daemon is woken at once and picks it up (without a daemon it waits in the
queue). --command: poll, handle, or a command of a v2 manifest (sync); not health or
init. A payload that breaks the command's input_schema is refused.

With --command handle, --payload becomes the event the plugin receives, wrapped
like any other event:
  {"type": "<--event-type, default manual>", "payload": <your object>,
   "source": "cli", "timestamp": "<now, UTC>", "event_id": "<new UUID>"}
(plus "dedupe_key" when --dedupe-key is given). With any other command it is the
job's payload: a protocol-2 plugin receives it as the request's "payload" (a
protocol-1 plugin does not see it).

--dedupe-key K: no new job when one of the same (plugin, command, K) is still
queued, is running, or succeeded within service.dedupe_ttl; the existing id is
printed as "duplicate of <id>".

--wait: follow the job to its end and print its outcome; exit 0 when it
succeeded, 1 when it ended dead or --timeout (default 300 s) passed first (the
job itself carries on). --wait needs a running daemon.
"""

STATUS_HELP = """\
Show whether the daemon runs, the queue, and every plugin: loaded / unhealthy
(init failed) / refused (with the reason) / disabled, its circuit breakers, and the
result of its `health` command, run now (only plugins whose manifest lists health;
read-only: state_updates from health are ignored).

Exit status: 0 when everything is healthy; 1 when the daemon is not running, the
database refuses writes (a full disk, its write lock held by another process), a
plugin is refused or unhealthy, a circuit breaker is open or half-open, or a
health check failed.
"""

CONFIG_CHECK_HELP = """\
Validate the config file and what it refers to: plugins (loaded, refused with the
reason, disabled), routes, webhook endpoints and schedules.

Exit status: 2 when the config itself is invalid; 1 when a plugin is refused, or a
route, endpoint or schedule names a plugin that is not loaded or does not support
the command; 0 otherwise.
"""

SIMULATE_HELP = """\
Run this config through ductile's deterministic simulation: the real engine on
a simulated clock, store and plugins, for --days of simulated time (seconds of real
time, with a progress line on a terminal). Nothing real runs and the state directory is
not touched. Prints a timeline
per plugin (planned times in the schedule's zone, jitter, window snaps, DST days),
breaker openings, routed chains and a summary (runs, failures, retries, dead, mean
queue wait). The same --seed gives the same run.

Plugins are the config's and those in plugins_dir (their manifests are read, never
run). Each behaves "ok" unless told: --fail notify=0.3 makes 30% of its runs fail;
--behaviour PLUGIN[.COMMAND]=B sets any behaviour:
  ok | ok:emit=a.b+c.d | ok:dedupe=2 | ok:took=5s | slow:90s | flaky:0.2 |
  error | error:fatal | exit78 | timeout | garbage
("ok": a poll emits one event of each type its routes listen for, so chains show).

--check also crashes the simulated daemon at random moments and verifies the
invariants (nothing acknowledged lost, legal state moves, ...): exit 1 with the
command that replays the failure.
"""

SCHEDULE_HELP = """\
The schedule index. Without --to: the next 10 runs of each loaded plugin's schedule
from --from (default now); with --to: every run due between --from and --to (at most
--limit per schedule, default 1000). Times are ISO-8601 (without an offset: local
time), 'now', or relative to now: +24h, -30m, +1d. Schedules without a timezone are
planned in the daemon's zone (recorded in its state directory), not this shell's.

The first run of each schedule is the one the daemon stored (jitter drawn), or,
when the daemon has not planned it yet, a plan computed from now with the jitter
at its centre ("not yet planned"). Later runs are projected with the jitter at its
centre: it is drawn only when a run is planned. Past runs are in `ductile logs`.
"""


SELFCHECK_HELP = """\
Check the state directory and the database, with the daemon running or not:
the state directory's owner and modes, the instance lock (a stale lock file is
harmless), the database file, SQLite's integrity_check in full, the schema
version, the write-ahead log and the free space. One line per check: ok, WARN
(worth a look) or FAIL.

Exit status: 0 when nothing failed (warnings allowed); 1 when a check failed.
"""

BACKUP_HELP = """\
Copy the database, online (SQLite's backup API: safe while the daemon runs),
into FILE: a new, standalone file (no -wal to carry along), mode 0600, checked
with integrity_check before it is kept. FILE must not exist: a backup never
overwrites.
"""
