"""The ``ductile`` command line.

Verbs::

    ductile start                     run the daemon (JSON logs on stdout)
    ductile run <plugin> [...]        queue one job (optionally wait for its end)
    ductile status                    daemon, queue, plugins, breakers, health checks run now
    ductile reload                    ask the running daemon to re-read its config (SIGHUP)
    ductile plugins                   what discovery found: loaded, refused (why), disabled
    ductile queue                     jobs queued or running
    ductile logs [plugin]             the most recent finished runs and their plugin log lines
    ductile reset <plugin>            close the plugin's circuit breakers
    ductile job <id>                  one job: record, transitions, runs
    ductile config check              validate the config and what it refers to
    ductile schedule [--from --to]    the schedule index: what is due in a time range
    ductile simulate [--days N ...]   what this config would do, simulated (nothing real runs)

Every verb takes ``--config PATH`` (default ``$DUCTILE_CONFIG``, then
``./ductile.yaml``) and ``--debug``; every verb but ``start`` takes
``--json`` and then prints exactly one JSON document on stdout.

Exit codes: 0 ok; 1 a runtime error or a negative answer (``status``: not
everything is healthy; ``config check``: a plugin refused or a dangling
reference; ``run --wait``: the job ended dead or the wait timed out); 2 a
usage or configuration error. Mistakes a user can make never print a
traceback: they print ``ductile: <message>`` on stderr. An unexpected error
prints ``ductile: internal error: ...`` and exits 1; the traceback follows
only with ``--debug`` or ``DUCTILE_DEBUG=1``.

With ``--json``, an error (exit 2, or a refusal such as an unknown plugin)
prints no document, only its message on stderr; a negative answer
(``status``, ``config check``, ``run --wait``) prints its document and exits 1.

Read commands never create the state directory or the database: when there
is none yet they print empty results and a note on stderr. Notes and
warnings always go to stderr, so stdout stays parseable.

JSON shapes (times are UTC ISO-8601 strings ending in ``Z`` with
milliseconds, durations are seconds as numbers; absent values are ``null``):

- job: ``id, plugin, command, payload, status, attempt, max_attempts,
  submitted_by, dedupe_key, created_at, started_at, completed_at,
  next_retry_at, last_error, parent_job_id, source_event_id``
- transition: ``at, from, to, actor, reason``
- run: ``attempt, started_at, finished_at, duration_seconds, exit_code,
  signal, timed_out, error, stderr_tail, stdout_head, stdout_json, logs``
  (``logs``: list of ``{level, message}``; ``stdout_json``: the stdout head
  parsed when it is one JSON object, else null)
- ``run``: ``{job_id, created, duplicate_of, daemon_pid, outcome}``;
  ``outcome`` (with ``--wait``, else null): ``{status, attempt, max_attempts,
  last_error, duration_seconds, elapsed_seconds}``
- ``status``: ``{healthy, problems: [str], daemon: {running, pid, state_dir}, database,
  queue: {queued, running}, plugins: [{name, state, reason, version,
  breakers: [{command, status, failures, opened_at, reopens_at}],
  health: null | {ok, error, duration_seconds, logs}}]}``; ``state`` is one
  of ``loaded, unhealthy, refused, disabled``
- ``reload``: ``{pid}``
- ``plugins``: ``{loaded: [{name, version, description, commands,
  directory, schedule}], refused: [{name, directory, reason}], disabled:
  [name]}``; ``schedule`` is null or ``{summary, every_seconds, cron,
  jitter_seconds, window: null | {start, end}, timezone, catch_up, command,
  emit}``
- ``queue``: ``{jobs: [job]}`` (running first, then queued in dispatch order)
- ``logs``: ``{runs: [{job: job, run: run}]}`` (newest first)
- ``reset``: ``{plugin, reset: [{command, status, failures, opened_at}]}``
- ``job``: ``{job, transitions: [transition], runs: [run]}``
- ``config check``: ``{ok, config, state_dir, plugins_dir, plugins: {loaded,
  refused, disabled}, routes: [{from, event_type, to, command, problem}],
  webhooks: null | {listen, endpoints: [{path, plugin, event_type,
  problem}]}, schedules: [{plugin, summary, problem}], problems: [str]}``
- ``schedule``: ``{from, to, runs: [{plugin, kind, planned_at,
  planned_local, nominal_at, nominal_local, offset_seconds, snapped,
  timezone, target}]}``; ``kind`` is ``planned`` (stored by the daemon),
  ``not_yet_planned`` (no stored plan: computed from now, jitter at its
  centre), ``overdue`` (stored, in the past: the daemon is down or behind)
  or ``projected`` (a later run; jitter is drawn only when a run is
  planned, so it is shown at its centre)

Performance: this module imports only the standard library's argparse, os
and sys at import time; everything else (YAML, SQLite, asyncio, the engine)
is imported inside the verb that needs it, so ``ductile --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys

#: ``typing`` alone costs ~7 ms to import; the type checkers treat this name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
    from datetime import datetime, timedelta, tzinfo
    from pathlib import Path
    from typing import IO, Any, TypeAlias

    from ductile.app.catalog import Catalog
    from ductile.app.runtime import Runtime
    from ductile.domain.breaker import Breaker
    from ductile.domain.config import Config
    from ductile.domain.job import Job, Transition
    from ductile.domain.plugin import Discovery, Plugin
    from ductile.domain.schedule import PlannedRun, Schedule
    from ductile.domain.settle import RunRecord
    from ductile.ports.spawner import Spawner
    from ductile.ports.store import Store

    OpenStore: TypeAlias = Callable[[Path, bool], Awaitable[Store | None]]
    Handler: TypeAlias = Callable[["Context", argparse.Namespace], Coroutine[Any, Any, int]]

PROG = "ductile"
#: Default bound of ``run --wait``.
DEFAULT_WAIT_SECONDS = 300.0
#: How often ``run --wait`` looks at the job (it backs off from the first to the last).
WAIT_POLL_FIRST = 0.1
WAIT_POLL_MAX = 1.0
#: Default number of runs ``logs`` shows.
DEFAULT_LOG_LIMIT = 20
#: Most runs ``schedule`` lists per schedule.
DEFAULT_SCHEDULE_LIMIT = 1000
#: Default number of jobs ``queue`` lists.
DEFAULT_QUEUE_LIMIT = 1000
#: "No limit" for the store's list queries.
ALL_JOBS = 10_000_000
#: The event type of a ``run --command handle`` job unless ``--event-type`` says otherwise.
MANUAL_EVENT_TYPE = "manual"
#: Commands ``run`` may queue: ``health`` runs with ``status``, ``init`` on start/reload.
RUNNABLE_COMMANDS = ("poll", "handle")

#: Between the two ends of a window in a schedule summary.
EN_DASH = "\u2013"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A command line that cannot be honoured as written (exit 2)."""


# =========================================================================== the context


async def _open_sqlite(path: Path, create: bool) -> Store | None:
    """The real store: None when it does not exist and ``create`` is False."""
    if not create and not path.exists():  # noqa: ASYNC240 - one stat of a local file
        return None
    if create:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    from ductile.adapters.sqlite_store import SqliteStore

    return await SqliteStore.open(path)


def _real_daemon_pid(state_dir: str) -> int | None:
    from ductile.adapters.pidlock import running_daemon_pid

    return running_daemon_pid(state_dir)


def _real_spawner() -> Spawner:
    from ductile.adapters.subprocess_spawner import SubprocessSpawner

    return SubprocessSpawner()


def _real_catalog() -> Catalog:
    from ductile.app.catalog import FilesystemCatalog

    return FilesystemCatalog()


async def _real_sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def _real_now() -> datetime:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _real_monotonic() -> float:
    import time

    return time.monotonic()


class Context:
    """Everything a verb touches outside its arguments; tests replace parts of it."""

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        out: IO[str] | None = None,
        err: IO[str] | None = None,
        now: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        open_store: OpenStore | None = None,
        spawner: Callable[[], Spawner] | None = None,
        catalog: Callable[[], Catalog] | None = None,
        daemon_pid: Callable[[str], int | None] | None = None,
        send_signal: Callable[[int, int], None] | None = None,
        tz: tzinfo | None = None,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.out: IO[str] = out if out is not None else sys.stdout
        self.err: IO[str] = err if err is not None else sys.stderr
        self.now = now or _real_now
        self.monotonic = monotonic or _real_monotonic
        self.sleep = sleep or _real_sleep
        self.open_store: OpenStore = open_store or _open_sqlite
        self.spawner = spawner or _real_spawner
        self.catalog = catalog or _real_catalog
        self.daemon_pid = daemon_pid or _real_daemon_pid
        self.send_signal = send_signal or os.kill
        #: Zone of displayed times; None is the machine's local zone.
        self.tz = tz
        self.new_id = new_id or _uuid

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def note(self, text: str) -> None:
        self.err.write(f"{PROG}: {text}\n")

    def fail(self, text: str) -> int:
        self.note(text)
        return EXIT_FAILURE

    def json(self, doc: Any) -> None:
        import json

        self.out.write(json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def _uuid() -> str:
    import uuid

    return str(uuid.uuid4())


# =========================================================================== formatting


def _cell(value: object) -> str:
    """One table cell on one line: control characters and every blank but the
    space (tabs, line and paragraph separators) become spaces."""
    text = "-" if value is None else str(value)
    text = "".join(" " if (c.isspace() or c < " " or "\x7f" <= c <= "\x9f") else c for c in text)
    return text if text.strip() else "-"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Aligned columns, two spaces apart; no trailing blanks. ``None``/empty cells show ``-``."""
    grid = [[_cell(h) for h in headers]]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"a row has {len(row)} cells, the table {len(headers)} columns")
        grid.append([_cell(c) for c in row])
    widths = [max(len(line[i]) for line in grid) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in grid
    )


def human_duration(seconds: float) -> str:
    """``350ms``, ``1.2s``, ``3m4s``, ``2h5m``, ``3d4h``: at most two units, never rounded up."""
    import math

    if math.isnan(seconds) or math.isinf(seconds):
        return "-"
    if seconds < 0:
        return "-" + human_duration(-seconds)
    if seconds < 1:
        return f"{math.floor(seconds * 1000)}ms"
    if seconds < 60:
        return f"{math.floor(seconds * 10) / 10:.1f}s"
    total = math.floor(seconds)
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    for i, (unit, size) in enumerate(units):
        if total >= size:
            text = f"{total // size}{unit}"
            next_unit, next_size = units[i + 1] if i + 1 < len(units) else ("", 0)
            if next_size and (total % size) // next_size:
                text += f"{(total % size) // next_size}{next_unit}"
            return text
    raise AssertionError("unreachable: seconds >= 60")  # pragma: no cover


def local_time(at: datetime | None, tz: tzinfo | None = None) -> str:
    """An instant as ISO-8601 in ``tz`` (None: the machine's zone), without microseconds."""
    if at is None:
        return "-"
    shown = at.astimezone(tz) if tz is not None else at.astimezone()
    return shown.replace(microsecond=0).isoformat()


def _utc(at: datetime | None) -> str | None:
    if at is None:
        return None
    from ductile.domain.protocol import iso_utc

    return iso_utc(at)


def _text_duration(value: timedelta) -> str:
    """A configured duration as the operator would write it."""
    from ductile.domain.errors import UnitError
    from ductile.domain.quantities import format_duration

    try:
        return format_duration(value)
    except UnitError:
        return human_duration(value.total_seconds())


def schedule_summary(schedule: Schedule) -> str:
    """One line: ``every 6h ±15m 06:00\u201322:00 Europe/Berlin`` (with an en dash), or
    ``cron '30 7 * * 1-5' Europe/Berlin``."""
    from ductile.domain.schedule import CatchUp

    parts: list[str] = []
    if schedule.every is not None:
        parts.append(f"every {_text_duration(schedule.every)}")
    else:
        parts.append(f"cron '{schedule.cron}'")
    if schedule.jitter:
        parts.append(f"±{_text_duration(schedule.jitter / 2)}")
    if schedule.window is not None:
        parts.append(f"{schedule.window.start:%H:%M}{EN_DASH}{schedule.window.end:%H:%M}")
    parts.append(_zone_name(schedule.tz))
    if schedule.catch_up is CatchUp.RUN_ONCE:
        parts.append("catch_up run_once")
    if schedule.emit is not None:
        parts.append(f"emit '{schedule.emit.type}'")
    elif schedule.command != "poll":
        parts.append(f"command {schedule.command}")
    return " ".join(parts)


def _zone_name(tz: tzinfo) -> str:
    key = getattr(tz, "key", None)
    return key if isinstance(key, str) else str(tz)


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def _pretty_json(value: object) -> str:
    import json

    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


# =========================================================================== values as JSON


def job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "plugin": job.plugin,
        "command": job.command,
        "payload": job.payload,
        "status": job.status.value,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "submitted_by": job.submitted_by.value,
        "dedupe_key": job.dedupe_key,
        "created_at": _utc(job.created_at),
        "started_at": _utc(job.started_at),
        "completed_at": _utc(job.completed_at),
        "next_retry_at": _utc(job.next_retry_at),
        "last_error": job.last_error,
        "parent_job_id": job.parent_job_id,
        "source_event_id": job.source_event_id,
    }


def transition_json(t: Transition) -> dict[str, Any]:
    return {
        "at": _utc(t.at),
        "from": t.from_status.value if t.from_status is not None else None,
        "to": t.to_status.value,
        "actor": t.actor.value,
        "reason": t.reason,
    }


def _stdout_object(raw: bytes) -> dict[str, Any] | None:
    from ductile.domain.errors import ProtocolError
    from ductile.domain.protocol import decode_json_object

    try:
        return decode_json_object(raw, what="stdout")
    except ProtocolError:
        return None


def run_json(run: RunRecord) -> dict[str, Any]:
    return {
        "attempt": run.attempt,
        "started_at": _utc(run.started_at),
        "finished_at": _utc(run.finished_at),
        "duration_seconds": run.duration,
        "exit_code": run.exit_code,
        "signal": run.signal,
        "timed_out": run.timed_out,
        "error": run.error,
        "stderr_tail": run.stderr_tail.decode("utf-8", "replace"),
        "stdout_head": run.stdout_head.decode("utf-8", "replace"),
        "stdout_json": _stdout_object(run.stdout_head),
        "logs": [{"level": line.level, "message": line.message} for line in run.logs],
    }


def breaker_json(b: Breaker, reopens: datetime | None) -> dict[str, Any]:
    return {
        "command": b.command,
        "status": b.status.value,
        "failures": b.failures,
        "opened_at": _utc(b.opened_at),
        "reopens_at": _utc(reopens),
    }


def schedule_json(schedule: Schedule) -> dict[str, Any]:
    return {
        "summary": schedule_summary(schedule),
        "every_seconds": schedule.every.total_seconds() if schedule.every is not None else None,
        "cron": schedule.cron,
        "jitter_seconds": schedule.jitter.total_seconds(),
        "window": (
            {"start": f"{schedule.window.start:%H:%M}", "end": f"{schedule.window.end:%H:%M}"}
            if schedule.window is not None
            else None
        ),
        "timezone": _zone_name(schedule.tz),
        "catch_up": schedule.catch_up.value,
        "command": schedule.command if schedule.emit is None else None,
        "emit": schedule.emit.type if schedule.emit is not None else None,
    }


def _run_result(run: RunRecord) -> str:
    if run.error is None:
        return "ok"
    if run.timed_out:
        return "timed out"
    return "failed"


def _exit_text(run: RunRecord) -> str:
    from ductile.domain.outcome import signal_name

    if run.timed_out:
        return "timed out"
    if run.signal is not None:
        return f"killed by {signal_name(run.signal)}"
    if run.exit_code is not None:
        return f"exit code {run.exit_code}"
    return "did not run"


# =========================================================================== parsing helpers


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(text: str) -> float:
    """``90`` (seconds), ``1.5``, or a duration such as ``5m``."""
    import math

    try:
        value = float(text)
    except ValueError:
        from ductile.domain.errors import UnitError
        from ductile.domain.quantities import parse_duration

        try:
            value = parse_duration(text).total_seconds()
        except UnitError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def parse_time(text: str, *, now: datetime, tz: tzinfo | None = None) -> datetime:
    """``now``, ``+24h``, ``-30m`` (relative to now), or ISO-8601.

    An ISO time without an offset is in ``tz`` (None: the machine's zone); a
    date alone is its midnight. Raises :class:`UsageError`.
    """
    from datetime import UTC, datetime

    from ductile.domain.errors import UnitError
    from ductile.domain.quantities import parse_duration

    s = text.strip()
    if s.lower() == "now":
        return now
    if s[:1] in "+-" and len(s) > 1:
        try:
            delta = parse_duration(s[1:])
        except UnitError as e:
            raise UsageError(f"{text!r} is not a relative time: {e}") from None
        return now + delta if s[0] == "+" else now - delta
    try:
        at = datetime.fromisoformat(s)
    except ValueError:
        raise UsageError(
            f"{text!r} is not a time: use ISO-8601 (2026-11-23T07:30, 2026-11-23T07:30+01:00), "
            "'now', or a relative time such as +24h or -30m"
        ) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=tz) if tz is not None else at.astimezone()
    return at.astimezone(UTC)


def _payload(text: str) -> dict[str, Any]:
    from ductile.domain.errors import ProtocolError
    from ductile.domain.protocol import decode_json_object

    try:
        return decode_json_object(text.encode("utf-8", "surrogatepass"), what="--payload")
    except ProtocolError as e:
        raise UsageError(f"{e} (--payload must be one JSON object, e.g. '{{\"id\": 42}}')") from None
    except UnicodeError:
        raise UsageError("--payload is not valid text") from None


# =========================================================================== the parser

_RUN_HELP = """\
Queue one job of <plugin> durably, as if the scheduler had made it (submitted_by
"cli"). The job is written straight into the database without the instance lock;
the running daemon picks it up within a second. When no daemon runs, the job waits
in the queue until `ductile start`.

--payload is for --command handle only: it becomes the event the plugin receives,
wrapped like any other event:
  {"type": "<--event-type, default manual>", "payload": <your object>,
   "source": "cli", "timestamp": "<now, UTC>", "event_id": "<new UUID>"}
(plus "dedupe_key" when --dedupe-key is given).

--dedupe-key K: no new job when one of the same (plugin, command, K) is still
queued or succeeded within service.dedupe_ttl; the existing id is printed as
"duplicate of <id>".

--wait: follow the job to its end and print its outcome; exit 0 when it
succeeded, 1 when it ended dead or --timeout (default 300 s) passed first (the
job itself carries on). --wait needs a running daemon.
"""

_STATUS_HELP = """\
Show whether the daemon runs, the queue, and every plugin: loaded / unhealthy
(init failed) / refused (with the reason) / disabled, its circuit breakers, and the
result of its `health` command, run now (only plugins whose manifest lists health;
read-only: state_updates from health are ignored).

Exit status: 0 when everything is healthy; 1 when the daemon is not running, a
plugin is refused or unhealthy, a circuit breaker is open or half-open, or a
health check failed.
"""

_CONFIG_CHECK_HELP = """\
Validate the config file and what it refers to: plugins (loaded, refused with the
reason, disabled), routes, webhook endpoints and schedules.

Exit status: 2 when the config itself is invalid; 1 when a plugin is refused, or a
route, endpoint or schedule names a plugin that is not loaded or does not support
the command; 0 otherwise.
"""

DEFAULT_SIMULATE_DAYS = 7

_SIMULATE_HELP = """\
Run this config through ductile's deterministic simulation: the real engine on
a simulated clock, store and plugins, for --days of simulated time (seconds of real
time). Nothing real runs and the state directory is not touched. Prints a timeline
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

_SCHEDULE_HELP = """\
The schedule index: every run of a loaded plugin's schedule due between --from and
--to (default: now to +24h). Times are ISO-8601 (without an offset: local time),
'now', or relative to now: +24h, -30m, +1d.

The first run of each schedule is the one the daemon stored (jitter drawn), or,
when the daemon has not planned it yet, a plan computed from now with the jitter
at its centre ("not yet planned"). Later runs are projected with the jitter at its
centre: it is drawn only when a run is planned. Past runs are in `ductile logs`.
"""


def _common(json_flag: bool) -> argparse.ArgumentParser:
    """Options every verb accepts, placed after the verb (defaults suppressed, so
    the same option given before the verb is not overwritten)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="config file (default: $DUCTILE_CONFIG, then ./ductile.yaml)",
    )
    p.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks of internal errors (also DUCTILE_DEBUG=1)",
    )
    if json_flag:
        p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="ductile: a personal automation server. Plugins on schedules, "
        "signed webhooks and each other's events, durably.",
        epilog="Exit codes: 0 ok, 1 runtime error (or a negative answer), 2 usage or config error. "
        "`ductile <verb> --help` describes each verb.",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help="config file (default: $DUCTILE_CONFIG, then ./ductile.yaml)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False,
        help="show tracebacks of internal errors (DUCTILE_DEBUG=1)",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="<verb>")
    plain, with_json = _common(False), _common(True)

    def verb(name: str, summary: str, *, json_flag: bool = True, details: str | None = None) -> Any:
        return verbs.add_parser(
            name,
            help=summary,
            description=details or summary,
            parents=[with_json if json_flag else plain],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    verb(
        "start",
        "run the daemon in the foreground (JSON logs on stdout; SIGTERM stops, SIGHUP reloads)",
        json_flag=False,
    )

    run = verb("run", "queue one job of a plugin", details=_RUN_HELP)
    run.add_argument("plugin", help="plugin name")
    run.add_argument(
        "--command",
        default="poll",
        choices=RUNNABLE_COMMANDS,
        help="the command to run (default: poll; `health` runs with `ductile status`, "
        "`init` on start and reload)",
    )
    run.add_argument("--payload", metavar="JSON", help="event payload, a JSON object (--command handle)")
    run.add_argument(
        "--event-type",
        metavar="TYPE",
        help=f"event type for --command handle (default: {MANUAL_EVENT_TYPE})",
    )
    run.add_argument(
        "--dedupe-key", metavar="KEY", help="skip if an equal job is queued or recently succeeded"
    )
    run.add_argument("--wait", action="store_true", help="wait for the job to end and print its outcome")
    run.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help=f"with --wait: give up after this long (seconds or e.g. 10m; default {DEFAULT_WAIT_SECONDS:g})",
    )

    status = verb("status", "daemon, queue, plugins, breakers and health checks", details=_STATUS_HELP)
    status.add_argument("--no-health", action="store_true", help="do not run the plugins' health commands")

    verb("reload", "make the running daemon re-read its config (the config is checked first)", json_flag=True)
    verb("plugins", "list plugins: loaded (with schedules), refused (with reasons), disabled")

    queue = verb("queue", "list jobs queued or running, in dispatch order")
    queue.add_argument(
        "--limit",
        type=_positive_int,
        default=DEFAULT_QUEUE_LIMIT,
        metavar="N",
        help=f"at most N jobs (default {DEFAULT_QUEUE_LIMIT})",
    )

    logs = verb("logs", "the most recent finished runs, newest first, with the plugins' log lines")
    logs.add_argument("plugin", nargs="?", help="only this plugin's runs")
    logs.add_argument(
        "--limit",
        type=_positive_int,
        default=DEFAULT_LOG_LIMIT,
        metavar="N",
        help=f"at most N runs (default {DEFAULT_LOG_LIMIT})",
    )

    reset = verb("reset", "close a plugin's circuit breakers by hand")
    reset.add_argument("plugin", help="plugin name")

    job = verb("job", "one job: its record, transition log and runs")
    job.add_argument("job_id", metavar="id", help="the job id")

    config = verbs.add_parser(
        "config", help="configuration tools", description="Configuration tools.", parents=[plain]
    )
    config_verbs = config.add_subparsers(dest="config_verb", metavar="<action>")
    config_verbs.required = True
    config_verbs.add_parser(
        "check",
        help="validate the config file and what it refers to",
        description=_CONFIG_CHECK_HELP,
        parents=[with_json],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    schedule = verb("schedule", "what is due in a time range (the schedule index)", details=_SCHEDULE_HELP)
    schedule.add_argument("--from", dest="start", metavar="T", default="now", help="start (default: now)")
    schedule.add_argument("--to", dest="end", metavar="T", default="+24h", help="end (default: +24h)")
    schedule.add_argument(
        "--limit",
        type=_positive_int,
        default=DEFAULT_SCHEDULE_LIMIT,
        metavar="N",
        help=f"at most N runs per schedule (default {DEFAULT_SCHEDULE_LIMIT})",
    )
    simulate = verb("simulate", "what this config would do over days, simulated", details=_SIMULATE_HELP)
    simulate.add_argument(
        "--days", type=float, default=DEFAULT_SIMULATE_DAYS, metavar="N", help="simulated days (default 7)"
    )
    simulate.add_argument("--seed", type=int, default=1, metavar="N", help="the run's seed (default 1)")
    simulate.add_argument(
        "--start", metavar="T", default="now", help="simulated time starts here (default: now)"
    )
    simulate.add_argument(
        "--behaviour",
        action="append",
        metavar="PLUGIN[.COMMAND]=B",
        help="how a plugin behaves (default ok); see below; repeatable",
    )
    simulate.add_argument(
        "--fail",
        action="append",
        metavar="PLUGIN=RATE",
        help="the plugin fails this share of runs; repeatable",
    )
    simulate.add_argument(
        "--webhooks-per-day",
        type=float,
        default=0,
        metavar="N",
        help="webhook deliveries per day, spread over the endpoints (default 0)",
    )
    simulate.add_argument(
        "--check",
        action="store_true",
        help="also crash the simulated daemon now and then; check nothing is lost",
    )
    simulate.add_argument(
        "--store", choices=("memory", "sqlite"), default="memory", help="the store simulated (default memory)"
    )
    simulate.add_argument(
        "--show", type=int, default=5, metavar="N", help="list the first N jobs of each plugin (default 5)"
    )
    return parser


#: Options whose value may start with "-" (a relative time such as -30m).
_DASH_VALUED = ("--from", "--to", "--start")


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv``, letting ``--from -30m`` mean ``--from=-30m`` (argparse would take
    ``-30m`` for an option)."""
    joined: list[str] = []
    items = list(argv)
    i = 0
    while i < len(items):
        item = items[i]
        if item == "--":
            joined += items[i:]
            break
        if item in _DASH_VALUED and i + 1 < len(items) and items[i + 1][:1] == "-" and items[i + 1] != "--":
            joined.append(f"{item}={items[i + 1]}")
            i += 2
            continue
        joined.append(item)
        i += 1
    return parser.parse_args(joined)


# =========================================================================== shared steps


def _load(ctx: Context, args: argparse.Namespace) -> Config:
    """The config named by ``--config`` / ``$DUCTILE_CONFIG`` / ``./ductile.yaml``."""
    from ductile.adapters.config_file import load_config, resolve_config_path

    path = resolve_config_path(args.config, ctx.env)
    return load_config(path, env=ctx.env)


def _db_path(config: Config) -> Path:
    from ductile.app.bootstrap import database_path

    return database_path(config)


async def _read_store(ctx: Context, config: Config) -> Store | None:
    """The store if it exists (never created); a note on stderr when it does not."""
    path = _db_path(config)
    store = await ctx.open_store(path, False)
    if store is None:
        ctx.note(f"no database yet at {path} (ductile has not run here)")
    return store


async def _survey(ctx: Context, config: Config, store: Store | None) -> tuple[Runtime, Catalog, set[str]]:
    """Discovery plus what the store knows of ``init``: the runtime the daemon would
    have with this config, the catalog (for the trust check), and the plugins whose
    ``init`` has not run for their current manifest and config ("init pending")."""
    from ductile.app.runtime import Runtime, init_fingerprint

    catalog = ctx.catalog()
    discovery = catalog.discover(config)
    unhealthy: dict[str, str] = {}
    pending: set[str] = set()
    for name, plugin in sorted(discovery.plugins.items()):
        if not plugin.supports("init"):
            continue
        record = await store.get_init(name) if store is not None else None
        if record is None or record.fingerprint != init_fingerprint(plugin, config.plugin(name)):
            pending.add(name)
        elif not record.ok:
            unhealthy[name] = f"init failed: {record.error or 'no reason recorded'}"
    return Runtime(config=config, discovery=discovery, unhealthy=unhealthy), catalog, pending


def _daemon_pid(ctx: Context, config: Config) -> int | None:
    return ctx.daemon_pid(config.service.state_dir)


# =========================================================================== start


async def cmd_start(ctx: Context, args: argparse.Namespace) -> int:
    from ductile.adapters.config_file import resolve_config_path
    from ductile.adapters.logs import configure_logging
    from ductile.app.bootstrap import Ductile

    config = _load(ctx, args)  # a bad config exits 2 before anything else happens
    configure_logging(config.service.log_level.value, stream=ctx.out)
    path = resolve_config_path(args.config, ctx.env)
    try:
        async with Ductile(path, environ=ctx.env) as d:
            await d.serve(install_signal_handlers=True)
    except OSError as e:  # e.g. the webhook port is taken (when the listener does not wrap it)
        return ctx.fail(f"cannot start: {e.strerror or e}")
    return EXIT_OK


# =========================================================================== run


def _event(ctx: Context, args: argparse.Namespace, now: datetime) -> dict[str, Any]:
    from ductile.domain.protocol import iso_utc

    event: dict[str, Any] = {
        "type": args.event_type or MANUAL_EVENT_TYPE,
        "payload": _payload(args.payload) if args.payload is not None else {},
        "source": "cli",
        "timestamp": iso_utc(now),
        "event_id": ctx.new_id(),
    }
    if args.dedupe_key is not None:
        event["dedupe_key"] = args.dedupe_key
    return event


async def cmd_run(ctx: Context, args: argparse.Namespace) -> int:
    from ductile.domain.job import Actor, SubmittedBy

    if args.command != "handle" and (args.payload is not None or args.event_type is not None):
        raise UsageError("--payload and --event-type are for --command handle only")
    if args.dedupe_key is not None and not args.dedupe_key.strip():
        raise UsageError("--dedupe-key cannot be empty")
    if args.timeout is not None and not args.wait:
        raise UsageError("--timeout only applies with --wait")
    if args.event_type is not None and not args.event_type.strip():
        raise UsageError("--event-type cannot be empty")
    if args.payload is not None:
        _payload(args.payload)  # a bad payload is a usage error, before the config is read
    config = _load(ctx, args)
    path = _db_path(config)
    store = await ctx.open_store(path, False)  # not created before the job is known to be runnable
    try:
        runtime, _, _ = await _survey(ctx, config, store)
        reason = runtime.why_not_runnable(args.plugin, args.command)
        if reason is not None:
            return ctx.fail(f"cannot run: {reason}")
        pid = _daemon_pid(ctx, config)
        if pid is None and args.wait:
            return ctx.fail(
                f"no ductile daemon is running for state dir {config.service.state_dir}, "
                "so --wait would wait forever; nothing was queued "
                "(start the daemon with `ductile start`, or queue without --wait)"
            )
        if store is None:
            store = await ctx.open_store(path, True)
            assert store is not None
        now = ctx.now()
        job = config.new_job(
            args.plugin,
            args.command,
            job_id=ctx.new_id(),
            now=now,
            submitted_by=SubmittedBy.CLI,
            payload=_event(ctx, args, now) if args.command == "handle" else None,
            dedupe_key=args.dedupe_key,
        )
        result = await store.enqueue(job, actor=Actor.CLI, now=now, dedupe_ttl=config.service.dedupe_ttl)
        doc: dict[str, Any] = {
            "job_id": result.job_id,
            "created": result.created,
            "duplicate_of": None if result.created else result.job_id,
            "daemon_pid": pid,
            "outcome": None,
        }
        if not args.json:
            ctx.print(result.job_id if result.created else f"duplicate of {result.job_id}")
            ctx.out.flush()
        if pid is None and result.created:
            ctx.note("queued; no daemon is running — it will run when `ductile start` runs")
        code = EXIT_OK
        if args.wait:
            timeout = args.timeout if args.timeout is not None else DEFAULT_WAIT_SECONDS
            code, outcome = await _wait(ctx, store, config, result.job_id, timeout, quiet=args.json)
            doc["outcome"] = outcome
    finally:
        if store is not None:
            await store.close()
    if args.json:
        ctx.json(doc)
    return code


async def _wait(
    ctx: Context, store: Store, config: Config, job_id: str, timeout: float, *, quiet: bool
) -> tuple[int, dict[str, Any] | None]:
    """Follow a job until it is terminal; (exit code, outcome document)."""
    from ductile.domain.job import JobStatus

    deadline = ctx.monotonic() + timeout
    pause = WAIT_POLL_FIRST
    while True:
        job = await store.get_job(job_id)
        if job is None:
            return ctx.fail(f"job {job_id} disappeared while waiting (deleted by retention?)"), None
        if job.terminal:
            runs = await store.runs(job_id)
            ran = sum(r.duration for r in runs)
            outcome: dict[str, Any] = {
                "status": job.status.value,
                "attempt": job.attempt,
                "max_attempts": job.max_attempts,
                "last_error": job.last_error,
                "duration_seconds": ran,
                "elapsed_seconds": (
                    (job.completed_at - job.created_at).total_seconds() if job.completed_at else None
                ),
            }
            if not quiet:
                attempts = f"{job.attempt} attempt{'s' if job.attempt != 1 else ''}"
                line = f"{job.status.value} after {attempts} (of {job.max_attempts})"
                line += f", ran {human_duration(ran)}"
                if job.status is not JobStatus.SUCCEEDED and job.last_error:
                    line += f": {job.last_error}"
                ctx.print(line)
            return (EXIT_OK if job.status is JobStatus.SUCCEEDED else EXIT_FAILURE), outcome
        left = deadline - ctx.monotonic()
        if left <= 0:
            return (
                ctx.fail(
                    f"gave up waiting after {human_duration(timeout)}: job {job_id} is still "
                    f"{job.status.value} (attempt {job.attempt} of {job.max_attempts}); it carries on"
                ),
                None,
            )
        if _daemon_pid(ctx, config) is None:
            return (
                ctx.fail(
                    f"the daemon stopped while waiting: job {job_id} is {job.status.value}; "
                    "it will go on when `ductile start` runs"
                ),
                None,
            )
        await ctx.sleep(min(pause, left))
        pause = min(pause * 2, WAIT_POLL_MAX)


# =========================================================================== status


async def _health(
    ctx: Context,
    *,
    spawner: Spawner,
    catalog: Catalog,
    config: Config,
    plugin: Plugin,
    state: dict[str, Any],
) -> dict[str, Any]:
    """Run the plugin's ``health`` now; read-only (its state_updates are ignored)."""
    from ductile.app.spawn import plugin_env, spawn_request
    from ductile.domain.job import JobEvent
    from ductile.domain.settle import classify

    refused = catalog.verify(plugin)
    if refused is not None:
        return {"ok": False, "error": f"refused before spawn: {refused}", "duration_seconds": 0.0, "logs": []}
    settings = config.plugin(plugin.name)
    timeout = settings.timeouts.health
    request = spawn_request(
        plugin,
        "health",
        job_id=f"health-{ctx.new_id()}",
        attempt=1,
        settings=settings,
        state=state,
        now=ctx.now(),
        base_env=plugin_env(ctx.env),
    )
    outcome = await spawner.run(request)
    verdict = classify(outcome, timeout)
    logs = verdict.response.logs if verdict.response is not None else ()
    return {
        "ok": verdict.event is JobEvent.SUCCEED,
        "error": verdict.error,
        "duration_seconds": outcome.duration,
        "logs": [{"level": line.level, "message": line.message} for line in logs],
    }


async def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    import asyncio

    from ductile.domain.breaker import reopens_at
    from ductile.domain.job import JobStatus

    config = _load(ctx, args)
    pid = _daemon_pid(ctx, config)
    store = await _read_store(ctx, config)
    try:
        runtime, catalog, pending = await _survey(ctx, config, store)
        queued = await store.queue_depth() if store is not None else 0
        running = (
            len(await store.list_jobs(statuses=[JobStatus.RUNNING], limit=ALL_JOBS))
            if store is not None
            else 0
        )
        breakers = await store.breakers() if store is not None else []
        states = {
            name: (await store.get_state(name) if store is not None else {}) for name in runtime.plugins
        }
    finally:
        if store is not None:
            await store.close()
    discovery = runtime.discovery
    rows: list[dict[str, Any]] = []
    for name, plugin in discovery.plugins.items():
        state, reason = "loaded", None
        if name in runtime.unhealthy:
            state, reason = "unhealthy", runtime.unhealthy[name]
        elif name in pending:
            reason = "init pending: it runs when the daemon starts or reloads"
        rows.append({"name": name, "state": state, "reason": reason, "version": plugin.manifest.version})
    rows += [
        {"name": r.name, "state": "refused", "reason": r.reason, "version": None} for r in discovery.refused
    ]
    rows += [{"name": n, "state": "disabled", "reason": None, "version": None} for n in discovery.disabled]
    rows.sort(key=lambda r: str(r["name"]))
    for row in rows:
        policy = config.plugin(row["name"]).circuit_breaker
        row["breakers"] = [
            breaker_json(b, reopens_at(b, policy)) for b in breakers if b.plugin == row["name"] and b.is_open
        ]
        row["health"] = None

    checks = [
        r["name"]
        for r in rows
        if r["name"] in runtime.plugins and runtime.plugins[r["name"]].supports("health")
    ]
    if checks and not args.no_health:
        spawner = ctx.spawner()
        results = await asyncio.gather(
            *(
                _health(
                    ctx,
                    spawner=spawner,
                    catalog=catalog,
                    config=config,
                    plugin=runtime.plugins[name],
                    state=states.get(name, {}),
                )
                for name in checks
            )
        )
        by_name = dict(zip(checks, results, strict=True))
        for row in rows:
            row["health"] = by_name.get(row["name"])

    problems = [] if pid is not None else ["the daemon is not running"]
    for r in rows:
        if r["state"] in ("refused", "unhealthy"):
            problems.append(f"plugin '{r['name']}' is {r['state']}")
        problems += [
            f"the circuit breaker of {r['name']} {b['command']} is {b['status'].replace('_', '-')}"
            for b in r["breakers"]
        ]
        if r["health"] is not None and not r["health"]["ok"]:
            problems.append(f"the health check of {r['name']} failed")
    healthy = not problems
    doc = {
        "healthy": healthy,
        "problems": problems,
        "daemon": {"running": pid is not None, "pid": pid, "state_dir": config.service.state_dir},
        "database": str(_db_path(config)) if store is not None else None,
        "queue": {"queued": queued, "running": running},
        "plugins": [
            {k: r[k] for k in ("name", "state", "reason", "version", "breakers", "health")} for r in rows
        ],
    }
    if args.json:
        ctx.json(doc)
    else:
        where = f"state dir {config.service.state_dir}"
        ctx.print(
            f"daemon: running (pid {pid}), {where}" if pid is not None else f"daemon: not running, {where}"
        )
        ctx.print(f"queue: {queued} queued, {running} running")
        ctx.print()
        if rows:
            ctx.print(
                table(
                    ["PLUGIN", "STATE", "BREAKER", "HEALTH", "TOOK", "DETAIL"],
                    [_status_row(ctx, r) for r in rows],
                )
            )
        else:
            ctx.print(f"no plugins in {config.plugins_dir}")
        ctx.print()
        ctx.print("all healthy" if healthy else "NOT healthy: " + "; ".join(problems))
    return EXIT_OK if healthy else EXIT_FAILURE


def _status_row(ctx: Context, row: Mapping[str, Any]) -> list[object]:
    from datetime import datetime

    breakers = []
    for b in row["breakers"]:
        if b["status"] == "open":
            until = b["reopens_at"]
            shown = local_time(datetime.fromisoformat(until), ctx.tz) if until else "?"
            breakers.append(f"{b['command']}: open until {shown}")
        else:
            breakers.append(f"{b['command']}: half-open")
    breaker = "; ".join(breakers) if breakers else ("closed" if row["state"] != "refused" else None)
    health = row["health"]
    details = [row["reason"]] if row["reason"] else []
    if health is None:
        shown_health, took = None, None
    else:
        shown_health = "ok" if health["ok"] else "error"
        took = human_duration(health["duration_seconds"])
        if health["error"]:
            details.append(f"health: {health['error']}")
    return [row["name"], row["state"], breaker, shown_health, took, "; ".join(details) or None]


# =========================================================================== reload


async def cmd_reload(ctx: Context, args: argparse.Namespace) -> int:
    import signal

    config = _load(ctx, args)  # an invalid config exits 2 here: the daemon is not disturbed
    pid = _daemon_pid(ctx, config)
    if pid is None:
        return ctx.fail(f"no ductile daemon is running for state dir {config.service.state_dir}")
    try:
        ctx.send_signal(pid, signal.SIGHUP)
    except ProcessLookupError:
        return ctx.fail(f"the daemon (pid {pid}) exited before it could be asked to reload")
    except PermissionError:
        return ctx.fail(f"not allowed to signal the daemon (pid {pid}): run as the user that runs it")
    if args.json:
        ctx.json({"pid": pid})
    else:
        ctx.print(f"reload requested (pid {pid})")
    return EXIT_OK


# =========================================================================== plugins


def _plugins_doc(config: Config, discovery: Discovery) -> dict[str, Any]:
    loaded = []
    for name, plugin in sorted(discovery.plugins.items()):
        schedule = config.plugin(name).schedule
        loaded.append(
            {
                "name": name,
                "version": plugin.manifest.version,
                "description": plugin.manifest.description,
                "commands": sorted(plugin.manifest.commands),
                "directory": plugin.directory,
                "schedule": schedule_json(schedule) if schedule is not None else None,
            }
        )
    return {
        "loaded": loaded,
        "refused": [
            {"name": r.name, "directory": r.directory, "reason": r.reason} for r in discovery.refused
        ],
        "disabled": list(discovery.disabled),
    }


async def cmd_plugins(ctx: Context, args: argparse.Namespace) -> int:
    config = _load(ctx, args)
    discovery = ctx.catalog().discover(config)
    doc = _plugins_doc(config, discovery)
    if args.json:
        ctx.json(doc)
        return EXIT_OK
    _print_plugins(ctx, config, doc)
    return EXIT_OK


def _print_plugins(ctx: Context, config: Config, doc: Mapping[str, Any]) -> None:
    if not (doc["loaded"] or doc["refused"] or doc["disabled"]):
        ctx.print(f"no plugins in {config.plugins_dir}")
        return
    if doc["loaded"]:
        ctx.print(f"loaded ({len(doc['loaded'])}):")
        rows = [
            [
                p["name"],
                p["version"],
                ",".join(p["commands"]),
                p["schedule"]["summary"] if p["schedule"] else None,
            ]
            for p in doc["loaded"]
        ]
        ctx.print(_indent(table(["NAME", "VERSION", "COMMANDS", "SCHEDULE"], rows), "  "))
    if doc["refused"]:
        ctx.print(f"refused ({len(doc['refused'])}):")
        ctx.print(
            _indent(table(["NAME", "REASON"], [[r["name"], r["reason"]] for r in doc["refused"]]), "  ")
        )
    if doc["disabled"]:
        ctx.print(f"disabled ({len(doc['disabled'])}): {', '.join(doc['disabled'])}")


# =========================================================================== queue


async def cmd_queue(ctx: Context, args: argparse.Namespace) -> int:
    from ductile.domain.job import JobStatus

    config = _load(ctx, args)
    store = await _read_store(ctx, config)
    jobs: list[Job] = []
    if store is not None:
        try:
            # list_jobs is newest first; the dispatcher takes the oldest first: read them all.
            running = await store.list_jobs(statuses=[JobStatus.RUNNING], limit=ALL_JOBS)
            queued = await store.list_jobs(statuses=[JobStatus.QUEUED], limit=ALL_JOBS)
        finally:
            await store.close()
        jobs = (list(reversed(running)) + list(reversed(queued)))[: args.limit]
    if args.json:
        ctx.json({"jobs": [job_json(j) for j in jobs]})
        return EXIT_OK
    if not jobs:
        ctx.print("the queue is empty")
        return EXIT_OK
    rows = []
    for j in jobs:
        if j.status is JobStatus.RUNNING:
            when = f"started {local_time(j.started_at, ctx.tz)}"
        elif j.next_retry_at is not None:
            when = f"retry at {local_time(j.next_retry_at, ctx.tz)}"
        else:
            when = "next"
        rows.append(
            [j.id, j.plugin, j.command, j.status.value, f"{j.attempt}/{j.max_attempts}",
             local_time(j.created_at, ctx.tz), when]
        )  # fmt: skip
    ctx.print(table(["ID", "PLUGIN", "COMMAND", "STATUS", "ATTEMPT", "CREATED", "WHEN"], rows))
    return EXIT_OK


# =========================================================================== logs


async def cmd_logs(ctx: Context, args: argparse.Namespace) -> int:
    config = _load(ctx, args)
    store = await _read_store(ctx, config)
    pairs: list[tuple[Job, RunRecord]] = []
    if store is not None:
        try:
            pairs = [(v.job, v.run) for v in await store.recent_runs(plugin=args.plugin, limit=args.limit)]
        finally:
            await store.close()
    if args.json:
        ctx.json({"runs": [{"job": job_json(j), "run": run_json(r)} for j, r in pairs]})
        return EXIT_OK
    if not pairs:
        ctx.print("no finished runs" + (f" of {args.plugin}" if args.plugin else ""))
        return EXIT_OK
    lines = table(
        ["FINISHED", "PLUGIN", "COMMAND", "JOB", "ATTEMPT", "RESULT", "TOOK"],
        [
            [local_time(run.finished_at, ctx.tz), job.plugin, job.command, job.id,
             f"{run.attempt}/{job.max_attempts}", _run_result(run), human_duration(run.duration)]
            for job, run in pairs
        ],
    ).splitlines()  # fmt: skip
    ctx.print(lines[0])
    for line, (_, run) in zip(lines[1:], pairs, strict=True):
        ctx.print(line)
        if run.error:
            ctx.print(f"    error: {_cell(run.error)}")
        for entry in run.logs:
            ctx.print(f"    [{entry.level}] {_cell(entry.message)}")
    return EXIT_OK


# =========================================================================== reset


async def cmd_reset(ctx: Context, args: argparse.Namespace) -> int:
    config = _load(ctx, args)
    path = _db_path(config)
    folder = os.path.join(config.plugins_dir, args.plugin)
    known = args.plugin in config.plugins or os.path.isdir(folder)  # noqa: ASYNC240 - one stat
    store = await ctx.open_store(path, False)
    reset: list[Breaker] = []
    if store is not None:
        try:
            reset = await store.reset_breakers(args.plugin)
        finally:
            await store.close()
    if not reset and not known:
        return ctx.fail(f"no plugin named '{args.plugin}' in the config or in {config.plugins_dir}")
    if args.json:
        ctx.json(
            {
                "plugin": args.plugin,
                "reset": [
                    {
                        "command": b.command,
                        "status": b.status.value,
                        "failures": b.failures,
                        "opened_at": _utc(b.opened_at),
                    }
                    for b in reset
                ],
            }
        )
        return EXIT_OK
    if not reset:
        ctx.print(f"no breaker of {args.plugin} was open")
    for b in reset:
        since = f" since {local_time(b.opened_at, ctx.tz)}" if b.opened_at else ""
        ctx.print(
            f"closed the breaker of {args.plugin} {b.command} "
            f"(was {b.status.value.replace('_', '-')}{since}, {b.failures} failure(s))"
        )
    return EXIT_OK


# =========================================================================== job


async def cmd_job(ctx: Context, args: argparse.Namespace) -> int:
    config = _load(ctx, args)
    store = await _read_store(ctx, config)
    if store is None:
        return ctx.fail(f"no job with id {args.job_id}")
    try:
        job = await store.get_job(args.job_id)
        transitions = await store.transitions(args.job_id) if job is not None else []
        runs = await store.runs(args.job_id) if job is not None else []
    finally:
        await store.close()
    if job is None:
        return ctx.fail(f"no job with id {args.job_id}")
    if args.json:
        ctx.json(
            {
                "job": job_json(job),
                "transitions": [transition_json(t) for t in transitions],
                "runs": [run_json(r) for r in runs],
            }
        )
        return EXIT_OK
    _print_job(ctx, job, transitions, runs)
    return EXIT_OK


def _print_job(ctx: Context, job: Job, transitions: Sequence[Transition], runs: Sequence[RunRecord]) -> None:
    t = ctx.tz
    fields = [
        ("plugin", job.plugin),
        ("command", job.command),
        ("status", job.status.value),
        ("attempt", f"{job.attempt} of {job.max_attempts}"),
        ("submitted by", job.submitted_by.value),
        ("dedupe key", job.dedupe_key),
        ("created", local_time(job.created_at, t)),
        ("started", local_time(job.started_at, t)),
        ("completed", local_time(job.completed_at, t)),
        ("next retry", local_time(job.next_retry_at, t)),
        ("last error", job.last_error),
        ("parent job", job.parent_job_id),
        ("source event", job.source_event_id),
    ]
    ctx.print(f"job {job.id}")
    ctx.print(_indent(table(["FIELD", "VALUE"], fields).split("\n", 1)[1], "  "))
    ctx.print("  payload:")
    ctx.print(_indent(_pretty_json(job.payload)))
    ctx.print()
    ctx.print("transitions:")
    ctx.print(
        _indent(
            table(
                ["TIME", "FROM", "TO", "ACTOR", "REASON"],
                [
                    [local_time(x.at, t), x.from_status.value if x.from_status else "(new)",
                     x.to_status.value, x.actor.value, x.reason]
                    for x in transitions
                ],
            ),
            "  ",
        )
    )  # fmt: skip
    for run in runs:
        ctx.print()
        ctx.print(f"run of attempt {run.attempt}:")
        rows = [
            ("started", local_time(run.started_at, t)),
            ("finished", local_time(run.finished_at, t)),
            ("took", human_duration(run.duration)),
            ("exit", _exit_text(run)),
            ("error", run.error),
        ]
        ctx.print(_indent(table(["FIELD", "VALUE"], rows).split("\n", 1)[1], "  "))
        if run.logs:
            ctx.print("  logs:")
            for line in run.logs:
                ctx.print(f"    [{line.level}] {_cell(line.message)}")
        if run.stderr_tail:
            ctx.print("  stderr (tail):")
            ctx.print(_indent(run.stderr_tail.decode("utf-8", "replace").rstrip("\n")))
        if run.stdout_head:
            ctx.print("  stdout (head):")
            parsed = _stdout_object(run.stdout_head)
            text = _pretty_json(parsed) if parsed is not None else run.stdout_head.decode("utf-8", "replace")
            ctx.print(_indent(text.rstrip("\n")))


# =========================================================================== config check


def check_references(config: Config, discovery: Discovery) -> dict[str, Any]:
    """Routes, endpoints and schedules against the loaded plugins; every problem named."""
    problems: list[str] = []

    def absent(name: str) -> str:
        if name in discovery.disabled or not config.plugin(name).enabled:
            return f"plugin '{name}' is disabled"
        for refusal in discovery.refused:
            if refusal.name == name:
                return f"plugin '{name}' is refused"
        return f"plugin '{name}' is not loaded"

    def lacks(name: str, command: str) -> str | None:
        plugin = discovery.plugins.get(name)
        if plugin is None:
            return absent(name)
        if not plugin.supports(command):
            return f"plugin '{name}' does not support '{command}'"
        return None

    routes = []
    for i, route in enumerate(config.routes):
        problem = None
        if route.source not in discovery.plugins:
            problem = f"from: {absent(route.source)}"
        elif (why := lacks(route.target, route.command)) is not None:
            problem = f"to: {why}"
        if problem is not None:
            problems.append(f"routes[{i}]: {problem}")
        routes.append(
            {
                "from": route.source,
                "event_type": route.event_type,
                "to": route.target,
                "command": route.command,
                "problem": problem,
            }
        )
    webhooks = None
    if config.webhooks is not None:
        endpoints = []
        for i, ep in enumerate(config.webhooks.endpoints):
            problem = lacks(ep.plugin, "handle")
            if problem is not None:
                problems.append(f"webhooks.endpoints[{i}] ({ep.path}): {problem}")
            endpoints.append(
                {"path": ep.path, "plugin": ep.plugin, "event_type": ep.event_type, "problem": problem}
            )
        webhooks = {"listen": f"{config.webhooks.host}:{config.webhooks.port}", "endpoints": endpoints}
    schedules = []
    for name, settings in sorted(config.plugins.items()):
        schedule = settings.schedule
        if schedule is None or not settings.enabled:
            continue
        problem = None
        if name not in discovery.plugins:
            problem = absent(name)
        elif schedule.emit is None:
            problem = lacks(name, schedule.command)
        if problem is not None:
            problems.append(f"plugins.{name}.schedule: {problem}")
        schedules.append({"plugin": name, "summary": schedule_summary(schedule), "problem": problem})
    for refusal in discovery.refused:
        problems.append(f"plugin '{refusal.name}' refused: {refusal.reason}")
    return {"routes": routes, "webhooks": webhooks, "schedules": schedules, "problems": problems}


async def cmd_config(ctx: Context, args: argparse.Namespace) -> int:
    # ``config`` has one action, ``check`` (argparse requires it).
    config = _load(ctx, args)
    discovery = ctx.catalog().discover(config)
    refs = check_references(config, discovery)
    doc = {
        "ok": not refs["problems"],
        "config": config.source,
        "state_dir": config.service.state_dir,
        "plugins_dir": config.plugins_dir,
        "plugins": _plugins_doc(config, discovery),
        **refs,
        "warnings": list(config.advisories()),
    }
    if args.json:
        ctx.json(doc)
        return EXIT_OK if doc["ok"] else EXIT_FAILURE
    ctx.print(f"config {config.source}: valid")
    ctx.print(f"  state_dir    {config.service.state_dir}")
    ctx.print(f"  plugins_dir  {config.plugins_dir}")
    ctx.print()
    _print_plugins(ctx, config, doc["plugins"])
    if refs["routes"]:
        ctx.print()
        ctx.print(f"routes ({len(refs['routes'])}):")
        rows = [[r["from"], r["event_type"], r["to"], r["problem"] or "ok"] for r in refs["routes"]]
        ctx.print(_indent(table(["FROM", "EVENT", "TO", "CHECK"], rows), "  "))
    if refs["webhooks"] is not None:
        hooks = refs["webhooks"]
        ctx.print()
        ctx.print(f"webhooks on {hooks['listen']} ({len(hooks['endpoints'])} endpoint(s)):")
        if hooks["endpoints"]:
            rows = [
                [e["path"], e["plugin"], e["event_type"], e["problem"] or "ok"] for e in hooks["endpoints"]
            ]
            ctx.print(_indent(table(["PATH", "PLUGIN", "EVENT", "CHECK"], rows), "  "))
    if refs["schedules"]:
        ctx.print()
        ctx.print(f"schedules ({len(refs['schedules'])}):")
        rows = [[s["plugin"], s["summary"], s["problem"] or "ok"] for s in refs["schedules"]]
        ctx.print(_indent(table(["PLUGIN", "SCHEDULE", "CHECK"], rows), "  "))
    ctx.print()
    if doc["warnings"]:
        ctx.print(f"{len(doc['warnings'])} warning(s), not errors:")
        for warning in doc["warnings"]:
            ctx.print(f"  - {warning}")
        ctx.print()
    if refs["problems"]:
        ctx.print(f"{len(refs['problems'])} problem(s):")
        for problem in refs["problems"]:
            ctx.print(f"  - {problem}")
        return EXIT_FAILURE
    ctx.print("no problems found")
    return EXIT_OK


# =========================================================================== schedule


def schedule_runs(
    schedule: Schedule,
    *,
    key: str,
    stored: PlannedRun | None,
    now: datetime,
    start: datetime,
    end: datetime,
    limit: int,
) -> list[tuple[PlannedRun, str]]:
    """The runs of one schedule in ``[start, end)`` with their kind (see the module docs)."""
    from datetime import timedelta

    from ductile.domain.schedule import plan_next, preview

    if stored is not None and stored.fingerprint == schedule.fingerprint():
        first, kind = stored, "planned"
    else:
        first, kind = plan_next(schedule, key=key, previous=None, now=now, draw=0.5), "not_yet_planned"
    runs: list[tuple[PlannedRun, str]] = []
    if first.planned_at < now:
        if start <= first.planned_at < end:
            runs.append((first, "overdue"))
        first, kind = plan_next(schedule, key=key, previous=first, now=now, draw=0.5), "projected"
    if first.planned_at < start:  # jump to the range instead of walking to it
        first = plan_next(schedule, key=key, previous=first, now=start - timedelta(microseconds=1), draw=0.5)
        kind = "projected"
    for i, run in enumerate(preview(schedule, first, start, end, limit=max(limit - len(runs), 0))):
        runs.append((run, kind if i == 0 and run is first else "projected"))
    return runs[:limit]


async def cmd_schedule(ctx: Context, args: argparse.Namespace) -> int:
    from datetime import UTC

    now = ctx.now()
    start = parse_time(args.start, now=now, tz=ctx.tz)
    end = parse_time(args.end, now=now, tz=ctx.tz)
    if end <= start:
        raise UsageError(f"--to ({args.end}) must be after --from ({args.start})")
    config = _load(ctx, args)
    store = await _read_store(ctx, config)
    try:
        runtime, _, _ = await _survey(ctx, config, store)
        schedules = runtime.schedules()
        stored = {key: await store.planned(key) if store is not None else None for key in schedules}
    finally:
        if store is not None:
            await store.close()
    found: list[tuple[datetime, dict[str, Any]]] = []
    truncated: list[str] = []
    for key, schedule in sorted(schedules.items()):
        runs = schedule_runs(
            schedule, key=key, stored=stored[key], now=now, start=start, end=end, limit=args.limit
        )
        if len(runs) >= args.limit:
            truncated.append(key)
        target = {"emit": schedule.emit.type} if schedule.emit is not None else {"command": schedule.command}
        found += [
            (
                run.planned_at,
                {
                    "plugin": key,
                    "kind": kind,
                    "planned_at": _utc(run.planned_at),
                    "planned_local": local_time(run.planned_at, schedule.tz),
                    "nominal_at": _utc(run.nominal_at),
                    "nominal_local": local_time(run.nominal_at, schedule.tz),
                    "offset_seconds": run.offset.total_seconds(),
                    "snapped": run.snapped,
                    "timezone": _zone_name(schedule.tz),
                    "target": target,
                },
            )
            for run, kind in runs
        ]
    found.sort(key=lambda pair: (pair[0], pair[1]["plugin"]))
    for key in truncated:
        ctx.note(f"{key}: only the first {args.limit} runs are shown (use --limit or a shorter range)")
    if args.json:
        ctx.json({"from": _utc(start), "to": _utc(end), "runs": [doc for _, doc in found]})
        return EXIT_OK
    span = f"{local_time(start, ctx.tz)} to {local_time(end, ctx.tz)}"
    if not schedules:
        ctx.print("no schedules (no loaded plugin has one)")
        return EXIT_OK
    if not found:
        ctx.print(f"nothing is due from {span}")
        return EXIT_OK
    ctx.print(f"due from {span}:")
    rows = [
        [
            r["plugin"],
            r["planned_local"],
            r["timezone"],
            at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            r["nominal_local"],
            _signed(r["offset_seconds"]),
            "yes" if r["snapped"] else "no",
            r["kind"].replace("_", " "),
        ]
        for at, r in found
    ]
    ctx.print(table(["PLUGIN", "PLANNED", "ZONE", "UTC", "NOMINAL", "JITTER", "SNAPPED", "KIND"], rows))
    return EXIT_OK


def _signed(seconds: float) -> str:
    if seconds == 0:
        return "0s"
    return ("+" if seconds > 0 else "") + human_duration(seconds)


# =========================================================================== simulate


async def cmd_simulate(ctx: Context, args: argparse.Namespace) -> int:
    from ductile.app.simulation import simulate_cli

    return await simulate_cli(ctx, args)


# =========================================================================== main


HANDLERS: dict[str, Handler] = {
    "start": cmd_start,
    "run": cmd_run,
    "status": cmd_status,
    "reload": cmd_reload,
    "plugins": cmd_plugins,
    "queue": cmd_queue,
    "logs": cmd_logs,
    "reset": cmd_reset,
    "job": cmd_job,
    "config": cmd_config,
    "schedule": cmd_schedule,
    "simulate": cmd_simulate,
}


def _config_message(ctx: Context, args: argparse.Namespace, error: Exception) -> str:
    message = str(error)
    try:
        from ductile.adapters.config_file import resolve_config_path

        path = str(resolve_config_path(getattr(args, "config", None), ctx.env))
    except Exception:  # pragma: no cover - resolving a path does not fail in practice
        return message
    if path in message:
        if not os.path.exists(path):
            message += " (give one with --config PATH or $DUCTILE_CONFIG)"
        return message
    return f"{path}: {message}"


def main(argv: Sequence[str] | None = None, *, context: Context | None = None) -> int:
    """Run one ``ductile`` command; returns the exit code (the console script exits with it)."""
    ctx = context or Context()
    parser = build_parser()
    try:
        args = parse_args(parser, sys.argv[1:] if argv is None else argv)
    except SystemExit as e:  # --help (0) or a usage error (2, message already printed)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if args.verb is None:
        parser.print_usage(ctx.err)
        ctx.note("a verb is required (see `ductile --help`)")
        return EXIT_USAGE
    debug = bool(args.debug) or ctx.env.get("DUCTILE_DEBUG", "") not in ("", "0")
    handler = HANDLERS[args.verb]
    try:
        import asyncio

        from ductile.domain.errors import ConfigError, DuctileError

        try:
            return asyncio.run(handler(ctx, args))
        except UsageError as e:
            ctx.note(str(e))
            return EXIT_USAGE
        except ConfigError as e:
            ctx.note(_config_message(ctx, args, e))
            return EXIT_USAGE
        except DuctileError as e:
            ctx.note(str(e))
            return EXIT_FAILURE
    except KeyboardInterrupt:
        ctx.note("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`ductile queue | head`): say nothing more, and keep
        # the interpreter from complaining while flushing stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # a stdout without a descriptor (tests)
            pass
        finally:
            os.close(devnull)
        return EXIT_FAILURE
    except Exception as e:
        ctx.note(f"internal error: {type(e).__name__}: {e}")
        if debug:
            import traceback

            ctx.err.write("".join(traceback.format_exception(e)))
        else:
            ctx.err.write("(run with --debug or DUCTILE_DEBUG=1 for the traceback)\n")
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
