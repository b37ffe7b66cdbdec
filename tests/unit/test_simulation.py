"""The simulation's parts: behaviours and their syntax, the simulated catalog, the
invariant functions, DST listing, and the ``ductile simulate`` verb."""

from __future__ import annotations

import io
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ductile.app.cli import main
from ductile.app.cli.context import Context
from ductile.app.cli.simulate_report import dst_changes
from ductile.app.sim import (
    Behaviour,
    BehaviourError,
    Kind,
    SimCatalog,
    behaviour_for,
    parse_assignment,
    parse_behaviour,
    split_key,
)
from ductile.app.sim.behaviour import DEFAULT_DURATION, GARBAGE
from ductile.app.sim.invariants import (
    backoff_bound,
    check_attempts,
    check_dedupe,
    check_executions,
    check_fire,
    check_history,
    check_liveness,
    check_single_runner,
    check_state,
)
from ductile.domain.breaker import Breaker, BreakerPolicy, BreakerStatus
from ductile.domain.config import Config, PluginConfig, ServiceConfig
from ductile.domain.errors import ProtocolError
from ductile.domain.job import Actor, JobStatus, Transition
from ductile.domain.plugin import Manifest
from ductile.domain.protocol import parse_response
from ductile.domain.retry import RetryPolicy, backoff_delay
from ductile.ports.store import EnqueueResult, FireResult, Guard
from tests.support.builders import job

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)

# =========================================================================== behaviours

event_types = st.from_regex(r"[a-z][a-z0-9_.\-]{0,12}", fullmatch=True)
durations = st.integers(1, 10**9).map(lambda ms: timedelta(milliseconds=ms))


@st.composite
def behaviours(draw: st.DrawFn) -> Behaviour:
    kind = draw(st.sampled_from(list(Kind)))
    fields: dict[str, Any] = {"kind": kind}
    if kind is not Kind.TIMEOUT and draw(st.booleans()):
        fields["duration"] = draw(durations)
    if kind is Kind.SLOW:
        fields["duration"] = draw(durations)
    if kind is Kind.FLAKY:
        fields["rate"] = draw(st.floats(0, 1))
    if kind is Kind.ERROR:
        fields["fatal"] = draw(st.booleans())
    if kind in (Kind.OK, Kind.SLOW, Kind.FLAKY):
        fields["emit"] = draw(st.none() | st.lists(event_types, max_size=3).map(tuple))
        fields["dedupe"] = draw(st.integers(0, 50))
    return Behaviour(**fields)


@given(behaviours())
def test_a_behaviour_round_trips_through_its_text(b: Behaviour) -> None:
    assert parse_behaviour(str(b)) == b


@given(behaviours())
def test_the_text_of_a_behaviour_is_canonical(b: Behaviour) -> None:
    text = str(b)
    assert str(parse_behaviour(text)) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ok", Behaviour()),
        ("ok:emit=a.b+c", Behaviour(emit=("a.b", "c"))),
        ("ok:emit=", Behaviour(emit=())),
        ("ok:dedupe=2:took=5s", Behaviour(dedupe=2, duration=timedelta(seconds=5))),
        ("slow:90s", Behaviour(kind=Kind.SLOW, duration=timedelta(seconds=90))),
        ("flaky:0.2", Behaviour(kind=Kind.FLAKY, rate=0.2)),
        ("error:fatal", Behaviour(kind=Kind.ERROR, fatal=True)),
        ("exit78", Behaviour(kind=Kind.EXIT78)),
        ("timeout", Behaviour(kind=Kind.TIMEOUT)),
        ("garbage:took=2m", Behaviour(kind=Kind.GARBAGE, duration=timedelta(minutes=2))),
    ],
)
def test_the_compact_syntax(text: str, expected: Behaviour) -> None:
    assert parse_behaviour(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus", "unknown behaviour 'bogus' (known: ok, error"),
        ("slow", "'slow' needs a duration"),
        ("slow:90", "needs a unit"),
        ("flaky", "'flaky' needs a failure rate"),
        ("flaky:1.5", "from 0 to 1"),
        ("flaky:nan", "from 0 to 1"),
        ("flaky:often", "from 0 to 1, not 'often'"),
        ("ok:fatal", "only 'error' can be fatal"),
        ("exit78:emit=a", "never succeeds"),
        ("timeout:took=5s", "whole timeout"),
        ("ok:emit=a++b", "an empty event type"),
        ("ok:emit=a b", "is not an event type"),
        ("ok:dedupe=x", "whole number"),
        ("ok:took=5s:took=6s", "given twice"),
        ("ok:colour=red", "unknown option 'colour=red'"),
        ("slow:5s:took=3s", "already says how long"),
        ("ok:took=0s", "must be longer than zero"),
    ],
)
def test_a_bad_behaviour_is_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(BehaviourError) as caught:
        parse_behaviour(text)
    assert message in str(caught.value)


def test_assignments_and_keys() -> None:
    assert parse_assignment("notify.handle=flaky:0.3") == (
        "notify.handle",
        Behaviour(kind=Kind.FLAKY, rate=0.3),
    )
    assert split_key("notify.handle") == ("notify", "handle")
    assert split_key("my.plugin") == ("my.plugin", None)
    assert split_key("my.plugin.init") == ("my.plugin", "init")
    with pytest.raises(BehaviourError, match="PLUGIN=BEHAVIOUR"):
        parse_assignment("notify")


def test_a_plugin_wide_behaviour_never_applies_to_init() -> None:
    table = {"p": Behaviour(kind=Kind.EXIT78), "p.handle": Behaviour(kind=Kind.TIMEOUT)}
    assert behaviour_for(table, "p", "poll").kind is Kind.EXIT78
    assert behaviour_for(table, "p", "handle").kind is Kind.TIMEOUT
    assert behaviour_for(table, "p", "init") == Behaviour()
    assert behaviour_for({"p.init": Behaviour(kind=Kind.ERROR)}, "p", "init").kind is Kind.ERROR
    assert behaviour_for({}, "q", "poll") == Behaviour()
    assert Behaviour().duration == DEFAULT_DURATION


@pytest.mark.parametrize("body", GARBAGE)
def test_every_garbage_body_is_a_protocol_error(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_response(body)


@given(
    attempt=st.integers(1, 60),
    base=st.integers(0, 10**7).map(lambda ms: timedelta(milliseconds=ms)),
    draw=st.floats(0, 1, exclude_max=True),
)
def test_the_liveness_bound_covers_every_backoff(attempt: int, base: timedelta, draw: float) -> None:
    assert backoff_delay(attempt, base, draw) <= backoff_bound(RetryPolicy(backoff_base=base), attempt)


# =========================================================================== the catalog


def _config(*plugins: PluginConfig) -> Config:
    return Config(
        service=ServiceConfig(state_dir="/s"), plugins_dir="/p", plugins={p.name: p for p in plugins}
    )


def test_the_sim_catalog_loads_every_configured_plugin_without_a_filesystem() -> None:
    behaviours = {"b.init": Behaviour()}
    catalog = SimCatalog(
        behaviours,
        manifests={
            "m": Manifest(name="m", version="1", protocol=1, entrypoint="x", required_keys=("token",))
        },
        refusals={"r": "not executable"},
    )
    found = catalog.discover(
        _config(PluginConfig(name="a"), PluginConfig(name="b"), PluginConfig(name="off", enabled=False))
    )
    assert sorted(found.plugins) == ["a", "b"]
    assert found.plugins["a"].executable == "sim://a"
    assert found.plugins["a"].directory == "/sim/a"
    assert found.plugins["a"].manifest.commands == frozenset({"poll", "handle", "health"})
    assert "init" in found.plugins["b"].manifest.commands
    assert found.disabled == ("off",)
    assert {(r.name, r.reason) for r in found.refused} == {
        ("m", "missing required config key(s): token (set them under plugins.m.config)"),
        ("r", "not executable"),
    }
    assert catalog.verify(found.plugins["a"]) is None


# =========================================================================== the invariant functions


def _t(src: JobStatus | None, dst: JobStatus, reason: str = "r", minutes: int = 0) -> Transition:
    return Transition(
        job_id="j",
        from_status=src,
        to_status=dst,
        reason=reason,
        actor=Actor.API,
        at=T0 + timedelta(minutes=minutes),
    )


Q, R, S, F, D = JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.DEAD


def test_check_history_accepts_a_legal_log_and_names_each_kind_of_bad_one() -> None:
    done = job(created_at=T0, status=S, completed_at=T0)
    assert check_history(done, [_t(None, Q), _t(Q, R), _t(R, S)]) == []
    assert "illegal move" in check_history(done, [_t(None, Q), _t(Q, S)])[0]
    assert "follows a move" in check_history(done, [_t(None, Q), _t(R, S)])[0]
    assert "the row says" in check_history(job(created_at=T0, status=Q), [_t(None, Q), _t(Q, R)])[0]
    assert "transient" in " ".join(
        check_history(job(created_at=T0, status=F), [_t(None, Q), _t(Q, R), _t(R, F)])
    )
    assert (
        "without completed_at"
        in check_history(job(created_at=T0, status=S), [_t(None, Q), _t(Q, R), _t(R, S)])[0]
    )
    assert "back in time" in check_history(done, [_t(None, Q), _t(Q, R, minutes=5), _t(R, S, minutes=1)])[0]
    assert "no transition log" in check_history(done, [])[0]


def test_check_attempts() -> None:
    log = [_t(None, Q), _t(Q, R), _t(R, F), _t(F, Q), _t(Q, R), _t(R, S)]
    assert check_attempts(job(created_at=T0, status=S, attempt=2, completed_at=T0), log) == []
    assert (
        "after 1 re-queue" in check_attempts(job(created_at=T0, status=S, attempt=3, max_attempts=4), log)[0]
    )
    dead_early = [_t(None, Q), _t(Q, R), _t(R, F), _t(F, D, reason="attempts exhausted (1/4)")]
    assert "though retryable" in check_attempts(job(created_at=T0, status=D, completed_at=T0), dead_early)[0]
    fatal = [_t(None, Q), _t(Q, R), _t(R, F), _t(F, D, reason="not retryable")]
    assert check_attempts(job(created_at=T0, status=D, completed_at=T0), fatal) == []
    cancelled = [_t(None, Q), _t(Q, D, reason="plugin removed")]
    assert check_attempts(job(created_at=T0, status=D, completed_at=T0), cancelled) == []
    assert "exceeds max_attempts" in " ".join(
        check_attempts(job(created_at=T0, status=Q, attempt=2, max_attempts=1), log[:4])
    )


def test_check_dedupe_both_ways() -> None:
    ttl = timedelta(hours=1)
    new = job("n", created_at=T0, dedupe_key="k")
    queued = job("o", created_at=T0, dedupe_key="k")
    old_success = job("s", created_at=T0, dedupe_key="k", status=S, completed_at=T0 - timedelta(hours=2))
    assert check_dedupe(new, EnqueueResult("n", True), [old_success], now=T0, ttl=ttl) == []
    assert "blocks it" in check_dedupe(new, EnqueueResult("n", True), [queued], now=T0, ttl=ttl)[0]
    assert check_dedupe(new, EnqueueResult("o", False), [queued], now=T0, ttl=ttl) == []
    assert "does not block" in check_dedupe(new, EnqueueResult("s", False), [old_success], now=T0, ttl=ttl)[0]
    assert "does not share" in check_dedupe(new, EnqueueResult("x", False), [queued], now=T0, ttl=ttl)[0]
    # D1 as amended: a running job blocks too
    running = job("r", created_at=T0, dedupe_key="k", status=JobStatus.RUNNING)
    assert "blocks it" in check_dedupe(new, EnqueueResult("n", True), [running], now=T0, ttl=ttl)[0]
    assert check_dedupe(new, EnqueueResult("r", False), [running], now=T0, ttl=ttl) == []


def test_check_fire_holds_the_breaker_and_the_poll_guard() -> None:
    policy = BreakerPolicy(threshold=2, reset_after=timedelta(minutes=30))
    guard = Guard(plugin="p", command="poll", max_outstanding=1, breaker=policy)
    opened = Breaker(plugin="p", command="poll", status=BreakerStatus.OPEN, failures=2, opened_at=T0)
    created = FireResult(fired=True, jobs=(EnqueueResult("j", True),))
    blocked = FireResult(fired=True, blocked="breaker_open")
    soon, later = T0 + timedelta(minutes=5), T0 + timedelta(minutes=31)
    assert "while the breaker was open" in check_fire(guard, opened, 0, created, now=soon)[0]
    assert check_fire(guard, opened, 0, blocked, now=soon) == []
    assert check_fire(guard, opened, 0, created, now=later) == []
    assert "admits a run" in check_fire(guard, opened, 0, blocked, now=later)[0]
    assert "of its schedule outstanding" in check_fire(guard, None, 1, created, now=soon)[0]
    assert (
        "only 0 outstanding"
        in check_fire(guard, None, 0, FireResult(fired=True, blocked="poll_guard"), now=soon)[0]
    )


def test_the_small_checks() -> None:
    assert check_single_runner({"a"}, between_steps=False) == []
    assert check_single_runner({"a", "b"}, between_steps=False)
    assert check_single_runner({"a"}, between_steps=True)
    assert check_state("p", {"count": 3}, 3) == []
    assert check_state("p", {}, 1)
    assert check_executions({("j", 1): 1}, [("j", 1)], crashes=1) == []
    assert "ran 2 times" in check_executions({("j", 1): 2}, [], crashes=0)[0]
    assert "never settled" in check_executions({("j", 1): 1}, [("j", 1)], crashes=0)[0]
    late = {"j": (job(created_at=T0, status=Q), T0)}
    assert check_liveness(late, T0) == []
    assert "not finished at its deadline" in check_liveness(late, T0 + timedelta(seconds=1))[0]


def test_dst_changes_lists_the_spring_forward_and_fall_back() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    spring = dst_changes(berlin, datetime(2026, 3, 27, tzinfo=UTC), datetime(2026, 4, 3, tzinfo=UTC))
    assert spring == [(datetime(2026, 3, 29, 1, 0, tzinfo=UTC), timedelta(hours=1), timedelta(hours=2))]
    autumn = dst_changes(berlin, datetime(2026, 10, 20, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
    assert autumn == [(datetime(2026, 10, 25, 1, 0, tzinfo=UTC), timedelta(hours=2), timedelta(hours=1))]
    assert dst_changes(UTC, datetime(2026, 3, 27, tzinfo=UTC), datetime(2026, 4, 3, tzinfo=UTC)) == []


# =========================================================================== ductile simulate


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A copy of examples/ with its own (absent) state directory."""
    shutil.copy(ROOT / "examples" / "ductile.yaml", tmp_path / "ductile.yaml")
    shutil.copytree(ROOT / "examples" / "plugins", tmp_path / "plugins", symlinks=True)
    return tmp_path / "ductile.yaml"


def _simulate(config: Path, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    context = Context(env={"PATH": "/usr/bin:/bin"}, out=out, err=err, tz=ZoneInfo("Europe/Berlin"))
    code = main(["simulate", "--config", str(config), "--start", "2026-03-28T20:00Z", *argv], context=context)
    return code, out.getvalue(), err.getvalue()


def test_simulate_previews_the_example_without_touching_anything(example: Path) -> None:
    before = sorted(p.name for p in example.parent.rglob("*"))
    code, out, err = _simulate(example, "--days", "0.25", "--fail", "notify=0.5")
    assert code == 0, err
    assert sorted(p.name for p in example.parent.rglob("*")) == before, "simulate created files"
    assert "nothing real was run" in out
    assert "counter: every 1m" in out
    assert "hello: cron '*/5 * * * *'" in out
    assert "fails 50% of runs" in out
    assert "counter  counter.ticked  notify" in out
    assert "invariants: all held" in out
    summary = out[out.index("summary:") :]
    assert "notify" in summary


def test_simulate_json_has_the_whole_run(example: Path) -> None:
    code, out, err = _simulate(example, "--days", "0.1", "--json", "--behaviour", "hello=exit78")
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) >= {"plugins", "runs", "events", "dst", "routes", "summary", "invariants", "trace_hash"}
    stats = {s["plugin"]: s for s in doc["summary"]}
    assert stats["hello"]["successes"] == 0
    assert stats["hello"]["dead"] == stats["hello"]["jobs"] > 0
    assert stats["counter"]["jobs"] == stats["notify"]["jobs"] > 100
    counter_runs = [r for r in doc["runs"] if r["plugin"] == "counter"]
    assert all(r["planned_at"] and r["nominal_at"] and r["timezone"] for r in counter_runs)
    assert all(abs(r["offset_seconds"]) <= 5 for r in counter_runs)
    notify = [r for r in doc["runs"] if r["plugin"] == "notify"]
    assert all(r["parent_job_id"] for r in notify)
    assert {"breaker_open", "skipped_breaker"} <= {e["kind"] for e in doc["events"]}


def test_simulate_is_deterministic_and_the_seed_matters(example: Path) -> None:
    runs = [
        json.loads(_simulate(example, "--days", "0.05", "--json", "--seed", seed)[1])
        for seed in ("7", "7", "8")
    ]
    assert runs[0]["trace_hash"] == runs[1]["trace_hash"] != runs[2]["trace_hash"]


def test_simulate_shows_a_dst_change_on_its_day(tmp_path: Path) -> None:
    config = tmp_path / "ductile.yaml"
    config.write_text(
        "service: {state_dir: ./state}\nplugins_dir: ./none\n"
        "plugins:\n  backup:\n    schedule: {cron: '30 2 * * *', timezone: Europe/Berlin}\n"
    )
    out, err = io.StringIO(), io.StringIO()
    context = Context(env={}, out=out, err=err, tz=UTC)
    code = main(
        ["simulate", "--config", str(config), "--start", "2026-03-27", "--days", "3"], context=context
    )
    assert code == 0, err.getvalue()
    text = out.getvalue()
    assert "does not exist: every configured plugin is simulated" in err.getvalue()
    assert "2026-03-29 Sun" in text
    assert "DST: +01:00 -> +02:00" in text
    # the 02:30 run of the spring-forward day runs just after the gap, at 03:00 local
    assert "2026-03-29T03:00:00+02:00" in text
    assert not (tmp_path / "state").exists()


def test_simulate_check_crashes_the_daemon_and_everything_holds(example: Path) -> None:
    code, out, err = _simulate(example, "--days", "0.2", "--check", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["invariants"]["crashes"] >= 3
    assert doc["invariants"]["ok"] is True


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--behaviour", "hello=bogus"], "unknown behaviour 'bogus'"),
        (["--behaviour", "ghost=ok"], "no plugin 'ghost' in this config"),
        (["--fail", "hello"], "write PLUGIN=RATE"),
        (["--fail", "hello=2"], "from 0 to 1"),
        (["--fail", "hello=0.1", "--behaviour", "hello=ok"], "given a behaviour twice"),
        (["--days", "0"], "--days must be more than 0"),
        (["--webhooks-per-day", "-1"], "cannot be negative"),
    ],
)
def test_simulate_refuses_bad_arguments_with_exit_2(example: Path, argv: list[str], message: str) -> None:
    code, out, err = _simulate(example, *argv)
    assert code == 2
    assert message in err
    assert out == ""
