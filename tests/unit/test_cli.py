"""The command line with fakes: parser, formatting, exit codes, every verb's output.

The verbs run through :func:`ductile.app.cli.main` with a :class:`Context`
whose store is an :class:`InMemoryStore`, whose spawner is a
:class:`ScriptedSpawner`, and whose daemon, signals, clock and sleeps are
fakes. Config files and plugin directories are real (in ``tmp_path``): the
config reader and the plugin discovery are cheap and already tested alone.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import re
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ductile.app.cli import main
from ductile.app.cli.context import Context, UsageError
from ductile.app.cli.format import cell, human_duration, local_time, parse_time, schedule_summary, table
from ductile.app.cli.parser import (
    DEFAULT_LOG_LIMIT,
    DEFAULT_QUEUE_LIMIT,
    build_parser,
    parse_args,
)
from ductile.app.cli.schedule import schedule_runs
from ductile.app.runtime import init_fingerprint
from ductile.domain.activity import Activity, Kind
from ductile.domain.breaker import BreakerPolicy
from ductile.domain.classify import classify
from ductile.domain.job import Actor, Job, JobStatus, SubmittedBy
from ductile.domain.outcome import SpawnOutcome
from ductile.domain.protocol import EmittedEvent
from ductile.domain.quantities import format_duration, parse_duration
from ductile.domain.schedule import PlannedRun, Schedule, Window, plan_next
from ductile.domain.settle import SettleContext
from ductile.fakes.memory_store import InMemoryStore
from ductile.fakes.spawner import ScriptedSpawner, error, ok
from ductile.ports.spawner import OnStart, SpawnRequest
from ductile.ports.store import InitRecord
from tests.support import builders

NOW = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
TTL = timedelta(hours=24)
BERLIN = ZoneInfo("Europe/Berlin")

SH_OK = '#!/bin/sh\ncat >/dev/null\necho \'{"status": "ok"}\'\n'


# =========================================================================== the harness


def write_plugin(
    plugins: Path, name: str, commands: str = "[poll, handle, health]", protocol: int = 1
) -> Path:
    folder = plugins / name
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    (folder / "manifest.yaml").write_text(
        f"name: {name}\nversion: 1.0.0\nprotocol: {protocol}\nentrypoint: run.sh\ncommands: {commands}\n"
    )
    (folder / "run.sh").write_text(SH_OK)
    (folder / "run.sh").chmod(0o755)
    return folder / "run.sh"


class Harness:
    """One config in ``tmp_path`` and fakes for everything else."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path
        self.plugins = tmp_path / "plugins"
        self.plugins.mkdir()
        self.plugins.chmod(0o755)
        self.config = tmp_path / "ductile.yaml"
        self.store = InMemoryStore()
        self.db_exists = True
        self.opened: list[bool] = []
        self.pid: int | None = 4242
        self.signals: list[tuple[int, int]] = []
        self.spawner = ScriptedSpawner()
        self.now = NOW
        self.mono = 0.0
        self.slept: list[float] = []
        self.on_sleep: Callable[[], Awaitable[None]] | None = None
        self.ids = 0
        self.env: dict[str, str] = {"DUCTILE_CONFIG": str(self.config), "PATH": "/usr/bin:/bin"}
        self.write_config("")

    # ----------------------------------------------------------------- set-up
    def write_config(self, body: str) -> None:
        self.config.write_text(f"service:\n  state_dir: ./state\nplugins_dir: ./plugins\n{body}")

    def plugin(self, name: str, **kwargs: Any) -> str:
        return str(write_plugin(self.plugins, name, **kwargs).resolve())

    def job(
        self,
        plugin: str = "echo",
        command: str = "poll",
        *,
        at: datetime | None = None,
        by: SubmittedBy = SubmittedBy.CLI,
        max_attempts: int = 4,
    ) -> Job:
        self.ids += 1
        job = builders.job(
            f"job-{self.ids:03d}",
            plugin,
            command,
            submitted_by=by,
            max_attempts=max_attempts,
            created_at=at or self.now,
        )
        asyncio.run(self.store.enqueue(job, actor=Actor(by.value), now=job.created_at, dedupe_ttl=TTL))
        return job

    def finish(
        self,
        job: Job,
        outcome: SpawnOutcome,
        *,
        at: datetime | None = None,
        breaker: BreakerPolicy | None = None,
    ) -> None:
        when = at or job.created_at + timedelta(seconds=1)
        ctx = SettleContext(now=when, breaker=breaker or BreakerPolicy())

        async def go() -> None:
            claimed = await self.store.claim(job.id, when)
            assert claimed is not None
            await self.store.settle(
                job.id, classify(outcome), ctx=ctx, dedupe_ttl=TTL, token=claimed.claim_token
            )

        asyncio.run(go())

    # ----------------------------------------------------------------- fakes
    async def open_store(self, path: Path, create: bool) -> InMemoryStore | None:
        assert path == self.root / "state" / "ductile.db"
        self.opened.append(create)
        if not self.db_exists and not create:
            return None
        self.db_exists = True
        return self.store

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.mono += seconds
        if self.on_sleep is not None:
            await self.on_sleep()

    def new_id(self) -> str:
        self.ids += 1
        return f"new-{self.ids:03d}"

    #: What the store check says (None: the database accepts writes).
    store_refusal: str | None = None

    def context(self) -> Context:
        self.out, self.err = io.StringIO(), io.StringIO()
        return Context(
            env=self.env,
            out=self.out,
            err=self.err,
            now=lambda: self.now,
            monotonic=lambda: self.mono,
            sleep=self.sleep,
            open_store=self.open_store,
            spawner=lambda: self.spawner,
            daemon_pid=lambda state_dir: self.pid,
            send_signal=lambda pid, sig: self.signals.append((pid, sig)),
            tz=UTC,
            new_id=self.new_id,
            store_check=lambda path: self.store_refusal,
        )

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        code = main(list(argv), context=self.context())
        return code, self.out.getvalue(), self.err.getvalue()

    def json(self, *argv: str) -> tuple[int, Any]:
        code, out, _ = self(*argv, "--json")
        return code, json.loads(out)


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def no_traceback(text: str) -> None:
    assert "Traceback" not in text


# =========================================================================== the parser


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["start"], {"verb": "start", "config": None, "debug": False}),
        (["--config", "/x.yaml", "start"], {"verb": "start", "config": "/x.yaml"}),
        (["start", "--config", "/y.yaml", "--debug"], {"config": "/y.yaml", "debug": True}),
        (["--debug", "status"], {"verb": "status", "debug": True, "json": False, "no_health": False}),
        (["status", "--json", "--no-health"], {"json": True, "no_health": True}),
        (
            ["run", "echo"],
            {
                "verb": "run",
                "plugin": "echo",
                "command": "poll",
                "payload": None,
                "event_type": None,
                "dedupe_key": None,
                "wait": False,
                "timeout": None,
                "json": False,
            },
        ),
        (
            [
                "run",
                "echo",
                "--command",
                "handle",
                "--payload",
                '{"a": 1}',
                "--event-type",
                "t",
                "--dedupe-key",
                "k",
                "--wait",
                "--timeout",
                "90",
                "--json",
            ],
            {
                "command": "handle",
                "payload": '{"a": 1}',
                "event_type": "t",
                "dedupe_key": "k",
                "wait": True,
                "timeout": 90.0,
                "json": True,
            },
        ),
        (["run", "echo", "--wait", "--timeout", "5m"], {"timeout": 300.0}),
        (["run", "echo", "--wait", "--timeout", "1.5"], {"timeout": 1.5}),
        (["reload"], {"verb": "reload", "json": False}),
        (["plugins", "--json"], {"verb": "plugins", "json": True}),
        (["queue"], {"verb": "queue", "limit": DEFAULT_QUEUE_LIMIT}),
        (["queue", "--limit", "3"], {"limit": 3}),
        (["logs"], {"verb": "logs", "plugin": None, "limit": DEFAULT_LOG_LIMIT}),
        (["logs", "echo", "--limit", "5", "--json"], {"plugin": "echo", "limit": 5, "json": True}),
        (["reset", "echo"], {"verb": "reset", "plugin": "echo"}),
        (["job", "abc", "--json"], {"verb": "job", "job_id": "abc", "json": True}),
        (["config", "check"], {"verb": "config", "config_verb": "check", "json": False}),
        (["config", "check", "--json", "--config", "/c.yaml"], {"json": True, "config": "/c.yaml"}),
        (["config", "--config", "/c.yaml", "check"], {"config": "/c.yaml"}),
        (
            ["schedule"],
            {"verb": "schedule", "start": "now", "end": None, "limit": None},
        ),
        (
            ["schedule", "--from", "-1h", "--to", "2026-12-01T00:00", "--limit", "7"],
            {"start": "-1h", "limit": 7},
        ),
        (["schedule", "--to", "-1h30m", "--from=-2h"], {"start": "-2h", "end": "-1h30m"}),
        (["logs", "--", "-odd-name"], {"plugin": "-odd-name"}),
    ],
)
def test_parser_accepts_every_verb_and_flag(argv: list[str], expected: dict[str, Any]) -> None:
    args = vars(parse_args(build_parser(), argv))
    for key, value in expected.items():
        assert args[key] == value, key


@pytest.mark.parametrize(("command", "why"), [("init", "on start and reload"), ("health", "ductile status")])
def test_run_refuses_the_commands_the_daemon_runs_itself(h: Harness, command: str, why: str) -> None:
    h.plugin("echo")
    code, _, err = h("run", "echo", "--command", command)
    assert code == 2
    assert f"--command {command} cannot be queued" in err
    assert why in err
    assert h.opened == []


@pytest.mark.parametrize(
    "argv",
    [
        ["frobnicate"],
        ["run"],
        ["run", "echo", "--timeout", "0"],
        ["run", "echo", "--timeout", "soon"],
        ["queue", "--limit", "0"],
        ["logs", "--limit", "many"],
        ["reset"],
        ["job"],
        ["config"],
        ["config", "lint"],
        ["start", "--json"],
        ["status", "extra"],
    ],
)
def test_usage_errors_exit_2_with_a_message(
    h: Harness, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv, context=h.context()) == 2
    err = capsys.readouterr().err
    assert "usage:" in err
    no_traceback(err)


def test_no_verb_is_a_usage_error(h: Harness) -> None:
    code, out, err = h()
    assert code == 2
    assert "a verb is required" in err
    assert out == ""


def test_help_exits_0(h: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"], context=h.context()) == 0
    text = capsys.readouterr().out
    for verb in (
        "start",
        "run",
        "status",
        "reload",
        "plugins",
        "queue",
        "logs",
        "reset",
        "job",
        "config",
        "schedule",
    ):
        assert verb in text


def test_run_help_documents_the_handle_envelope(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--help"], context=Context(env={})) == 0
    text = capsys.readouterr().out
    assert '"type": "<--event-type, default manual>"' in text
    assert '"source": "cli"' in text


# =========================================================================== formatting


def test_table_aligns_columns_and_marks_empty_cells() -> None:
    text = table(["A", "LONGER", "C"], [["x", None, "last"], ["wide cell", "", 3]])
    assert text.splitlines() == [
        "A          LONGER  C",
        "x          -       last",
        "wide cell  -       3",
    ]


def test_table_keeps_each_row_on_one_line() -> None:
    text = table(["A", "B"], [["two\nlines", "tab\there"], ["next\x85line", "para\u2029graph\x1e"]])
    assert text.splitlines()[1:] == ["two lines  tab here", "next line  para graph"]


def test_table_refuses_ragged_rows() -> None:
    with pytest.raises(ValueError, match="2 cells, the table 3 columns"):
        table(["A", "B", "C"], [["x", "y"]])


@given(
    st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=5).flatmap(
        lambda headers: st.tuples(
            st.just(headers),
            st.lists(
                st.lists(
                    st.one_of(st.none(), st.text(max_size=12)), min_size=len(headers), max_size=len(headers)
                ),
                max_size=6,
            ),
        )
    )
)
def test_table_columns_start_at_the_same_offset_on_every_line(
    data: tuple[list[str], list[list[str | None]]],
) -> None:
    headers, rows = data
    text = table(headers, rows)
    lines = text.split("\n")
    assert text.splitlines() == (lines if text else [])  # no line break of any other kind either
    grid = [[cell(c) for c in headers]] + [[cell(c) for c in r] for r in rows]
    assert len(lines) == len(grid)
    widths = [max(len(line[i]) for line in grid) for i in range(len(headers))]
    full = sum(widths) + 2 * (len(widths) - 1)
    for line, cells in zip(lines, grid, strict=True):
        assert line == line.rstrip()
        padded = line.ljust(full)
        offset = 0
        for shown, width in zip(cells, widths, strict=True):
            assert padded[offset : offset + width] == shown.ljust(width)
            offset += width
            if offset < full:
                assert padded[offset : offset + 2] == "  "
                offset += 2


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0ms"),
        (0.35, "350ms"),
        (1.2, "1.2s"),
        (1.29, "1.2s"),
        (59.99, "59.9s"),
        (60, "1m"),
        (184, "3m4s"),
        (3600, "1h"),
        (3601, "1h"),
        (3725, "1h2m"),
        (86400 * 3 + 3600 * 4 + 59, "3d4h"),
        (-65, "-1m5s"),
        (float("nan"), "-"),
    ],
)
def test_human_duration_examples(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


@given(st.floats(min_value=60, max_value=10 * 365 * 86400, allow_nan=False))
def test_human_duration_never_rounds_up_and_loses_less_than_its_next_unit(seconds: float) -> None:
    text = human_duration(seconds)
    shown = parse_duration(text).total_seconds()
    first_unit = re.match(r"\d+([dhms])", text)
    assert first_unit is not None
    precision = {"d": 3600, "h": 60, "m": 1, "s": 1}[first_unit.group(1)]
    assert shown <= seconds < shown + precision
    assert len(re.findall(r"\d+[dhms]", text)) <= 2


@given(st.floats(min_value=0, max_value=59.999, allow_nan=False))
def test_human_duration_below_a_minute_is_truncated_to_a_tenth_or_a_millisecond(seconds: float) -> None:
    text = human_duration(seconds)
    if text.endswith("ms"):
        assert int(text[:-2]) <= seconds * 1000 < int(text[:-2]) + 1
    else:
        assert float(text[:-1]) <= seconds + 1e-9 < float(text[:-1]) + 0.1 + 1e-9


def test_local_time_has_no_microseconds_and_names_the_offset() -> None:
    at = datetime(2026, 7, 1, 5, 30, 12, 987654, tzinfo=UTC)
    assert local_time(at, BERLIN) == "2026-07-01T07:30:12+02:00"
    assert local_time(None) == "-"


@given(st.datetimes(timezones=st.just(UTC), min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)))
def test_local_time_round_trips_to_the_second(at: datetime) -> None:
    text = local_time(at, BERLIN)
    assert "." not in text
    assert datetime.fromisoformat(text) == at.replace(microsecond=0)


def test_schedule_summary_examples() -> None:
    every = Schedule(
        tz=BERLIN,
        every=timedelta(hours=6),
        jitter=timedelta(minutes=30),
        window=Window.parse("06:00", "22:00"),
    )
    assert schedule_summary(every) == "every 6h jitter 30m window (±15m) 06:00\u201322:00 Europe/Berlin"
    cron = Schedule(tz=UTC, cron="30 7 * * 1-5")
    assert schedule_summary(cron) == "cron '30 7 * * 1-5' UTC"
    timer = Schedule(tz=UTC, every=timedelta(days=1), emit=EmittedEvent(type="morning.digest"))
    assert schedule_summary(timer) == "every 1d UTC emit 'morning.digest'"
    handle = Schedule(tz=timezone(timedelta(hours=1)), every=timedelta(minutes=5), command="handle")
    assert schedule_summary(handle).endswith("command handle")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("+24h", NOW + timedelta(hours=24)),
        ("-1h30m", NOW - timedelta(minutes=90)),
        ("2026-11-23T09:00", datetime(2026, 11, 23, 8, 0, tzinfo=UTC)),  # naive: in tz (Berlin, +01:00)
        ("2026-11-23T09:00+02:00", datetime(2026, 11, 23, 7, 0, tzinfo=UTC)),
        ("2026-11-23T09:00Z", datetime(2026, 11, 23, 9, 0, tzinfo=UTC)),
        ("2026-11-24", datetime(2026, 11, 23, 23, 0, tzinfo=UTC)),
    ],
)
def test_parse_time(text: str, expected: datetime) -> None:
    assert parse_time(text, now=NOW, tz=BERLIN) == expected


@pytest.mark.parametrize("text", ["tomorrow", "+", "+5", "+5x", "2026-13-01", ""])
def test_parse_time_refuses_with_a_hint(text: str) -> None:
    with pytest.raises(UsageError, match=r"time"):
        parse_time(text, now=NOW, tz=UTC)


@given(st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=3650)).map(
    lambda d: timedelta(seconds=int(d.total_seconds()))
))  # fmt: skip
def test_relative_times_move_from_now_by_exactly_the_duration(delta: timedelta) -> None:
    assert parse_time("+" + format_duration(delta), now=NOW) == NOW + delta
    assert parse_time("-" + format_duration(delta), now=NOW) == NOW - delta


# =========================================================================== errors and exit codes


def test_a_config_error_exits_2_naming_the_key_path(h: Harness) -> None:
    h.write_config("plugins:\n  echo:\n    retry: {max_attempts: lots}\n")
    for verb in (["status"], ["plugins"], ["config", "check"], ["run", "echo"], ["reload"], ["start"]):
        code, _, err = h(*verb)
        assert code == 2, verb
        assert "plugins.echo.retry.max_attempts" in err
        assert str(h.config) in err
        no_traceback(err)
    assert h.signals == []
    assert h.opened == []


def test_a_missing_config_exits_2_and_says_how_to_name_one(h: Harness) -> None:
    h.config.unlink()
    code, _, err = h("queue")
    assert code == 2
    assert "does not exist" in err
    assert "--config PATH or $DUCTILE_CONFIG" in err


def test_config_option_beats_the_environment(h: Harness, tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text("plugins_dir: ./nowhere\nunknown_key: 1\n")
    code, _, err = h("--config", str(other), "plugins")
    assert code == 2
    assert "unknown_key" in err


def test_a_ductile_error_exits_1_without_a_traceback(h: Harness) -> None:
    from ductile.adapters.sqlite import StoreError

    async def broken(path: Path, create: bool) -> None:
        raise StoreError(f"{path}: the database is locked")

    ctx = h.context()
    ctx.open_store = broken
    assert main(["queue"], context=ctx) == 1
    err = h.err.getvalue()
    assert err == f"ductile: {h.root / 'state' / 'ductile.db'}: the database is locked\n"


@pytest.mark.parametrize("debug", ["flag", "env", None])
def test_an_internal_error_exits_1_with_the_traceback_only_when_debugging(
    h: Harness, debug: str | None
) -> None:
    async def buggy(path: Path, create: bool) -> None:
        raise KeyError("oops")

    if debug == "env":
        h.env["DUCTILE_DEBUG"] = "1"
    ctx = h.context()
    ctx.open_store = buggy
    argv = ["queue", "--debug"] if debug == "flag" else ["queue"]
    assert main(argv, context=ctx) == 1
    err = h.err.getvalue()
    assert err.startswith("ductile: internal error: KeyError: 'oops'\n")
    if debug is None:
        no_traceback(err)
        assert "--debug" in err
    else:
        assert "Traceback (most recent call last)" in err


# =========================================================================== run


def test_run_queues_a_cli_job_durably_and_prints_its_id(h: Harness) -> None:
    h.plugin("echo")
    h.write_config("plugins:\n  echo:\n    retry: {max_attempts: 7}\n")
    code, out, err = h("run", "echo")
    assert code == 0
    job_id = out.strip()
    job = asyncio.run(h.store.get_job(job_id))
    assert job is not None
    assert (job.plugin, job.command, job.status, job.submitted_by) == (
        "echo",
        "poll",
        JobStatus.QUEUED,
        SubmittedBy.CLI,
    )
    assert job.max_attempts == 7
    assert job.payload == {}
    assert job.created_at == NOW
    transitions = asyncio.run(h.store.transitions(job_id))
    assert [t.actor for t in transitions] == [Actor.CLI]
    assert err == ""  # a daemon runs (pid 4242): no note
    assert h.opened == [False]  # the store existed: opened once


def test_run_handle_wraps_the_payload_as_a_manual_event(h: Harness) -> None:
    h.plugin("echo")
    code, out, _ = h("run", "echo", "--command", "handle", "--payload", '{"id": 42}', "--dedupe-key", "k1")
    assert code == 0
    job = asyncio.run(h.store.get_job(out.strip()))
    assert job is not None
    assert job.dedupe_key == "k1"
    assert job.payload == {
        "type": "manual",
        "payload": {"id": 42},
        "source": "cli",
        "timestamp": "2026-11-23T07:00:00Z",
        "event_id": job.payload["event_id"],
        "dedupe_key": "k1",
    }
    assert job.payload["event_id"] != job.id


def test_run_handle_without_payload_sends_an_empty_event_of_the_given_type(h: Harness) -> None:
    h.plugin("echo")
    code, out, _ = h("run", "echo", "--command", "handle", "--event-type", "ping")
    assert code == 0
    job = asyncio.run(h.store.get_job(out.strip()))
    assert job is not None
    assert (job.payload["type"], job.payload["payload"]) == ("ping", {})
    assert "dedupe_key" not in job.payload


def test_run_with_a_dedupe_key_reports_the_duplicate(h: Harness) -> None:
    h.plugin("echo")
    code, first, _ = h("run", "echo", "--dedupe-key", "once")
    code2, second, _ = h("run", "echo", "--dedupe-key", "once")
    assert (code, code2) == (0, 0)
    assert second.strip() == f"duplicate of {first.strip()}"
    code, doc = h.json("run", "echo", "--dedupe-key", "once")
    assert doc == {
        "job_id": first.strip(),
        "created": False,
        "duplicate_of": first.strip(),
        "daemon_pid": 4242,
        "outcome": None,
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "ghost"], "plugin 'ghost' is not loaded (no such plugin in"),
        (["run", "old"], "plugin 'old' is refused: "),
        (["run", "off"], "plugin 'off' is disabled"),
        (["run", "pollonly", "--command", "handle"], "plugin 'pollonly' does not support 'handle'"),
    ],
)
def test_run_refuses_what_cannot_run_with_exit_1(h: Harness, argv: list[str], message: str) -> None:
    h.plugin("old", protocol=9)
    h.plugin("off")
    h.plugin("pollonly", commands="[poll]")
    h.write_config("plugins:\n  off:\n    enabled: false\n")
    code, out, err = h(*argv)
    assert code == 1
    assert out == ""
    assert err.startswith("ductile: cannot run: ")
    assert message in err
    assert asyncio.run(h.store.queue_depth()) == 0


def test_run_refuses_an_unhealthy_plugin_with_the_init_error(h: Harness) -> None:
    h.plugin("fragile", commands="[poll, init]")
    from ductile.adapters.config import load_config
    from ductile.adapters.plugin_dir import FilesystemCatalog

    config = load_config(h.config)
    plugin = FilesystemCatalog().discover(config).plugins["fragile"]
    record = InitRecord(
        plugin="fragile",
        fingerprint=init_fingerprint(plugin, config.plugin("fragile")),
        ok=False,
        error="token expired",
        at=NOW,
    )
    asyncio.run(h.store.put_init(record))
    code, _, err = h("run", "fragile")
    assert code == 1
    assert "plugin 'fragile' is unhealthy: init failed: token expired" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "echo", "--event-type", "t"], "--event-type is for --command handle only"),
        (["run", "echo", "--command", "handle", "--payload", "[1, 2]"], "is a JSON array, not an object"),
        (["run", "echo", "--command", "handle", "--payload", "{nope"], "is not valid JSON"),
        (["run", "echo", "--command", "handle", "--payload", '{"x": NaN}'], "NaN"),
        (["run", "echo", "--dedupe-key", " "], "--dedupe-key cannot be empty"),
        (["run", "echo", "--timeout", "5"], "--timeout only applies with --wait"),
    ],
)
def test_run_usage_errors_exit_2_before_anything_is_queued(h: Harness, argv: list[str], message: str) -> None:
    h.plugin("echo")
    code, _, err = h(*argv)
    assert code == 2
    assert message in err
    assert h.opened == []


def test_run_without_a_daemon_queues_and_says_so(h: Harness) -> None:
    h.plugin("echo")
    h.pid = None
    h.db_exists = False
    code, out, err = h("run", "echo")
    assert code == 0
    assert asyncio.run(h.store.get_job(out.strip())) is not None
    assert err == "ductile: queued; no daemon is running — it will run when `ductile start` runs\n"
    assert h.opened == [False, True]  # looked without creating, then created to enqueue


def test_run_wait_without_a_daemon_exits_1_at_once_and_queues_nothing(h: Harness) -> None:
    h.plugin("echo")
    h.pid = None
    code, out, err = h("run", "echo", "--wait")
    assert code == 1
    assert out == ""
    assert "no ductile daemon is running" in err
    assert "nothing was queued" in err
    assert asyncio.run(h.store.queue_depth()) == 0
    assert h.slept == []


def _settle_on_sleep(h: Harness, outcome: SpawnOutcome, *, after: int = 1) -> None:
    """Play the daemon: the ``after``-th sleep of the waiting CLI runs the queued job."""

    async def run_it() -> None:
        if len(h.slept) != after:
            return
        job = await h.store.claim_next(h.now)
        assert job is not None
        h.now += timedelta(seconds=2)
        await h.store.settle(
            job.id,
            classify(outcome),
            ctx=SettleContext(now=h.now, retry=_one_attempt()),
            dedupe_ttl=TTL,
            token=job.claim_token,
        )

    h.on_sleep = run_it


def _one_attempt() -> Any:
    from ductile.domain.retry import RetryPolicy

    return RetryPolicy(max_attempts=1)


def test_run_wait_prints_the_outcome_and_exits_0_on_success(h: Harness) -> None:
    h.plugin("echo")
    _settle_on_sleep(h, SpawnOutcome(exit_code=0, stdout=b'{"status": "ok"}', duration=1.25), after=3)
    code, out, err = h("run", "echo", "--wait")
    assert code == 0, err
    job_id, outcome = out.splitlines()
    assert asyncio.run(h.store.get_job(job_id)) is not None
    assert outcome == "succeeded after 1 attempt (of 4), ran 1.2s"
    assert h.slept == [0.05, 0.05, 0.05]  # one cheap read every 50 ms: the end is seen within 50 ms


def test_run_wait_exits_1_when_the_job_ends_dead(h: Harness) -> None:
    h.plugin("echo")
    h.write_config("plugins:\n  echo:\n    retry: {max_attempts: 1}\n")
    _settle_on_sleep(h, error("the API said no", retry=False))
    code, doc = h.json("run", "echo", "--wait")
    assert code == 1
    assert doc["outcome"]["status"] == "dead"
    assert doc["outcome"]["last_error"] == "the API said no"
    assert doc["outcome"]["attempt"] == doc["outcome"]["max_attempts"] == 1
    assert set(doc["outcome"]) == {
        "status", "attempt", "max_attempts", "last_error", "duration_seconds", "elapsed_seconds",
    }  # fmt: skip


def test_run_wait_gives_up_after_the_timeout_and_leaves_the_job(h: Harness) -> None:
    h.plugin("echo")
    code, _, err = h("run", "echo", "--wait", "--timeout", "2")
    assert code == 1
    assert "gave up waiting after 2.0s" in err
    assert "still queued" in err
    assert sum(h.slept) == pytest.approx(2.0)
    assert asyncio.run(h.store.queue_depth()) == 1


def test_run_wait_stops_when_the_daemon_goes_away(h: Harness) -> None:
    h.plugin("echo")

    async def daemon_dies() -> None:
        h.pid = None

    h.on_sleep = daemon_dies
    code, _, err = h("run", "echo", "--wait")
    assert code == 1
    assert "the daemon stopped while waiting" in err


# =========================================================================== read commands without a database


@pytest.mark.parametrize(
    ("argv", "empty"),
    [
        (["queue"], {"jobs": []}),
        (["logs"], {"runs": []}),
        (["logs", "echo"], {"runs": []}),
    ],
)
def test_read_commands_without_a_database_print_empty_results_and_a_note(
    h: Harness, argv: list[str], empty: dict[str, Any]
) -> None:
    h.plugin("echo")
    h.db_exists = False
    code, doc = h.json(*argv)
    assert (code, doc) == (0, empty)
    assert (
        f"no database yet at {h.root / 'state' / 'ductile.db'} (ductile has not run here)" in h.err.getvalue()
    )
    code, out, _ = h(*argv)
    assert code == 0
    assert out.strip() in ("the queue is empty", "no finished runs", "no finished runs of echo")
    assert h.opened == [False, False]


def test_job_without_a_database_is_unknown(h: Harness) -> None:
    h.db_exists = False
    code, _, err = h("job", "abc")
    assert code == 1
    assert "no database yet" in err
    assert "no job with id abc" in err
    assert h.opened == [False]


# =========================================================================== status


def _status_setup(h: Harness) -> tuple[str, str]:
    good = h.plugin("good")
    bad = h.plugin("bad")
    h.plugin("quiet", commands="[poll]")
    h.spawner.script(good, lambda req: ok(logs=[{"level": "info", "message": "db reachable"}]))
    h.spawner.script(bad, lambda req: error("database unreachable"))
    return good, bad


def test_status_runs_health_checks_and_exits_1_when_one_fails(h: Harness) -> None:
    _status_setup(h)
    h.write_config("plugins:\n  good:\n    config: {token: abc}\n")
    code, out, _ = h("status")
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"daemon: running (pid 4242), state dir {h.root / 'state'}"
    assert lines[1] == "queue: 0 queued, 0 running"
    assert re.search(r"^bad\s+loaded\s+closed\s+error\s+0ms\s+health: database unreachable$", out, re.M)
    assert re.search(r"^good\s+loaded\s+closed\s+ok\s+0ms\s+-$", out, re.M)
    assert re.search(r"^quiet\s+loaded\s+closed\s+-\s+-\s+-$", out, re.M)  # no health command: not run
    assert lines[-1] == "NOT healthy: the health check of bad failed"
    requests = {json.loads(r.stdin)["config"].get("token"): json.loads(r.stdin) for r in h.spawner.calls}
    request = requests["abc"]
    assert request["command"] == "health"
    assert request["job_id"].startswith("health-")
    assert request["state"] == {}
    assert {r.timeout for r in h.spawner.calls} == {10.0}
    assert h.spawner.calls[0].env["DUCTILE_COMMAND"] == "health"


def test_status_json_shape(h: Harness) -> None:
    _status_setup(h)
    code, doc = h.json("status")
    assert code == 1
    assert set(doc) == {
        "healthy",
        "problems",
        "daemon",
        "database",
        "store",
        "queue",
        "running",
        "nodes",
        "routing",
        "plugins",
    }
    assert (doc["running"], doc["nodes"]) == ([], [])  # nothing runs; SQLite has no nodes
    assert doc["routing"] == {"max_route_depth": 20, "dropped_at_depth": 0}
    assert doc["store"] == {"writable": True, "problem": None}
    assert doc["healthy"] is False
    assert doc["problems"] == ["the health check of bad failed"]
    assert doc["daemon"] == {
        "running": True,
        "pid": 4242,
        "state_dir": str(h.root / "state"),
        "scheduler": None,
    }
    assert doc["queue"] == {"queued": 0, "running": 0}
    by_name = {p["name"]: p for p in doc["plugins"]}
    assert [p["name"] for p in doc["plugins"]] == ["bad", "good", "quiet"]
    assert set(by_name["good"]) == {
        "name",
        "state",
        "reason",
        "version",
        "cannot_start",
        "breakers",
        "health",
    }
    assert by_name["good"]["health"] == {
        "ok": True,
        "error": None,
        "duration_seconds": 0.0,
        "logs": [{"level": "info", "message": "db reachable"}],
    }
    assert by_name["bad"]["health"]["error"] == "database unreachable"
    assert by_name["quiet"]["health"] is None


def test_status_exit_0_when_everything_is_healthy(h: Harness) -> None:
    good = h.plugin("good")
    h.spawner.script(good, lambda req: ok())
    code, out, _ = h("status")
    assert code == 0
    assert out.splitlines()[-1] == "all healthy"


def test_status_uses_the_stored_state_and_ignores_health_state_updates(h: Harness) -> None:
    good = h.plugin("good")
    job = h.job("good")
    h.finish(job, ok(state_updates={"cursor": 7}))
    h.spawner.script(good, lambda req: ok(state_updates={"cursor": 999}))
    code, _, _ = h("status")
    assert code == 0
    assert json.loads(h.spawner.calls[0].stdin)["state"] == {"cursor": 7}
    assert asyncio.run(h.store.get_state("good")) == {"cursor": 7}


def test_status_no_health_runs_nothing(h: Harness) -> None:
    _status_setup(h)
    code, doc = h.json("status", "--no-health")
    assert code == 0
    assert h.spawner.calls == []
    assert all(p["health"] is None for p in doc["plugins"])


def test_status_shows_refused_disabled_unhealthy_and_open_breakers(h: Harness) -> None:
    h.plugin("old", protocol=9)
    h.plugin("off")
    h.plugin("flaky", commands="[poll]")
    h.write_config(
        "plugins:\n  off:\n    enabled: false\n"
        "  flaky:\n    circuit_breaker: {threshold: 2, reset_after: 1h}\n"
    )
    for i in range(2):
        job = h.job("flaky", by=SubmittedBy.SCHEDULER, max_attempts=1, at=NOW + timedelta(minutes=i))
        h.finish(job, error("boom"), breaker=BreakerPolicy(threshold=2, reset_after=timedelta(hours=1)))
    code, out, _ = h("status")
    assert code == 1
    opened = NOW + timedelta(minutes=1, seconds=1)
    assert f"poll: open until {local_time(opened + timedelta(hours=1), UTC)}" in out
    assert re.search(r"^off\s+disabled\s", out, re.M)
    assert re.search(r"^old\s+refused\s+-\s+-\s+-\s+.*protocol 9 is not supported", out, re.M)
    code, doc = h.json("status")
    flaky = next(p for p in doc["plugins"] if p["name"] == "flaky")
    assert flaky["breakers"] == [
        {
            "command": "poll",
            "status": "open",
            "failures": 2,
            "opened_at": "2026-11-23T07:01:01Z",
            "reopens_at": "2026-11-23T08:01:01Z",
        }
    ]
    assert doc["problems"] == [
        "the circuit breaker of flaky poll is open",
        "plugin 'old' is refused",
    ]


def test_status_without_a_daemon_is_not_healthy(h: Harness) -> None:
    h.pid = None
    code, doc = h.json("status")
    assert code == 1
    assert doc["daemon"]["running"] is False
    assert doc["problems"] == ["the daemon is not running"]


def _daemon_report(h: Harness, pid: int, ok: bool) -> None:
    from ductile.adapters.status_file import write_status

    (h.root / "state").mkdir(exist_ok=True)
    scheduler = {
        "ok": ok,
        "failed_ticks": 7,
        "tick_error": None,
        "failing_schedules": {} if ok else {"feeds": "UnicodeEncodeError: surrogates not allowed"},
        "last_error": "UnicodeEncodeError: surrogates not allowed",
        "last_error_at": "2026-03-02T09:00:05Z",
    }
    write_status(h.root / "state", {"pid": pid, "updated_at": "2026-03-02T09:01:00Z", "scheduler": scheduler})


def test_status_shows_a_failing_scheduler_and_is_not_healthy(h: Harness) -> None:
    """Issue 19, item 8: a failing tick is shown by `ductile status`, never a silent stop."""
    _daemon_report(h, 4242, ok=False)
    code, out, _ = h("status")
    assert code == 1
    assert "scheduler: FAILING; 7 failed tick(s), the last at 2026-03-02T09:00:05+00:00" in out
    assert out.splitlines()[-1] == (
        "NOT healthy: schedule 'feeds' cannot fire: UnicodeEncodeError: surrogates not allowed"
    )
    code, doc = h.json("status")
    assert doc["daemon"]["scheduler"]["failing_schedules"] == {
        "feeds": "UnicodeEncodeError: surrogates not allowed"
    }


def test_status_believes_the_status_file_of_the_running_daemon_only(h: Harness) -> None:
    _daemon_report(h, 1111, ok=False)  # left by a daemon that is gone
    code, doc = h.json("status")
    assert code == 0
    assert doc["daemon"]["scheduler"] is None
    _daemon_report(h, 4242, ok=True)  # failures in the past, fine now: healthy, still shown
    code, out, _ = h("status")
    assert code == 0
    assert "scheduler: ok now; 7 failed tick(s)" in out


def test_status_says_when_the_database_would_refuse_a_write(h: Harness) -> None:
    h.store_refusal = "the disk is full: 0.1 MiB free in /x, the database needs at least 0.6 MiB to carry on"
    code, doc = h.json("status", "--no-health")
    assert code == 1
    assert doc["store"] == {"writable": False, "problem": h.store_refusal}
    assert doc["problems"] == [f"the database refuses writes: {h.store_refusal}"]
    code, out, _ = h("status", "--no-health")
    assert code == 1
    assert out.splitlines()[-1] == f"NOT healthy: the database refuses writes: {h.store_refusal}"


# =========================================================================== reload


def _daemon_reloads(h: Harness, kind: Kind, data: dict[str, Any]) -> Context:
    """A context whose SIGHUP makes the (stand-in) daemon record a reload outcome."""
    ctx = h.context()

    def reload(pid: int, sig: int) -> None:
        h.signals.append((pid, sig))
        with h.store.tx.atomic() as tx:  # the stand-in daemon's store unit, done at once
            tx.append_activity(Activity(kind=kind, at=NOW, data=data))

    ctx.send_signal = reload
    return ctx


def test_reload_signals_the_daemon_and_prints_what_changed(h: Harness) -> None:
    report = {"reloaded": True, "added": ["new"], "removed": [], "changed": ["echo"], "cancelled": {},
              "unhealthy": {}, "restart_needed": []}  # fmt: skip
    ctx = _daemon_reloads(h, Kind.CONFIG_RELOADED, report)
    assert main(["reload"], context=ctx) == 0
    assert h.out.getvalue() == "reload requested (pid 4242)\nreloaded; added: new; changed: echo\n"
    assert h.signals == [(4242, signal.SIGHUP)]


def test_reload_reports_a_config_the_daemon_refused(h: Harness) -> None:
    ctx = _daemon_reloads(h, Kind.CONFIG_REJECTED, {"error": "plugins.x: bad"})
    assert main(["reload", "--json"], context=ctx) == 1
    assert json.loads(h.out.getvalue()) == {"pid": 4242, "reloaded": False, "error": "plugins.x: bad"}


def test_reload_gives_up_waiting_for_a_silent_daemon(h: Harness) -> None:
    code, out, err = h("reload", "--timeout", "1")
    assert code == 1
    assert out == "reload requested (pid 4242)\n"
    assert "did not report the reload in time" in err


def test_reload_without_a_database_only_signals(h: Harness) -> None:
    h.db_exists = False
    assert h.json("reload") == (0, {"pid": 4242})


def test_reload_without_a_daemon_exits_1(h: Harness) -> None:
    h.pid = None
    code, _, err = h("reload")
    assert code == 1
    assert err == f"ductile: no ductile daemon is running for state dir {h.root / 'state'}\n"
    assert h.signals == []


def test_reload_of_an_invalid_config_exits_2_and_signals_nothing(h: Harness) -> None:
    h.write_config("routes: [{from: a}]\n")
    code, _, err = h("reload")
    assert code == 2
    assert "routes[0]" in err
    assert h.signals == []


def test_reload_reports_a_daemon_that_just_exited(h: Harness) -> None:
    ctx = h.context()

    def gone(pid: int, sig: int) -> None:
        raise ProcessLookupError

    ctx.send_signal = gone
    assert main(["reload"], context=ctx) == 1
    assert "exited before it could be asked to reload" in h.err.getvalue()


# =========================================================================== plugins and config check


def test_plugins_lists_loaded_refused_and_disabled(h: Harness) -> None:
    h.plugin("echo")
    h.plugin("old", protocol=9)
    h.plugin("off")
    h.write_config(
        "plugins:\n  off:\n    enabled: false\n  echo:\n    schedule:\n      every: 6h\n"
        "      jitter: 30m\n      preferred_window: {start: '06:00', end: '22:00'}\n"
        "      timezone: Europe/Berlin\n"
    )
    code, out, _ = h("plugins")
    assert code == 0
    assert re.search(
        r"^  echo\s+1\.0\.0\s+handle,health,poll\s+"
        r"every 6h jitter 30m window \(±15m\) 06:00\u201322:00 Europe/Berlin$",
        out,
        re.M,
    )
    assert re.search(r"^  old\s+.*protocol 9 is not supported", out, re.M)
    assert "disabled (1): off" in out
    code, doc = h.json("plugins")
    assert set(doc) == {"loaded", "refused", "disabled"}
    assert doc["disabled"] == ["off"]
    (echo,) = doc["loaded"]
    assert set(echo) == {
        "name", "version", "description", "protocol", "uses", "concurrency_safe", "commands", "directory",
        "paused", "schedule", "schedules", "cannot_start",
    }  # fmt: skip
    assert echo["commands"] == ["handle", "health", "poll"]
    assert (echo["protocol"], echo["uses"], echo["concurrency_safe"], echo["paused"]) == (
        1,
        None,
        True,
        False,
    )
    assert echo["schedules"] == [
        {
            "id": "default",
            "summary": "every 6h jitter 30m window (±15m) 06:00\u201322:00 Europe/Berlin",
            "paused": False,
            "every_seconds": 21600.0,
            "cron": None,
            "at": None,
            "after_seconds": None,
            "not_on": [],
            "jitter_seconds": 1800.0,
            "window": {"start": "06:00", "end": "22:00"},
            "timezone": "Europe/Berlin",
            "catch_up": "skip",
            "if_running": "queue",
            "command": "poll",
            "emit": None,
        }
    ]
    assert echo["schedule"] == echo["schedules"][0], "the default schedule, under its old key too"
    assert echo["cannot_start"] is None
    (old,) = doc["refused"]
    assert old["name"] == "old"
    assert "protocol 9 is not supported" in old["reason"]


def test_plugins_with_an_empty_directory(h: Harness) -> None:
    code, out, _ = h("plugins")
    assert (code, out) == (0, f"no plugins in {h.plugins}\n")


def test_config_check_ok(h: Harness) -> None:
    h.plugin("a")
    h.plugin("b")
    h.write_config(
        "plugins:\n  a:\n    schedule: {cron: '30 7 * * 1-5', timezone: UTC}\n"
        "routes:\n  - {from: a, event_type: done, to: b}\n"
        "webhooks:\n  listen: 127.0.0.1:9999\n  endpoints:\n"
        "    - {path: /hook/b, plugin: b, secret: s3cret}\n"
    )
    code, out, _ = h("config", "check")
    assert code == 0, out
    assert out.startswith(f"config {h.config}: valid\n")
    assert re.search(r"^  a\s+done\s+b\s+ok$", out, re.M)
    assert re.search(r"^  /hook/b\s+b\s+webhook\s+ok$", out, re.M)
    assert re.search(r"^  a\s+default\s+cron '30 7 \* \* 1-5' UTC\s+ok$", out, re.M)
    assert out.endswith("no problems found\n")
    code, doc = h.json("config", "check")
    assert code == 0
    assert set(doc) == {
        "ok", "config", "state_dir", "plugins_dir", "plugins", "routes", "webhooks", "schedules", "problems",
        "warnings",
    }  # fmt: skip
    assert doc["ok"] is True
    assert doc["warnings"] == []
    assert "warning" not in out
    assert doc["routes"] == [
        {"from": "a", "event_type": "done", "to": "b", "command": "handle", "problem": None}
    ]
    assert doc["webhooks"] == {
        "listen": "127.0.0.1:9999",
        "endpoints": [{"path": "/hook/b", "plugin": "b", "event_type": "webhook", "problem": None}],
    }
    assert "s3cret" not in json.dumps(doc)


def test_config_check_exits_1_for_refused_plugins_and_dangling_references(h: Harness) -> None:
    h.plugin("a", commands="[poll]")
    h.plugin("old", protocol=9)
    h.plugin("off")
    h.write_config(
        "plugins:\n  off:\n    enabled: false\n  ghost:\n    schedule: {every: 1h}\n"
        "routes:\n  - {from: a, event_type: x, to: off}\n  - {from: ghost, event_type: y, to: a}\n"
        "  - {from: old, event_type: z, to: a}\n"
        "webhooks:\n  endpoints:\n    - {path: /h, plugin: a, secret: s}\n"
    )
    code, doc = h.json("config", "check")
    assert code == 1
    assert doc["ok"] is False
    problems = doc["problems"]
    assert "routes[0]: to: plugin 'off' is disabled" in problems
    assert "routes[1]: from: plugin 'ghost' is refused" in problems
    assert "routes[2]: from: plugin 'old' is refused" in problems
    assert "webhooks.endpoints[0] (/h): plugin 'a' does not support 'handle'" in problems
    assert "plugins.ghost.schedule: plugin 'ghost' is refused" in problems
    assert any(p.startswith("plugin 'old' refused: ") for p in problems)
    code, out, _ = h("config", "check")
    assert code == 1
    assert f"{len(problems)} problem(s):" in out


def test_config_check_warns_about_retention_shorter_than_the_dedupe_ttl_but_passes(h: Harness) -> None:
    h.plugin("a")
    h.config.write_text(
        "service:\n  state_dir: ./state\n  dedupe_ttl: 7d\n  job_log_retention: 2d\nplugins_dir: ./plugins\n"
    )
    code, out, _ = h("config", "check")
    assert code == 0, out
    assert (
        "1 warning(s), not errors:\n"
        "  - service.job_log_retention (2d) is shorter than service.dedupe_ttl (1w): a succeeded job "
        "deleted by retention no longer blocks its duplicates, so dedupe holds for 2d at most\n"
    ) in out
    assert out.endswith("no problems found\n")
    code, doc = h.json("config", "check")
    assert (code, doc["ok"]) == (0, True)
    [warning] = doc["warnings"]
    assert warning.startswith("service.job_log_retention (2d) is shorter than service.dedupe_ttl (1w)")


# =========================================================================== queue, logs, job, reset


def test_queue_lists_running_then_queued_in_dispatch_order(h: Harness) -> None:
    first = h.job("a", at=NOW)
    second = h.job("b", at=NOW + timedelta(seconds=1))
    third = h.job("c", command="handle", at=NOW + timedelta(seconds=2))
    asyncio.run(h.store.claim(second.id, NOW + timedelta(seconds=5)))
    code, out, _ = h("queue")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "PLUGIN", "COMMAND", "STATUS", "ATTEMPT", "CREATED", "WHEN"]
    assert [line.split()[0] for line in lines[1:]] == [second.id, first.id, third.id]
    assert lines[1].endswith("started 2026-11-23T07:00:05+00:00")
    assert lines[2].split()[3:6] == ["queued", "1/4", "2026-11-23T07:00:00+00:00"]
    code, doc = h.json("queue")
    assert [j["id"] for j in doc["jobs"]] == [second.id, first.id, third.id]
    assert set(doc["jobs"][0]) == {
        "id", "plugin", "command", "payload", "status", "attempt", "max_attempts", "submitted_by",
        "dedupe_key", "created_at", "started_at", "completed_at", "next_retry_at", "last_error",
        "parent_job_id", "source_event_id", "schedule_id", "route_depth", "retry_of",
        "claim_token", "slot", "node", "deadline_at",
    }  # fmt: skip
    assert doc["jobs"][0]["started_at"] == "2026-11-23T07:00:05Z"
    assert (doc["jobs"][0]["claim_token"], doc["jobs"][0]["node"]) == (1, None)  # SQLite: one process
    code, doc = h.json("queue", "--limit", "2")
    assert [j["id"] for j in doc["jobs"]] == [second.id, first.id]


def test_queue_shows_when_a_retry_is_due(h: Harness) -> None:
    job = h.job("a")
    h.finish(job, error("flaky"))
    code, out, _ = h("queue")
    assert code == 0
    assert re.search(r"queued\s+2/4\s+\S+\s+retry at 2026-11-23T07:00:", out)


def test_logs_shows_finished_runs_newest_first_with_log_lines(h: Harness) -> None:
    a = h.job("a", at=NOW)
    b = h.job("b", at=NOW + timedelta(minutes=1))
    h.finish(a, ok(logs=[{"level": "info", "message": "fetched 3 items"}]), at=NOW + timedelta(minutes=5))
    h.finish(b, error("no token"), at=NOW + timedelta(minutes=2))
    h.job("c")  # never ran: not shown
    code, out, _ = h("logs")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["FINISHED", "PLUGIN", "COMMAND", "JOB", "ATTEMPT", "RESULT", "TOOK"]
    assert lines[1].split()[:6] == ["2026-11-23T07:05:00+00:00", "a", "poll", a.id, "1/4", "ok"]
    assert lines[2] == "    [info] fetched 3 items"
    assert lines[3].split()[:6] == ["2026-11-23T07:02:00+00:00", "b", "poll", b.id, "1/4", "failed"]
    assert lines[4] == "    error: no token"
    code, doc = h.json("logs", "b")
    assert [entry["job"]["id"] for entry in doc["runs"]] == [b.id]
    assert doc["runs"][0]["run"]["error"] == "no token"
    code, doc = h.json("logs", "--limit", "1")
    assert [entry["job"]["id"] for entry in doc["runs"]] == [a.id]


@pytest.mark.parametrize("verb", ["logs", "reset"])
def test_an_unknown_plugin_name_is_an_error_with_a_did_you_mean(h: Harness, verb: str) -> None:
    h.plugin("notify")
    code, out, err = h(verb, "notfy")
    assert (code, out) == (1, "")
    assert f"no plugin named 'notfy' in the config or in {h.plugins}" in err
    assert "(did you mean 'notify'?)" in err


def test_run_of_an_unknown_plugin_says_did_you_mean(h: Harness) -> None:
    h.plugin("notify")
    code, _, err = h("run", "notfy")
    assert code == 1
    assert "(did you mean 'notify'?)" in err


def test_logs_of_a_removed_plugin_with_history_is_not_an_error(h: Harness) -> None:
    h.job("gone")
    code, out, _ = h("logs", "gone")
    assert (code, out) == (0, "no finished runs of gone\n")


def test_logs_with_a_database_but_no_runs(h: Harness) -> None:
    h.job("a")
    code, out, err = h("logs", "a")
    assert (code, out, err) == (0, "no finished runs of a\n", "")


def test_job_shows_record_transitions_and_runs(h: Harness) -> None:
    job = h.job("a")
    stdout = b'{"status": "error", "error": "quota", "retry": true}'
    h.finish(job, SpawnOutcome(exit_code=3, stdout=stdout, stderr_tail=b"warning: slow\n", duration=0.5))
    code, out, _ = h("job", job.id)
    assert code == 0
    assert out.startswith(f"job {job.id}\n")
    assert re.search(r"^  status\s+queued$", out, re.M)
    assert re.search(r"^  attempt\s+2 of 4$", out, re.M)
    assert re.search(r"^  last error\s+quota \(exit code 3\)$", out, re.M)
    assert re.search(r"^  2026-11-23T07:00:00\+00:00\s+\(new\)\s+queued\s+cli\s+created$", out, re.M)
    assert re.search(r"^  \S+\s+running\s+failed\s+dispatcher\s+quota \(exit code 3\)$", out, re.M)
    assert re.search(r"^  \S+\s+failed\s+queued\s+retry\s+attempt 2 of 4 at ", out, re.M)
    assert "run of attempt 1:" in out
    assert re.search(r"^  exit\s+exit code 3$", out, re.M)
    assert re.search(r"^  took\s+500ms$", out, re.M)
    assert "  stderr (tail):\n    warning: slow\n" in out
    assert '  stdout (head):\n    {\n      "error": "quota",' in out  # pretty-printed JSON
    code, doc = h.json("job", job.id)
    assert set(doc) == {"job", "transitions", "runs", "children"}
    assert [(t["from"], t["to"], t["actor"]) for t in doc["transitions"]] == [
        (None, "queued", "cli"),
        ("queued", "running", "dispatcher"),
        ("running", "failed", "dispatcher"),
        ("failed", "queued", "retry"),
    ]
    (run,) = doc["runs"]
    assert set(run) == {
        "attempt", "started_at", "finished_at", "duration_seconds", "exit_code", "signal", "timed_out",
        "error", "stderr_tail", "stdout_head", "stdout_json", "logs", "result",
    }  # fmt: skip
    assert run["stdout_json"] == {"status": "error", "error": "quota", "retry": True}
    assert run["stderr_tail"] == "warning: slow\n"
    assert (run["exit_code"], run["timed_out"], run["duration_seconds"]) == (3, False, 0.5)


def test_job_shows_a_non_json_stdout_as_text_and_signals_by_name(h: Harness) -> None:
    job = h.job("a")
    h.finish(job, SpawnOutcome(signal=9, stdout=b"half a line", duration=2))
    code, out, _ = h("job", job.id)
    assert code == 0
    assert re.search(r"^  exit\s+killed by SIGKILL$", out, re.M)
    assert "  stdout (head):\n    half a line\n" in out
    assert h.json("job", job.id)[1]["runs"][0]["stdout_json"] is None


def test_unknown_job_exits_1(h: Harness) -> None:
    code, out, err = h("job", "no-such-id")
    assert (code, out) == (1, "")
    assert err == "ductile: no job with id no-such-id\n"


def test_reset_closes_open_breakers_and_says_which(h: Harness) -> None:
    h.plugin("flaky")
    for i in range(3):
        job = h.job("flaky", by=SubmittedBy.SCHEDULER, max_attempts=1, at=NOW + timedelta(minutes=i))
        h.finish(job, error("boom"))
    code, out, _ = h("reset", "flaky")
    assert code == 0
    assert (
        out == "closed the breaker of flaky poll (was open since 2026-11-23T07:02:01+00:00, 3 failure(s))\n"
    )
    assert all(not b.is_open for b in asyncio.run(h.store.breakers()))
    code, out, _ = h("reset", "flaky")
    assert (code, out) == (0, "no breaker of flaky was open\n")
    assert h.json("reset", "flaky") == (0, {"plugin": "flaky", "reset": []})


def test_reset_of_an_unknown_plugin_exits_1(h: Harness) -> None:
    code, _, err = h("reset", "nope")
    assert code == 1
    assert "no plugin named 'nope'" in err


def test_reset_without_a_database_creates_nothing(h: Harness) -> None:
    h.plugin("flaky")
    h.db_exists = False
    code, out, _ = h("reset", "flaky")
    assert (code, out) == (0, "no breaker of flaky was open\n")
    assert h.opened == [False]


# =========================================================================== schedule


def test_schedule_runs_from_a_stored_plan_then_projected() -> None:
    schedule = Schedule(tz=UTC, every=timedelta(hours=6), jitter=timedelta(minutes=30))
    stored = plan_next(schedule, key="a", previous=None, now=NOW, draw=0.9)
    runs = schedule_runs(
        schedule, key="a", stored=stored, now=NOW, start=NOW, end=NOW + timedelta(days=1), limit=100
    )
    assert runs[0] == (stored, "planned")
    assert [kind for _, kind in runs[1:]] == ["projected"] * (len(runs) - 1)
    assert all(NOW <= r.planned_at < NOW + timedelta(days=1) for r, _ in runs)
    gaps = {b.nominal_at - a.nominal_at for (a, _), (b, _) in itertools.pairwise(runs)}
    assert gaps == {timedelta(hours=6)}  # on the nominal grid, not a random walk


def test_schedule_runs_without_a_stored_plan_are_not_yet_planned() -> None:
    schedule = Schedule(tz=UTC, cron="0 * * * *")
    runs = schedule_runs(
        schedule, key="a", stored=None, now=NOW, start=NOW, end=NOW + timedelta(hours=3), limit=100
    )
    assert [(r.planned_at.hour, kind) for r, kind in runs] == [
        (8, "not_yet_planned"),
        (9, "projected"),
    ]


def test_schedule_runs_ignore_a_plan_of_another_schedule_version() -> None:
    old = Schedule(tz=UTC, cron="0 * * * *")
    new = Schedule(tz=UTC, cron="30 * * * *")
    stored = plan_next(old, key="a", previous=None, now=NOW, draw=0.5)
    runs = schedule_runs(
        new, key="a", stored=stored, now=NOW, start=NOW, end=NOW + timedelta(hours=1), limit=9
    )
    assert [(r.planned_at.minute, kind) for r, kind in runs] == [(30, "not_yet_planned")]


def test_schedule_runs_mark_an_overdue_plan_and_continue_from_now() -> None:
    schedule = Schedule(tz=UTC, every=timedelta(hours=1))
    stored = PlannedRun(
        key="a",
        fingerprint=schedule.fingerprint(),
        nominal_at=NOW - timedelta(minutes=10),
        planned_at=NOW - timedelta(minutes=10),
        offset=timedelta(0),
    )
    start, end = NOW - timedelta(hours=1), NOW + timedelta(hours=2)
    runs = schedule_runs(schedule, key="a", stored=stored, now=NOW, start=start, end=end, limit=100)
    assert [(r.planned_at - NOW, kind) for r, kind in runs] == [
        (timedelta(minutes=-10), "overdue"),
        (timedelta(minutes=50), "projected"),
        (timedelta(minutes=110), "projected"),
    ]


def test_schedule_runs_jump_to_a_range_far_ahead() -> None:
    schedule = Schedule(tz=UTC, every=timedelta(minutes=5))
    start = NOW + timedelta(days=365)
    runs = schedule_runs(
        schedule, key="a", stored=None, now=NOW, start=start, end=start + timedelta(minutes=12), limit=9
    )
    assert len(runs) in (2, 3)
    assert all(start <= r.planned_at < start + timedelta(minutes=12) for r, _ in runs)
    assert {kind for _, kind in runs} == {"projected"}


def test_schedule_verb_lists_stored_and_fresh_plans(h: Harness) -> None:
    h.plugin("a")
    h.plugin("b")
    h.write_config(
        "plugins:\n  a:\n    schedule: {every: 6h, timezone: Europe/Berlin}\n"
        "  b:\n    schedule: {cron: '0 12 * * *', timezone: UTC}\n"
    )
    from ductile.adapters.config import load_config

    schedule = load_config(h.config).plugins["a"].schedule
    assert schedule is not None
    # The daemon planned a's next run for 11:00 UTC (12:00 in Berlin); b has no stored plan.
    stored = plan_next(schedule, key="a/default", previous=None, now=NOW + timedelta(hours=4), draw=0.5)
    asyncio.run(h.store.put_planned(stored))
    code, doc = h.json("schedule", "--to", "+12h")
    assert code == 0
    assert doc["from"] == "2026-11-23T07:00:00Z"
    assert doc["to"] == "2026-11-23T19:00:00Z"
    assert [(r["plugin"], r["kind"], r["planned_at"]) for r in doc["runs"]] == [
        ("a", "planned", "2026-11-23T11:00:00Z"),
        ("b", "not_yet_planned", "2026-11-23T12:00:00Z"),
        ("a", "projected", "2026-11-23T17:00:00Z"),
    ]
    first = doc["runs"][0]
    assert set(first) == {
        "plugin", "schedule", "kind", "paused", "planned_at", "planned_local", "nominal_at", "nominal_local",
        "offset_seconds", "snapped", "timezone", "target",
    }  # fmt: skip
    assert (first["schedule"], first["paused"]) == ("default", False)
    assert first["planned_local"] == "2026-11-23T12:00:00+01:00"
    assert first["timezone"] == "Europe/Berlin"
    assert first["target"] == {"command": "poll"}
    code, out, _ = h("schedule", "--to", "+12h")
    assert code == 0
    # Columns that would only repeat others are left out: no run moved from its grid point.
    assert out.splitlines()[1].split() == ["PLUGIN", "PLANNED", "ZONE", "UTC", "KIND"]
    assert re.search(
        r"^a\s+2026-11-23T12:00:00\+01:00\s+Europe/Berlin\s+2026-11-23T11:00:00Z\s+planned$", out, re.M
    )
    assert re.search(r"^b\s+2026-11-23T12:00:00\+00:00\s+UTC\s+.*not yet planned$", out, re.M)


def test_schedule_skips_disabled_and_unloaded_plugins_and_reads_no_missing_database(h: Harness) -> None:
    h.plugin("off")
    h.write_config(
        "plugins:\n  off:\n    enabled: false\n    schedule: {every: 1h}\n"
        "  ghost:\n    schedule: {every: 1h}\n"
    )
    h.db_exists = False
    code, out, err = h("schedule")
    assert (code, out) == (0, "no schedules (no loaded plugin has one)\n")
    assert "no database yet" in err


def test_schedule_range_must_be_forward(h: Harness) -> None:
    code, _, err = h("schedule", "--from", "+2h", "--to", "+1h")
    assert code == 2
    assert "--to (+1h) must be after --from (+2h)" in err


def test_schedule_notes_a_truncated_listing(h: Harness) -> None:
    h.plugin("a")
    h.write_config("plugins:\n  a:\n    schedule: {every: 5m}\n")
    code, doc = h.json("schedule", "--to", "+1d", "--limit", "3")
    assert code == 0
    assert len(doc["runs"]) == 3
    assert doc["cut"] == ["a"]
    code, out, _ = h("schedule", "--to", "+1d", "--limit", "3")
    assert out.splitlines()[0] == "only the first 3 runs of a are shown (use --limit or a shorter range)"


def test_schedule_without_a_range_shows_the_next_runs_of_each_schedule_and_says_so(h: Harness) -> None:
    h.plugin("a")
    h.plugin("b")
    h.write_config(
        "plugins:\n  a:\n    schedule: {every: 1m, timezone: UTC}\n"
        "  b:\n    schedule: {cron: '0 12 * * *', timezone: UTC}\n"
    )
    code, doc = h.json("schedule")
    assert code == 0
    by_plugin = {p: [r for r in doc["runs"] if r["plugin"] == p] for p in ("a", "b")}
    assert [len(runs) for runs in by_plugin.values()] == [10, 10], "ten of each, not a day of a"
    assert doc["cut"] == ["a", "b"]
    code, out, _ = h("schedule")
    lines = out.splitlines()
    assert lines[0].startswith("the next 10 runs of each schedule from ")
    assert lines[0].endswith("(more with --limit N, or a range with --to T):")
    assert lines[1] == "times in UTC:"
    # In a UTC zone without jitter, UTC and NOMINAL would repeat PLANNED: not shown.
    assert lines[2].split() == ["PLUGIN", "PLANNED", "KIND"]
    assert len(lines) == 3 + 20


# =========================================================================== start


def test_start_with_a_bad_config_exits_2_and_touches_nothing(h: Harness) -> None:
    h.write_config("service:\n  log_level: loud\n")
    h.config.write_text("service:\n  state_dir: ./state\n  log_level: loud\n")
    code, out, err = h("start")
    assert code == 2
    assert "service.log_level" in err
    assert out == ""
    assert not (h.root / "state").exists()


def test_the_parsers_manual_event_type_is_the_domains() -> None:
    from ductile.app.cli.parser import MANUAL_EVENT_TYPE
    from ductile.domain import routing

    assert MANUAL_EVENT_TYPE == routing.MANUAL_EVENT_TYPE


# =========================================================================== status: bounded concurrency


class _CountingSpawner(ScriptedSpawner):
    """Every run takes a moment; records how many ran at once."""

    def __init__(self) -> None:
        super().__init__()
        self.now_running = 0
        self.most = 0

    async def run(self, request: SpawnRequest, *, on_start: OnStart | None = None) -> SpawnOutcome:
        self.now_running += 1
        self.most = max(self.most, self.now_running)
        try:
            for _ in range(5):
                await asyncio.sleep(0)
            return ok()
        finally:
            self.now_running -= 1


def test_status_runs_health_checks_concurrently_within_a_bound(h: Harness) -> None:
    from ductile.app.cli.status import HEALTH_CONCURRENCY

    for i in range(HEALTH_CONCURRENCY + 4):
        h.plugin(f"p{i:02d}")
    spawner = _CountingSpawner()
    h.spawner = spawner
    code, doc = h.json("status")
    assert code == 0, doc["problems"]
    assert all(p["health"]["ok"] for p in doc["plugins"])
    assert spawner.most == HEALTH_CONCURRENCY, "all at once up to the bound, never more"


# =========================================================================== simulate: progress on a terminal


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _simulate_on(h: Harness, err: io.StringIO, *argv: str) -> tuple[int, str]:
    ticks = iter(range(1_000_000))
    out = io.StringIO()
    ctx = Context(env=h.env, out=out, err=err, now=lambda: h.now, monotonic=lambda: next(ticks) * 0.1, tz=UTC)
    code = main(["simulate", *argv], context=ctx)
    return code, out.getvalue()


def test_simulate_shows_its_progress_on_a_terminal_and_clears_it(h: Harness) -> None:
    h.plugin("a")
    h.write_config("plugins:\n  a:\n    schedule: {every: 1h}\n")
    err = _Terminal()
    code, out = _simulate_on(h, err, "--days", "2")
    assert code == 0
    shown = err.getvalue()
    assert "\rsimulating: day " in shown
    assert " of 2 (" in shown
    assert shown.endswith("\r\x1b[K"), "the line is cleared before the report"
    assert "simulating" not in out


def test_simulate_shows_no_progress_with_json_or_off_a_terminal(h: Harness) -> None:
    h.plugin("a")
    h.write_config("plugins:\n  a:\n    schedule: {every: 1h}\n")
    err = _Terminal()
    assert _simulate_on(h, err, "--days", "1", "--json")[0] == 0
    assert "simulating" not in err.getvalue()
    plain = io.StringIO()
    assert _simulate_on(h, plain, "--days", "1")[0] == 0
    assert "simulating" not in plain.getvalue()
