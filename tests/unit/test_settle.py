"""classify() then settle(): the pure decisions after a job's run (D2, D3, D4, D7, D8, D9).

Each example takes a run the way the engine does: the spawner's outcome is
classified (``classify``), then settled against the job, state and breaker
(``settle``). Examples pin every field a settlement carries; the properties at
the end hold the pair to the state machine and the retry rules for any outcome.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ductile.domain import breaker as br
from ductile.domain.classify import MAX_ERROR_CHARS, classify
from ductile.domain.errors import IllegalTransitionError, ProtocolError
from ductile.domain.job import (
    TRANSITIONS,
    Actor,
    Job,
    JobStatus,
    SubmittedBy,
    Transition,
)
from ductile.domain.outcome import STDOUT_KEEP, Interrupted, NotRun, Outcome, SpawnOutcome
from ductile.domain.protocol import LogLine, parse_response
from ductile.domain.retry import RetryPolicy, max_backoff
from ductile.domain.routing import Route, Target, child_job_id, event_id_for
from ductile.domain.settle import MAX_LOG_CHARS, MAX_LOG_LINES, SettleContext, Settlement
from ductile.domain.settle import settle as settle_end
from ductile.domain.state import MAX_STATE_BYTES, state_size

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
STARTED = NOW - timedelta(seconds=5)
S = JobStatus


def settle(
    job: Job,
    outcome: Outcome,
    *,
    ctx: SettleContext,
    state: dict[str, Any] | None = None,
    breaker: br.Breaker | None = None,
    timeout: timedelta | None = None,
) -> Settlement:
    """What the engine and the store's unit do with an outcome: classify it, then settle it."""
    end = classify(outcome, timeout) if isinstance(outcome, SpawnOutcome) else outcome
    return settle_end(job, end, ctx=ctx, state=state, breaker=breaker)


def running(**changes: Any) -> Job:
    base: dict[str, Any] = {
        "id": "job-1",
        "plugin": "withings",
        "command": "poll",
        "status": S.RUNNING,
        "attempt": 1,
        "max_attempts": 4,
        "submitted_by": SubmittedBy.SCHEDULER,
        "created_at": NOW - timedelta(minutes=1),
        "started_at": STARTED,
    }
    base.update(changes)
    return Job(**base)


def body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def ok(exit_code: int | None = 0, stderr: bytes = b"", **fields: Any) -> SpawnOutcome:
    return SpawnOutcome(
        exit_code=exit_code, stdout=body(status="ok", **fields), stderr_tail=stderr, duration=1.25
    )


def err(message: str | None, *, retry: bool | None = None, exit_code: int = 0, **fields: Any) -> SpawnOutcome:
    data: dict[str, Any] = {"status": "error", **fields}
    if message is not None:
        data["error"] = message
    if retry is not None:
        data["retry"] = retry
    return SpawnOutcome(exit_code=exit_code, stdout=json.dumps(data).encode(), duration=0.5)


CTX = SettleContext(now=NOW, draw=0.5)


def moves(s: Settlement) -> list[tuple[JobStatus | None, JobStatus, Actor]]:
    return [(t.from_status, t.to_status, t.actor) for t in s.transitions]


def assert_retried(s: Settlement, job: Job, *, via: JobStatus = S.FAILED) -> None:
    """running -> failed|timed_out (dispatcher) -> queued (retry), with the exact backoff."""
    n = job.attempt
    base = CTX.retry.backoff_base
    expected_at = NOW + base * 2 ** (n - 1) + base * CTX.draw
    assert moves(s) == [(S.RUNNING, via, Actor.DISPATCHER), (via, S.QUEUED, Actor.RETRY)]
    assert s.transitions[0].reason == s.job.last_error
    assert s.transitions[1].reason == (
        f"attempt {n + 1} of {job.max_attempts} at {expected_at.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    )
    assert all(t.at == NOW and t.job_id == job.id for t in s.transitions)
    assert s.job.status is S.QUEUED
    assert s.job.attempt == n + 1
    assert s.job.next_retry_at == expected_at
    assert s.job.completed_at is None
    assert s.job.started_at is None
    assert s.retrying
    assert not s.succeeded
    assert s.state is None
    assert s.children == ()
    assert s.events == ()


def assert_dead(s: Settlement, *, reason: str, via: JobStatus = S.FAILED) -> None:
    assert moves(s) == [(S.RUNNING, via, Actor.DISPATCHER), (via, S.DEAD, Actor.DISPATCHER)]
    assert s.transitions[1].reason == reason
    assert s.job.status is S.DEAD
    assert s.job.completed_at == NOW
    assert s.job.next_retry_at is None
    assert s.state is None
    assert s.children == ()


# --------------------------------------------------------------------------- success


def test_success_moves_running_to_succeeded_and_records_the_run() -> None:
    job = running()
    outcome = ok(stderr=b"fetched 3 rows\n", logs=[{"level": "info", "message": "hello"}])
    s = settle(job, outcome, ctx=CTX)

    assert s.transitions == (
        Transition(
            job_id="job-1",
            from_status=S.RUNNING,
            to_status=S.SUCCEEDED,
            reason="succeeded",
            actor=Actor.DISPATCHER,
            at=NOW,
        ),
    )
    assert s.job == attrs.evolve(job, status=S.SUCCEEDED, completed_at=NOW)
    assert s.succeeded
    assert not s.retrying
    assert s.job.attempt == 1
    assert s.job.next_retry_at is None
    assert s.job.last_error is None
    assert s.response == parse_response(outcome.stdout)
    assert s.protocol_error is None
    assert s.run.job_id == "job-1"
    assert s.run.attempt == 1
    assert s.run.started_at == STARTED
    assert s.run.finished_at == NOW
    assert s.run.duration == 1.25
    assert s.run.exit_code == 0
    assert s.run.signal is None
    assert s.run.timed_out is False
    assert s.run.error is None
    assert s.run.stderr_tail == b"fetched 3 rows\n"
    assert s.run.stdout_head == outcome.stdout
    assert s.run.logs == (LogLine(level="info", message="hello"),)
    assert s.state is None
    assert s.events == ()
    assert s.children == ()


def test_success_after_a_failed_attempt_keeps_the_previous_error_for_history() -> None:
    job = running(attempt=2, last_error="upstream 503")
    s = settle(job, ok(), ctx=CTX)
    assert s.job.status is S.SUCCEEDED
    assert s.job.attempt == 2
    assert s.job.last_error == "upstream 503"


def test_state_updates_are_shallow_merged_into_the_given_state() -> None:
    current = {"token": "old", "nested": {"x": 1, "y": 2}, "keep": True}
    snapshot = json.dumps(current)
    s = settle(running(), ok(state_updates={"nested": {"x": 3}, "cursor": 42}), ctx=CTX, state=current)
    assert s.state == {"token": "old", "nested": {"x": 3}, "keep": True, "cursor": 42}
    assert json.dumps(current) == snapshot  # the caller's state is not mutated


def test_state_updates_without_a_previous_state() -> None:
    s = settle(running(), ok(state_updates={"cursor": 1}), ctx=CTX, state=None)
    assert s.state == {"cursor": 1}


@pytest.mark.parametrize(
    ("current", "updates"),
    [({"a": 1}, None), ({"a": 1}, {}), ({"a": 1, "b": [1, 2]}, {"b": [1, 2]}), ({}, None)],
)
def test_no_state_change_gives_no_state(current: dict[str, Any], updates: dict[str, Any] | None) -> None:
    fields: dict[str, Any] = {} if updates is None else {"state_updates": updates}
    s = settle(running(), ok(**fields), ctx=CTX, state=current)
    assert s.succeeded
    assert s.state is None


def test_a_value_equal_in_python_but_not_in_json_is_a_state_change() -> None:
    # 1 == True in Python; in the stored JSON they differ, so the update must be kept.
    s = settle(running(), ok(state_updates={"flag": True}), ctx=CTX, state={"flag": 1})
    assert s.state == {"flag": True}
    assert json.dumps(s.state) == '{"flag": true}'


ROUTES = (
    Route(source="withings", event_type="new_data", target="analyzer"),
    Route(source="withings", event_type="new_data", target="archiver"),
    Route(source="withings", event_type="new_data", target="gone"),  # not loaded
    Route(source="other", event_type="new_data", target="analyzer"),  # other source
    Route(source="withings", event_type="digest", target="mailer", command="handle"),
)
TARGETS = {
    "analyzer": Target(max_attempts=2),
    "archiver": Target(max_attempts=7),
    "mailer": Target(max_attempts=4),
}
ROUTED = SettleContext(now=NOW, draw=0.5, routes=ROUTES, targets=TARGETS)

EVENTS = [
    {"type": "new_data", "payload": {"weight": 71.5}, "dedupe_key": "m-17"},
    {"type": "digest"},
    {"type": "nobody_listens", "payload": {"x": 1}},
]


def test_events_are_wrapped_in_envelopes() -> None:
    s = settle(running(), ok(events=EVENTS), ctx=ROUTED)
    assert [e.type for e in s.events] == ["new_data", "digest", "nobody_listens"]
    for i, env in enumerate(s.events):
        assert env.source == "withings"
        assert env.timestamp == NOW
        assert env.event_id == event_id_for("job-1", i)
    assert s.events[0].payload == {"weight": 71.5}
    assert s.events[0].dedupe_key == "m-17"
    assert s.events[1].payload == {}
    assert s.events[1].dedupe_key is None
    assert s.events[0].to_json() == {
        "type": "new_data",
        "payload": {"weight": 71.5},
        "source": "withings",
        "timestamp": "2026-03-01T12:00:00Z",
        "event_id": event_id_for("job-1", 0),
        "dedupe_key": "m-17",
    }
    assert len({e.event_id for e in s.events}) == 3


def test_events_fan_out_into_one_child_per_matching_route() -> None:
    s = settle(running(), ok(events=EVENTS), ctx=ROUTED)
    first, second = s.events[0], s.events[1]
    expected = [
        (first, "analyzer", 2),
        (first, "archiver", 7),
        (second, "mailer", 4),
    ]
    assert len(s.children) == len(expected)
    for child, (env, target, max_attempts) in zip(s.children, expected, strict=True):
        assert child == Job(
            id=child_job_id("job-1", env.event_id, target, "handle"),
            plugin=target,
            command="handle",
            payload=env.to_json(),
            status=S.QUEUED,
            attempt=1,
            max_attempts=max_attempts,
            submitted_by=SubmittedBy.ROUTE,
            dedupe_key=env.dedupe_key,
            created_at=NOW,
            parent_job_id="job-1",
            source_event_id=env.event_id,
            route_depth=1,  # one routing hop from the root job
        )
    assert s.children[0].dedupe_key == "m-17"  # inherited from the event
    assert s.children[1].dedupe_key == "m-17"  # fan-out siblings share it (identity is per target)
    assert s.unroutable == (("new_data", "gone"),)
    assert s.unmatched == ("nobody_listens",)


def test_a_replayed_completion_yields_identical_children() -> None:
    job = running()
    first = settle(job, ok(events=EVENTS, state_updates={"c": 1}), ctx=ROUTED, state={})
    again = settle(job, ok(events=EVENTS, state_updates={"c": 1}), ctx=ROUTED, state={})
    assert first == again
    assert [c.id for c in first.children] == [c.id for c in again.children]


def test_children_of_different_parents_differ() -> None:
    a = settle(running(id="job-a"), ok(events=EVENTS), ctx=ROUTED)
    b = settle(running(id="job-b"), ok(events=EVENTS), ctx=ROUTED)
    assert not {c.id for c in a.children} & {c.id for c in b.children}


# --------------------------------------------------------------------------- state limit


def test_state_over_one_mib_fails_the_job_and_keeps_the_state() -> None:
    current = {"cursor": 1}
    updates = {"blob": "x" * MAX_STATE_BYTES}
    size = state_size({**current, **updates})
    job = running()
    s = settle(job, ok(state_updates=updates, events=EVENTS), ctx=ROUTED, state=current)
    assert_retried(s, job)
    assert f"{size:,} bytes" in s.job.last_error  # type: ignore[operator]
    assert f"{MAX_STATE_BYTES:,}" in s.job.last_error  # type: ignore[operator]
    assert s.run.error == s.job.last_error
    assert s.state is None
    assert s.children == ()  # nothing of a failed run is routed
    assert current == {"cursor": 1}


def test_state_just_at_the_limit_is_accepted() -> None:
    limit = 64
    updates = {"b": "y" * (limit - len('{"b":""}'))}
    assert state_size(updates) == limit
    s = settle(running(), ok(state_updates=updates), ctx=SettleContext(now=NOW, state_limit=limit))
    assert s.succeeded
    assert s.state == updates
    over = settle(
        running(), ok(state_updates={"b": updates["b"] + "y"}), ctx=SettleContext(now=NOW, state_limit=limit)
    )
    assert over.job.status is S.QUEUED


def test_state_over_the_limit_on_the_last_attempt_is_dead() -> None:
    s = settle(
        running(attempt=4),
        ok(state_updates={"blob": "x" * 100}),
        ctx=SettleContext(now=NOW, state_limit=50),
        state={},
    )
    assert_dead(s, reason="attempts exhausted (4/4)")
    assert "over the 50-byte limit" in s.job.last_error  # type: ignore[operator]


# --------------------------------------------------------------------------- failures


def test_error_response_with_retry_true_is_retried() -> None:
    job = running()
    s = settle(job, err("upstream 503", retry=True), ctx=CTX)
    assert_retried(s, job)
    assert s.job.last_error == "upstream 503"
    assert s.run.error == "upstream 503"
    assert s.response is not None
    assert s.response.retry is True


def test_error_response_retry_defaults_to_true() -> None:
    job = running()
    assert_retried(settle(job, err("flaky"), ctx=CTX), job)


def test_error_response_with_retry_false_is_dead_at_once() -> None:
    s = settle(running(), err("token revoked", retry=False), ctx=CTX)
    assert_dead(s, reason="not retryable")
    assert s.job.last_error == "token revoked"
    assert s.job.attempt == 1
    assert s.transitions[0].reason == "token revoked"


def test_error_response_without_a_message_says_so() -> None:
    s = settle(running(), attrs.evolve(err(None), stderr_tail=b"KeyError: 'x'\n"), ctx=CTX)
    assert (
        s.job.last_error == "the plugin reported an error without a message; stderr ends: \"KeyError: 'x'\""
    )


def test_exit_78_with_an_ok_body_is_not_retried() -> None:
    s = settle(running(), ok(exit_code=78, state_updates={"a": 1}, events=EVENTS), ctx=ROUTED, state={})
    assert_dead(s, reason="not retryable")
    assert s.job.last_error == "exit code 78 (EX_CONFIG: not retried)"
    assert s.run.exit_code == 78
    assert s.events == ()


def test_exit_78_with_an_error_body_keeps_the_plugins_message() -> None:
    s = settle(running(), err("client_id is wrong", retry=True, exit_code=78), ctx=CTX)
    assert_dead(s, reason="not retryable")
    assert s.job.last_error == "client_id is wrong (exit code 78, EX_CONFIG: not retried)"


def test_exit_78_with_garbage_names_the_protocol_error() -> None:
    out = SpawnOutcome(exit_code=78, stdout=b"usage: ...", stderr_tail=b"missing key\n")
    s = settle(running(), out, ctx=CTX)
    assert_dead(s, reason="not retryable")
    assert s.protocol_error == "not_json"
    assert s.job.last_error is not None
    assert s.job.last_error.startswith("exit code 78 (EX_CONFIG: not retried) with protocol error: ")
    assert s.job.last_error.endswith("; stderr ends: 'missing key'")


def test_nonzero_exit_with_an_ok_body_is_a_failure() -> None:
    job = running()
    s = settle(job, ok(exit_code=3, stderr=b"warning: partial\n", state_updates={"a": 1}), ctx=CTX, state={})
    assert_retried(s, job)
    assert s.job.last_error == "exit code 3 with an ok response; stderr ends: 'warning: partial'"
    assert s.state is None


def test_nonzero_exit_with_an_ok_body_saying_retry_false_is_not_retried() -> None:
    s = settle(running(), ok(exit_code=1, retry=False), ctx=CTX)
    assert_dead(s, reason="not retryable")


def test_nonzero_exit_with_an_error_body_gives_message_and_exit_code() -> None:
    job = running()
    s = settle(job, err("rate limited", exit_code=2), ctx=CTX)
    assert_retried(s, job)
    assert s.job.last_error == "rate limited (exit code 2)"


def test_nonzero_exit_with_no_output() -> None:
    job = running()
    out = SpawnOutcome(exit_code=1, stderr_tail=b"Traceback (most recent call last):\nValueError: bad\n")
    s = settle(job, out, ctx=CTX)
    assert_retried(s, job)
    assert s.job.last_error == "exit code 1 with no response on stdout; stderr ends: 'ValueError: bad'"
    assert s.protocol_error == "empty"


@pytest.mark.parametrize(
    ("signal", "name"), [(9, "SIGKILL"), (11, "SIGSEGV"), (15, "SIGTERM"), (6, "SIGABRT"), (42, "signal 42")]
)
def test_killed_by_a_signal(signal: int, name: str) -> None:
    job = running()
    out = SpawnOutcome(signal=signal, stdout=body(status="ok"), stderr_tail=b"oom\n")
    s = settle(job, out, ctx=CTX)
    assert_retried(s, job)
    assert s.job.last_error == f"killed by {name}; stderr ends: 'oom'"
    assert s.run.signal == signal
    assert s.run.exit_code is None
    assert s.protocol_error is None


def test_a_negative_exit_code_is_read_as_a_signal() -> None:
    s = settle(running(), SpawnOutcome(exit_code=-9), ctx=CTX)
    assert s.job.last_error == "killed by SIGKILL"


def test_timeout_wins_over_a_valid_ok_response() -> None:
    job = running()
    out = SpawnOutcome(
        exit_code=0,
        timed_out=True,
        duration=60.0,
        stdout=body(status="ok", state_updates={"a": 1}, events=EVENTS),
        stderr_tail=b"still waiting for the API\n",
    )
    s = settle(job, out, ctx=ROUTED, state={}, timeout=timedelta(minutes=1))
    assert_retried(s, job, via=S.TIMED_OUT)
    assert s.job.last_error == "timed out after 1m; stderr ends: 'still waiting for the API'"
    assert s.response is None
    assert s.run.timed_out is True
    assert s.run.logs == ()
    assert s.state is None
    assert s.events == ()


def test_timeout_on_the_last_attempt_is_dead() -> None:
    s = settle(running(attempt=4), SpawnOutcome(timed_out=True), ctx=CTX, timeout=timedelta(seconds=90))
    assert_dead(s, reason="attempts exhausted (4/4)", via=S.TIMED_OUT)
    assert s.job.last_error == "timed out after 1m30s"


@pytest.mark.parametrize(
    ("timeout", "duration", "text"),
    [
        (None, 12.5, "timed out after 12.5s"),
        (None, 0.0, "timed out"),
        (timedelta(microseconds=1500), 0.0, "timed out after 0.002s"),
        (timedelta(0), 3.0, "timed out after 3s"),
    ],
)
def test_timeout_message_without_a_configured_timeout(
    timeout: timedelta | None, duration: float, text: str
) -> None:
    s = settle(running(), SpawnOutcome(timed_out=True, duration=duration), ctx=CTX, timeout=timeout)
    assert s.job.last_error == text


def test_stdout_overflow() -> None:
    job = running()
    s = settle(job, SpawnOutcome(stdout_overflow=True, signal=9, stdout=b"x" * 100), ctx=CTX)
    assert_retried(s, job)
    assert s.job.last_error == "stdout over 10 MiB: the plugin was stopped"


def test_spawn_error() -> None:
    job = running()
    s = settle(job, SpawnOutcome(spawn_error="[Errno 13] Permission denied: 'run.py'"), ctx=CTX)
    assert_retried(s, job)
    assert s.job.last_error == "could not start the plugin: [Errno 13] Permission denied: 'run.py'"
    assert s.run.exit_code is None


@pytest.mark.parametrize(
    ("stdout", "kind"),
    [
        (b"", "empty"),
        (b"  \n", "empty"),
        (b"garbage", "not_json"),
        (b'{"status": "ok"', "not_json"),
        (b'{"status": "ok"}{"status": "ok"}', "trailing_data"),
        (b'{"status": "ok"}\n{"status": "error"}\n', "trailing_data"),
        (b"[]", "not_object"),
        (b'{"status": "ok", "x": "\xff"}', "encoding"),
        (b'{"status": "ok", "x": NaN}', "non_finite"),
        (b'{"status": "ok", "protocol": 2}', "protocol_mismatch"),
        (b'{"status": "done"}', "bad_field"),
    ],
)
def test_protocol_errors_are_retryable_failures(stdout: bytes, kind: str) -> None:
    job = running()
    s = settle(job, SpawnOutcome(exit_code=0, stdout=stdout, stderr_tail=b"debug: sent\n"), ctx=CTX)
    assert_retried(s, job)
    assert s.protocol_error == kind
    with pytest.raises(ProtocolError) as info:
        parse_response(stdout)
    assert s.job.last_error == f"protocol error: {info.value}; stderr ends: 'debug: sent'"
    assert s.run.stdout_head == stdout
    assert s.response is None


def test_a_large_bad_stdout_keeps_only_its_head() -> None:
    stdout = b"not json " * 20_000
    s = settle(running(), SpawnOutcome(exit_code=0, stdout=stdout), ctx=CTX)
    assert s.run.stdout_head == stdout[:STDOUT_KEEP]


def test_stderr_hint_is_the_last_non_empty_line_clipped() -> None:
    long_line = "E" * 500
    tail = f"first\n{long_line}\n   \n\n".encode()
    s = settle(running(), SpawnOutcome(exit_code=5, stderr_tail=tail), ctx=CTX)
    hint = s.job.last_error.split("; stderr ends: ", 1)[1]  # type: ignore[union-attr]
    assert hint == repr("E" * 199 + "…")
    undecodable = settle(running(), SpawnOutcome(exit_code=5, stderr_tail=b"bad \xff byte\n"), ctx=CTX)
    assert (
        undecodable.job.last_error == "exit code 5 with no response on stdout; stderr ends: 'bad \ufffd byte'"
    )


# --------------------------------------------------------------------------- retry path


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_backoff_doubles_per_attempt(attempt: int) -> None:
    job = running(attempt=attempt)
    s = settle(job, err("nope"), ctx=CTX)
    assert_retried(s, job)
    assert s.job.next_retry_at == NOW + timedelta(seconds=30 * 2 ** (attempt - 1) + 15)


def test_backoff_uses_the_plugins_policy_and_draw() -> None:
    ctx = SettleContext(
        now=NOW, draw=0.25, retry=RetryPolicy(max_attempts=5, backoff_base=timedelta(minutes=1))
    )
    s = settle(running(attempt=2, max_attempts=5), err("nope"), ctx=ctx)
    assert s.job.next_retry_at == NOW + timedelta(minutes=2, seconds=15)
    assert s.transitions[1].reason == "attempt 3 of 5 at 2026-03-01T12:02:15Z"


def test_retry_reason_is_written_in_utc_whatever_the_zone_of_now() -> None:
    berlin_now = NOW.astimezone(timezone(timedelta(hours=1)))
    s = settle(running(), err("nope"), ctx=SettleContext(now=berlin_now, draw=0.0))
    assert s.transitions[1].reason == "attempt 2 of 4 at 2026-03-01T12:00:30Z"


@pytest.mark.parametrize(("attempt", "max_attempts"), [(4, 4), (1, 1), (5, 5)])
def test_out_of_attempts_is_dead(attempt: int, max_attempts: int) -> None:
    s = settle(running(attempt=attempt, max_attempts=max_attempts), err("nope"), ctx=CTX)
    assert_dead(s, reason=f"attempts exhausted ({attempt}/{max_attempts})")
    assert s.job.attempt == attempt
    assert s.job.last_error == "nope"
    assert s.transitions[0].reason == "nope"


def test_not_retryable_wins_over_attempts_exhausted_in_the_reason() -> None:
    s = settle(running(attempt=4), err("nope", retry=False), ctx=CTX)
    assert_dead(s, reason="not retryable")


def test_draw_must_be_in_unit_interval() -> None:
    with pytest.raises(ValueError, match=r"draw must be a random draw in \[0, 1\), got 1.0"):
        SettleContext(now=NOW, draw=1.0)
    with pytest.raises(ValueError, match="draw"):
        SettleContext(now=NOW, draw=-0.1)


# --------------------------------------------------------------------------- not run


def test_not_run_is_dead_by_default_and_leaves_the_breaker_alone() -> None:
    breaker = br.Breaker(plugin="withings", command="poll", failures=2)
    s = settle(
        running(),
        NotRun(reason="plugin refused: plugins/withings is world-writable"),
        ctx=CTX,
        breaker=breaker,
    )
    assert_dead(s, reason="not retryable")
    assert s.job.last_error == "plugin refused: plugins/withings is world-writable"
    assert s.breaker is None
    assert s.run.exit_code is None
    assert s.run.signal is None
    assert s.run.duration == 0.0
    assert s.run.stdout_head == b""
    assert s.response is None


def test_retryable_not_run_is_retried() -> None:
    job = running()
    s = settle(job, NotRun(reason="plugin busy", retryable=True), ctx=CTX)
    assert_retried(s, job)
    assert s.breaker is None


# --------------------------------------------------------------------------- breaker


def test_breaker_success_closes_a_breaker_with_failures() -> None:
    for current in (
        br.Breaker(plugin="withings", command="poll", failures=2),
        br.Breaker(
            plugin="withings",
            command="poll",
            status=br.BreakerStatus.HALF_OPEN,
            failures=3,
            opened_at=NOW - timedelta(hours=1),
            probe_at=NOW - timedelta(minutes=1),
        ),
    ):
        s = settle(running(), ok(), ctx=CTX, breaker=current)
        assert s.breaker == br.closed("withings", "poll")


@pytest.mark.parametrize("current", [None, br.closed("withings", "poll")])
def test_breaker_success_on_a_closed_breaker_changes_nothing(current: br.Breaker | None) -> None:
    assert settle(running(), ok(), ctx=CTX, breaker=current).breaker is None


def test_breaker_failure_counts_and_opens_at_threshold() -> None:
    policy = br.BreakerPolicy(threshold=3)
    ctx = attrs.evolve(CTX, breaker=policy)
    current: br.Breaker | None = None
    for n in (1, 2):
        s = settle(running(), err("nope"), ctx=ctx, breaker=current)
        assert s.breaker == br.Breaker(plugin="withings", command="poll", failures=n)
        current = s.breaker
    s = settle(running(), SpawnOutcome(timed_out=True), ctx=ctx, breaker=current)
    assert s.breaker == br.Breaker(
        plugin="withings", command="poll", status=br.BreakerStatus.OPEN, failures=3, opened_at=NOW
    )


def test_breaker_counts_non_retryable_and_state_rejections() -> None:
    assert settle(running(), err("x", retry=False), ctx=CTX).breaker == br.Breaker(
        plugin="withings", command="poll", failures=1
    )
    s = settle(running(), ok(state_updates={"b": "x" * 99}), ctx=attrs.evolve(CTX, state_limit=10), state={})
    assert s.breaker == br.Breaker(plugin="withings", command="poll", failures=1)


def test_breaker_half_open_probe_failure_reopens() -> None:
    half = br.Breaker(
        plugin="withings",
        command="poll",
        status=br.BreakerStatus.HALF_OPEN,
        failures=3,
        opened_at=NOW - timedelta(hours=1),
        probe_at=NOW - timedelta(minutes=1),
    )
    s = settle(running(), err("still down"), ctx=CTX, breaker=half)
    assert s.breaker == br.Breaker(
        plugin="withings", command="poll", status=br.BreakerStatus.OPEN, failures=4, opened_at=NOW
    )


@pytest.mark.parametrize("by", [SubmittedBy.WEBHOOK, SubmittedBy.ROUTE, SubmittedBy.CLI, SubmittedBy.API])
@pytest.mark.parametrize("outcome", [ok(), err("nope"), SpawnOutcome(timed_out=True), SpawnOutcome(signal=9)])
def test_only_scheduler_jobs_touch_the_breaker(by: SubmittedBy, outcome: SpawnOutcome) -> None:
    with_failures = br.Breaker(plugin="withings", command="poll", failures=2)
    assert settle(running(submitted_by=by), outcome, ctx=CTX, breaker=with_failures).breaker is None
    assert settle(running(submitted_by=by), outcome, ctx=CTX, breaker=None).breaker is None


# --------------------------------------------------------------------------- illegal


@pytest.mark.parametrize("status", [s for s in JobStatus if s is not S.RUNNING])
@pytest.mark.parametrize("outcome", [ok(), NotRun(reason="x"), Interrupted()])
def test_settling_a_job_that_is_not_running_raises(status: JobStatus, outcome: Outcome) -> None:
    job = running(status=status)
    with pytest.raises(
        IllegalTransitionError, match=f"job job-1: 'settle' is not allowed from '{status.value}'"
    ):
        settle(job, outcome, ctx=CTX)


# --------------------------------------------------------------------------- caps


def test_logs_are_capped_in_count_and_length() -> None:
    logs = [{"level": "warn", "message": f"line {i}"} for i in range(250)]
    logs[0]["message"] = "m" * 5000
    s = settle(running(), ok(logs=logs), ctx=CTX)
    assert len(s.run.logs) == MAX_LOG_LINES
    assert s.run.logs[0].message == "m" * (MAX_LOG_CHARS - 1) + "…"
    assert s.run.logs[1] == LogLine(level="warn", message="line 1")
    assert s.run.logs[MAX_LOG_LINES - 2] == LogLine(level="warn", message=f"line {MAX_LOG_LINES - 2}")
    assert s.run.logs[-1] == LogLine(level="warn", message="51 more log lines dropped")


def test_logs_at_the_cap_are_kept_whole() -> None:
    logs = [{"level": "error", "message": "e" * MAX_LOG_CHARS} for _ in range(MAX_LOG_LINES)]
    s = settle(running(), ok(logs=logs), ctx=CTX)
    assert s.run.logs == tuple(LogLine(level="error", message="e" * MAX_LOG_CHARS) for _ in logs)


def test_logs_of_a_failed_run_are_kept() -> None:
    s = settle(running(), err("nope", logs=[{"level": "error", "message": "why"}]), ctx=CTX)
    assert s.run.logs == (LogLine(level="error", message="why"),)


def test_error_text_is_capped() -> None:
    s = settle(running(), err("z" * 10_000), ctx=CTX)
    assert s.job.last_error == "z" * (MAX_ERROR_CHARS - 1) + "…"
    assert s.run.error == s.job.last_error
    assert s.transitions[0].reason == s.job.last_error


def test_not_run_reason_is_capped() -> None:
    s = settle(running(), NotRun(reason="r" * 9000), ctx=CTX)
    assert len(s.job.last_error or "") == MAX_ERROR_CHARS


# =========================================================================== properties

PAIRS = {(src, dst) for (src, _), dst in TRANSITIONS.items()}
FINAL = {S.SUCCEEDED, S.QUEUED, S.DEAD}
PROP_ROUTES = (
    Route(source="withings", event_type="a", target="analyzer"),
    Route(source="withings", event_type="a", target="archiver"),
    Route(source="withings", event_type="b", target="gone"),
)
PROP_TARGETS = {"analyzer": Target(max_attempts=3), "archiver": Target(max_attempts=1)}

json_scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
emitted = st.fixed_dictionaries(
    {"type": st.sampled_from(["a", "b", "c"])},
    optional={
        "payload": st.dictionaries(st.text(max_size=4), json_values, max_size=2),
        "dedupe_key": st.text(min_size=1, max_size=6),
    },
)


def weighted(*choices: tuple[st.SearchStrategy[Any], int]) -> st.SearchStrategy[Any]:
    """Pick a strategy in proportion to its weight (``one_of`` would dedupe repeats)."""
    return st.sampled_from([strategy for strategy, weight in choices for _ in range(weight)]).flatmap(
        lambda strategy: strategy
    )


def rarely(strategy: st.SearchStrategy[Any], usual: Any) -> st.SearchStrategy[Any]:
    """``strategy`` one time in eight, else ``usual``: keeps plenty of clean runs in the mix."""
    return st.sampled_from([False] * 7 + [True]).flatmap(lambda rare: strategy if rare else st.just(usual))


responses = st.fixed_dictionaries(
    {"status": st.sampled_from(["ok", "ok", "ok", "error"])},
    optional={
        "error": st.text(max_size=30),
        "retry": st.booleans(),
        "events": st.lists(emitted, min_size=1, max_size=3),
        "state_updates": st.dictionaries(st.text(max_size=4), json_values, min_size=1, max_size=3),
        "logs": st.lists(
            st.fixed_dictionaries(
                {"level": st.sampled_from(["info", "warn", "error"]), "message": st.text(max_size=10)}
            ),
            max_size=3,
        ),
        "protocol": st.sampled_from([1, 1, 1, None, 2]),
        "unknown_field": json_values,
    },
).map(lambda d: json.dumps(d).encode())
edge_stdouts = st.sampled_from(
    [
        b"",
        b"\n",
        b"{}",
        b"[]",
        b"null",
        b'{"status": "ok"}{"status": "ok"}',
        b'{"status": "ok", "x": NaN}',
        b'{"status": "ok"',
        b'{"status": "ok", "events": [{"type": ""}]}',
        b'{"status": "ok", "retry": "no"}',
        b"\xef\xbb\xbf{}",
        b'{"status": "error", "retry": false}',
        b'  {"status": "ok"}  \n',
    ]
)
stdouts = weighted((responses, 6), (edge_stdouts, 1), (st.binary(max_size=40), 1))

spawn_outcomes = st.builds(
    SpawnOutcome,
    exit_code=rarely(st.sampled_from([None, 1, 2, 78, 127, -9, -15]) | st.integers(-64, 255), 0),
    signal=rarely(st.integers(1, 64), None),
    stdout=stdouts,
    stderr_tail=st.binary(max_size=30) | st.text(max_size=30).map(str.encode),
    timed_out=rarely(st.just(True), False),
    stdout_overflow=rarely(st.just(True), False),
    duration=st.floats(0, 1000, allow_nan=False),
    spawn_error=rarely(st.text(max_size=10), None),
)
outcomes: st.SearchStrategy[Outcome] = weighted(
    (spawn_outcomes, 6),
    (st.builds(NotRun, reason=st.text(max_size=20), retryable=st.booleans()), 1),
    (st.builds(Interrupted, reason=st.text(max_size=20)), 1),
)


@st.composite
def running_jobs(draw: st.DrawFn) -> Job:
    max_attempts = draw(st.integers(1, 6))
    return running(
        attempt=draw(st.integers(1, max_attempts)),
        max_attempts=max_attempts,
        submitted_by=draw(st.sampled_from(list(SubmittedBy))),
        last_error=draw(st.none() | st.just("earlier")),
    )


contexts = st.builds(
    SettleContext,
    now=st.just(NOW),
    draw=st.floats(0, 1, exclude_max=True),
    retry=st.builds(RetryPolicy, backoff_base=st.integers(1, 7200).map(lambda s: timedelta(seconds=s))),
    routes=st.just(PROP_ROUTES),
    targets=st.just(PROP_TARGETS),
    state_limit=rarely(st.just(40), MAX_STATE_BYTES),
)
timeouts = st.none() | st.integers(1, 600).map(lambda s: timedelta(seconds=s))
states = st.none() | st.dictionaries(st.text(max_size=4), json_values, max_size=3)
breakers = st.none() | st.builds(
    br.Breaker,
    plugin=st.just("withings"),
    command=st.just("poll"),
    failures=st.integers(0, 5),
)


def model_retryable(outcome: Outcome) -> bool:
    """An independent statement of D3's retry rule."""
    if isinstance(outcome, NotRun):
        return outcome.retryable
    if isinstance(outcome, Interrupted) or outcome.timed_out or outcome.stdout_overflow:
        return True
    if outcome.spawn_error is not None:
        return True
    if outcome.exit_code == 78 and outcome.signal is None:
        return False
    try:
        return parse_response(outcome.stdout).retry
    except ProtocolError:
        return True


def model_succeeds(outcome: Outcome, state: dict[str, Any] | None, limit: int) -> bool:
    if not isinstance(outcome, SpawnOutcome):
        return False
    if outcome.timed_out or outcome.spawn_error is not None or outcome.stdout_overflow:
        return False
    if outcome.signal is not None or outcome.exit_code not in (0, None):
        return False
    try:
        response = parse_response(outcome.stdout)
    except ProtocolError:
        return False
    if not response.ok:
        return False
    # Only an update is size-checked: a run that leaves an oversized state alone still succeeds.
    return not response.state_updates or state_size({**(state or {}), **response.state_updates}) <= limit


PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_a_legal_path(s: Settlement, job: Job, outcome: Outcome) -> None:
    """A legal path through the table, from running to where the row rests; and who moved it."""
    final = s.job.status
    assert s.transitions
    assert s.transitions[0].from_status is S.RUNNING
    for a, b in zip(s.transitions, s.transitions[1:], strict=False):
        assert a.to_status is b.from_status
    assert all((t.from_status, t.to_status) in PAIRS for t in s.transitions)
    assert s.transitions[-1].to_status is final
    assert all(t.job_id == job.id and t.at == NOW for t in s.transitions)
    assert final in FINAL
    assert len(s.transitions) == (
        2 if final is not S.SUCCEEDED and not isinstance(outcome, Interrupted) else 1
    )

    # Who moved it.
    if isinstance(outcome, Interrupted):
        assert [t.actor for t in s.transitions] == [Actor.RECOVERY]
    else:
        assert s.transitions[0].actor is Actor.DISPATCHER
        if final is S.QUEUED:
            assert s.transitions[1].actor is Actor.RETRY


def assert_attempts_and_times(
    s: Settlement, job: Job, outcome: Outcome, ctx: SettleContext, state: dict[str, Any] | None
) -> None:
    """Attempts, when the row gives up, and its timestamps."""
    final = s.job.status
    assert s.job.attempt == job.attempt + (1 if final is S.QUEUED else 0)
    assert (final is S.SUCCEEDED) == model_succeeds(outcome, state, ctx.state_limit)
    if final is not S.SUCCEEDED:
        gives_up = job.attempt >= job.max_attempts or not model_retryable(outcome)
        assert (final is S.DEAD) == gives_up

    # Timestamps.
    assert s.job.completed_at == (NOW if final in (S.SUCCEEDED, S.DEAD) else None)
    if final is S.QUEUED and not isinstance(outcome, Interrupted):
        assert s.job.next_retry_at is not None
        assert NOW < s.job.next_retry_at <= NOW + max_backoff(ctx.retry.backoff_base)
    else:
        assert s.job.next_retry_at is None


def assert_what_it_carries(s: Settlement, job: Job) -> None:
    """What a failure carries, and what only a success carries."""
    if s.job.status is S.SUCCEEDED:
        assert s.run.error is None
        assert s.job.last_error == job.last_error
        assert len(s.events) == len(s.response.events)  # type: ignore[union-attr]
    else:
        assert s.job.last_error is not None
        assert 0 < len(s.job.last_error) <= MAX_ERROR_CHARS
        assert s.run.error == s.job.last_error
        assert s.state is None
        assert s.events == ()
        assert s.children == ()
    for child in s.children:
        assert child.status is S.QUEUED
        assert child.parent_job_id == job.id
        assert child.payload == next(e.to_json() for e in s.events if e.event_id == child.source_event_id)
    assert len({c.id for c in s.children}) == len(s.children)


def assert_breaker_and_run(s: Settlement, job: Job, outcome: Outcome, breaker: br.Breaker | None) -> None:
    """The breaker (only runs of scheduler jobs count) and the run record."""
    if job.submitted_by is not SubmittedBy.SCHEDULER or not isinstance(outcome, SpawnOutcome):
        assert s.breaker is None
    if s.breaker is not None:
        assert (s.breaker.plugin, s.breaker.command) == (job.plugin, job.command)
        failures = 0 if s.job.status is S.SUCCEEDED else (breaker.failures if breaker else 0) + 1
        assert s.breaker.failures == failures

    # The run record.
    assert s.run.job_id == job.id
    assert s.run.attempt == job.attempt
    assert s.run.finished_at == NOW
    assert len(s.run.logs) <= MAX_LOG_LINES
    assert all(len(line.message) <= MAX_LOG_CHARS for line in s.run.logs)
    if isinstance(outcome, SpawnOutcome):
        assert s.run.stdout_head == outcome.stdout[:STDOUT_KEEP]


@PROPERTY
@given(job=running_jobs(), outcome=outcomes, ctx=contexts, state=states, breaker=breakers, timeout=timeouts)
def test_settle_always_ends_in_a_resting_state_by_a_legal_path(
    *,
    job: Job,
    outcome: Outcome,
    ctx: SettleContext,
    state: dict[str, Any] | None,
    breaker: br.Breaker | None,
    timeout: timedelta | None,
) -> None:
    s = settle(job, outcome, ctx=ctx, state=state, breaker=breaker, timeout=timeout)
    assert_a_legal_path(s, job, outcome)
    assert_attempts_and_times(s, job, outcome, ctx, state)
    assert_what_it_carries(s, job)
    assert_breaker_and_run(s, job, outcome, breaker)


@settings(PROPERTY, max_examples=200)
@given(job=running_jobs(), outcome=outcomes, ctx=contexts, state=states, breaker=breakers, timeout=timeouts)
def test_settle_is_deterministic(
    *,
    job: Job,
    outcome: Outcome,
    ctx: SettleContext,
    state: dict[str, Any] | None,
    breaker: br.Breaker | None,
    timeout: timedelta | None,
) -> None:
    first = settle(job, outcome, ctx=ctx, state=state, breaker=breaker, timeout=timeout)
    again = settle(job, outcome, ctx=ctx, state=state, breaker=breaker, timeout=timeout)
    assert first == again
    assert [c.id for c in first.children] == [c.id for c in again.children]


@settings(max_examples=200, deadline=None)
@given(
    job=running_jobs(),
    stdout=responses,
    exit_code=st.sampled_from([0, None]),
    ctx=contexts,
    timeout=timeouts,
)
def test_a_timeout_never_succeeds_whatever_stdout_holds(
    job: Job, stdout: bytes, exit_code: int | None, ctx: SettleContext, timeout: timedelta | None
) -> None:
    s = settle(
        job, SpawnOutcome(exit_code=exit_code, stdout=stdout, timed_out=True), ctx=ctx, timeout=timeout
    )
    assert s.transitions[0].to_status is S.TIMED_OUT
    assert s.job.status is not S.SUCCEEDED
    assert s.response is None
    assert s.state is None
    assert s.children == ()


# --------------------------------------------------------------------------- blank messages


@pytest.mark.parametrize(
    ("outcome", "error"),
    [
        (NotRun(reason=""), "the core did not run the plugin"),
        (NotRun(reason="  "), "the core did not run the plugin"),
        (SpawnOutcome(spawn_error=""), "could not start the plugin"),
        (err("   "), "the plugin reported an error without a message"),
        (err("", exit_code=78), "exit code 78 (EX_CONFIG: not retried)"),
        (err("  late  "), "late"),
    ],
)
def test_a_blank_message_never_becomes_a_blank_last_error(outcome: Outcome, error: str) -> None:
    s = settle(running(), outcome, ctx=CTX)
    assert s.job.last_error == error
    assert s.transitions[0].reason == error


def test_an_ok_response_saying_retry_false_is_honoured_when_its_state_is_rejected() -> None:
    s = settle(
        running(),
        ok(retry=False, state_updates={"b": "x" * 99}),
        ctx=attrs.evolve(CTX, state_limit=10),
        state={},
    )
    assert_dead(s, reason="not retryable")
    assert "over the 10-byte limit" in (s.job.last_error or "")
