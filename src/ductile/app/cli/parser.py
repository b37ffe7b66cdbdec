"""The command line's grammar: every verb, its options and its help text.

Imported at start-up (``ductile --help``): only the standard library's argparse
at import time.
"""

from __future__ import annotations

import argparse

from ductile.app.cli import helptext
from ductile.app.cli.context import PROG
from ductile.app.cli.parser_tools import store_actions

#: The default event type of ``run --command handle``, for the help text only (``--help`` imports
#: no domain module); ``tests/unit/test_cli.py`` pins it to ``ductile.domain.routing.MANUAL_EVENT_TYPE``.
MANUAL_EVENT_TYPE = "manual"

#: ``typing`` alone costs ~7 ms to import; the type checkers treat this name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

#: Default bound of ``run --wait``.
DEFAULT_WAIT_SECONDS = 300.0
#: Default number of runs ``logs`` shows.
DEFAULT_LOG_LIMIT = 20
#: Most runs ``schedule --to T`` lists per schedule.
DEFAULT_SCHEDULE_LIMIT = 1000
#: Default number of jobs ``jobs`` lists.
DEFAULT_JOBS_LIMIT = 50
#: How long ``reload`` waits for the daemon's report by default.
DEFAULT_RELOAD_WAIT = 60.0
#: Runs per schedule ``schedule`` lists without ``--to``: a terminal's worth.
DEFAULT_SCHEDULE_NEXT = 10
#: Default number of jobs ``queue`` lists.
DEFAULT_QUEUE_LIMIT = 1000
#: Default number of facts ``facts`` lists.
DEFAULT_FACTS_LIMIT = 20
#: Commands ``run`` may not queue: ``health`` runs with ``status``, ``init`` on start/reload.
NOT_RUNNABLE_COMMANDS = ("health", "init")
#: Simulated days of ``simulate`` unless told.
DEFAULT_SIMULATE_DAYS = 7


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
    p.add_argument(
        "--version", action="store_true", default=argparse.SUPPRESS, help="print the version and exit"
    )
    if json_flag:
        p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    return p


def build_parser() -> argparse.ArgumentParser:
    """The whole grammar: the options every verb takes, then each verb with its own."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="ductile: a personal automation server. Plugins on schedules, "
        "signed webhooks and each other's events, durably.",
        epilog="Exit codes: 0 ok, 1 runtime error (or a negative answer), 2 usage or config error. "
        "`ductile <verb> --help` describes each verb.",
    )
    _global_options(parser)
    verbs = parser.add_subparsers(dest="verb", metavar="<verb>")
    plain, with_json = _common(False), _common(True)

    def verb(
        name: str, summary: str, *, json_flag: bool = True, details: str | None = None
    ) -> argparse.ArgumentParser:
        return verbs.add_parser(
            name,
            help=summary,
            description=details or summary,
            parents=[with_json if json_flag else plain],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    _daemon_verbs(verb)
    verb("plugins", "list plugins: loaded (with schedules), refused (with reasons), disabled")
    _inspect_options(verb)
    _control_options(verb)
    _operate_options(verb)
    _config_actions(
        verbs.add_parser(
            "config", help="configuration tools", description="Configuration tools.", parents=[plain]
        ),
        with_json,
    )
    _schedule_options(
        verb("schedule", "what is due in a time range (the schedule index)", details=helptext.SCHEDULE_HELP)
    )
    _simulate_options(
        verb("simulate", "what this config would do over days, simulated", details=helptext.SIMULATE_HELP)
    )
    _scaffold_verbs(verb, verbs, plain)
    _storage_verbs(verb)
    store_actions(verbs, plain)
    return parser


def _daemon_verbs(verb: Callable[..., argparse.ArgumentParser]) -> None:
    """start, run, status and reload: the verbs that run or reach the daemon."""
    _start_options(
        verb(
            "start",
            "run the daemon in the foreground (logs on stdout; SIGTERM stops, SIGHUP reloads)",
            json_flag=False,
        )
    )
    _run_options(verb("run", "queue one job of a plugin", details=helptext.RUN_HELP))
    status = verb(
        "status", "daemon, queue, plugins, breakers and health checks", details=helptext.STATUS_HELP
    )
    status.add_argument("--no-health", action="store_true", help="do not run the plugins' health commands")
    _reload_options(
        verb(
            "reload",
            "make the running daemon re-read its config and print what changed (the config is checked first)",
        )
    )


def _scaffold_verbs(
    verb: Callable[..., argparse.ArgumentParser],
    verbs: argparse._SubParsersAction[argparse.ArgumentParser],
    plain: argparse.ArgumentParser,
) -> None:
    """``init [DIR]`` and ``new plugin NAME --lang sh|python``."""
    init = verb(
        "init",
        "write a commented starter ductile.yaml and a plugins folder with one shell plugin",
        json_flag=False,
    )
    init.add_argument("dir", nargs="?", default=".", metavar="DIR", help="where (default: .)")
    new = verbs.add_parser(
        "new", help="write a new plugin into plugins_dir", description="Write new things.", parents=[plain]
    )
    kinds = new.add_subparsers(dest="new_what", metavar="<what>")
    kinds.required = True
    plugin = kinds.add_parser(
        "plugin",
        help="a manifest and an entrypoint that pass `config check` and run",
        description="Write <plugins_dir>/NAME: manifest.yaml and run.sh or run.py (never overwrites).",
        parents=[plain],
    )
    plugin.add_argument("name", metavar="NAME", help="the plugin's name (its folder)")
    plugin.add_argument(
        "--lang",
        choices=("sh", "python"),
        default="sh",
        help="POSIX sh (default) or Python with ductile.plugin",
    )


def _global_options(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--debug`` and ``--version`` before the verb (every verb takes them too)."""
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
    parser.add_argument("--version", action="store_true", default=False, help="print the version and exit")


def _reload_options(reload: argparse.ArgumentParser) -> None:
    reload.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help=f"wait this long for the daemon's report (default {DEFAULT_RELOAD_WAIT:g})",
    )


def _start_options(start: argparse.ArgumentParser) -> None:
    start.add_argument(
        "--log-format",
        choices=("auto", "json", "text"),
        default="auto",
        help="log lines as JSON (D18) or text for a person; auto (default): text on a terminal, else JSON",
    )


def _storage_verbs(verb: Callable[..., argparse.ArgumentParser]) -> None:
    """selfcheck and backup."""
    what = "check the state directory and the database (integrity, schema, space...)"
    verb("selfcheck", what, details=helptext.SELFCHECK_HELP)
    backup = verb("backup", "copy the database, online, into a new file", details=helptext.BACKUP_HELP)
    backup.add_argument("--to", metavar="FILE", required=True, help="the new file (never overwritten)")


def _config_actions(config: argparse.ArgumentParser, with_json: argparse.ArgumentParser) -> None:
    """``config`` takes an action: ``check`` (the only one so far)."""
    actions = config.add_subparsers(dest="config_verb", metavar="<action>")
    actions.required = True
    actions.add_parser(
        "check",
        help="validate the config file and what it refers to",
        description=helptext.CONFIG_CHECK_HELP,
        parents=[with_json],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _run_options(run: argparse.ArgumentParser) -> None:
    run.add_argument("plugin", help="plugin name")
    run.add_argument(
        "--command",
        default="poll",
        metavar="COMMAND",
        help="the command to run: poll (default), handle, or one of the plugin's v2 manifest "
        "(`health` runs with `ductile status`, `init` on start and reload)",
    )
    run.add_argument(
        "--payload",
        metavar="JSON",
        help="a JSON object: the event's payload (--command handle), else the job's payload",
    )
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


def _inspect_options(verb: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """queue, logs, reset and job."""
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
    logs.add_argument(
        "-f", "--follow", action="store_true", help="then print each run as it ends, until interrupted"
    )
    reset = verb("reset", "close a plugin's circuit breakers by hand")
    reset.add_argument("plugin", help="plugin name")
    job = verb("job", "one job: its record, transition log and runs")
    job.add_argument("job_id", metavar="id", help=_ID_HELP)


_ID_HELP = "the job id, or an unambiguous prefix of at least 8 characters"
_STATUSES = ("queued", "running", "succeeded", "dead")


def _operate_options(verb: Callable[..., argparse.ArgumentParser]) -> None:
    """jobs, retry, cancel and version."""
    jobs = verb("jobs", "list jobs, newest first, with filters")
    jobs.add_argument(
        "--status", action="append", choices=_STATUSES, help="only jobs in this state; repeatable"
    )
    jobs.add_argument("--plugin", metavar="P", help="only this plugin's jobs")
    jobs.add_argument("--command", metavar="C", help="only this command's jobs")
    jobs.add_argument(
        "--since", metavar="T", help="created within this long (1h, 2d) or since this time (ISO-8601)"
    )
    jobs.add_argument("--text", metavar="TEXT", help="text in the last error, stderr or response")
    jobs.add_argument(
        "--limit",
        type=_positive_int,
        default=DEFAULT_JOBS_LIMIT,
        metavar="N",
        help=f"at most N jobs (default {DEFAULT_JOBS_LIMIT})",
    )
    retry = verb("retry", "queue a dead or succeeded job again, as a new job linked to it")
    retry.add_argument("job_id", metavar="id", help=_ID_HELP)
    cancel = verb("cancel", "cancel a queued job (it becomes dead)")
    cancel.add_argument("job_id", metavar="id", help=_ID_HELP)
    verb("version", "print the version", json_flag=False)


def _control_options(verb: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """pause, resume and facts."""
    for name, summary in (
        ("pause", "pause a plugin's schedules, or one (<plugin>/<schedule-id>); queued jobs still run"),
        ("resume", "resume what `ductile pause` paused"),
    ):
        target = verb(name, summary)
        target.add_argument("target", metavar="plugin[/schedule]", help="a plugin, or one of its schedules")
    facts = verb("facts", "a plugin's facts (manifest fact_outputs), newest first")
    facts.add_argument("plugin", help="plugin name")
    facts.add_argument("--type", metavar="T", help="only facts of this fact_type")
    facts.add_argument(
        "--limit",
        type=_positive_int,
        default=DEFAULT_FACTS_LIMIT,
        metavar="N",
        help=f"at most N facts (default {DEFAULT_FACTS_LIMIT})",
    )


def _schedule_options(schedule: argparse.ArgumentParser) -> None:
    schedule.add_argument("--from", dest="start", metavar="T", default="now", help="start (default: now)")
    schedule.add_argument(
        "--to", dest="end", metavar="T", default=None, help="end (default: none, the next runs only)"
    )
    schedule.add_argument(
        "--limit",
        type=_positive_int,
        default=None,
        metavar="N",
        help=f"at most N runs per schedule (default {DEFAULT_SCHEDULE_NEXT}; "
        f"{DEFAULT_SCHEDULE_LIMIT} with --to)",
    )


def _simulate_options(simulate: argparse.ArgumentParser) -> None:
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
