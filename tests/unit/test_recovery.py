"""Crash recovery (D6): an orphan goes back to the queue, or dies, through settle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ductile.domain import breaker as br
from ductile.domain.errors import IllegalTransitionError
from ductile.domain.job import TRANSITIONS, Actor, Job, JobStatus, SubmittedBy, Transition
from ductile.domain.outcome import Interrupted
from ductile.domain.recovery import is_orphan, recover
from ductile.domain.settle import MAX_ERROR_CHARS, SettleContext, settle

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
STARTED = NOW - timedelta(minutes=7)
DEFAULT_ERROR = "interrupted: the daemon stopped while the job was running"
S = JobStatus


def orphan(**changes: Any) -> Job:
    base: dict[str, Any] = {
        "id": "job-7",
        "plugin": "withings",
        "command": "poll",
        "status": S.RUNNING,
        "attempt": 1,
        "max_attempts": 4,
        "submitted_by": SubmittedBy.SCHEDULER,
        "created_at": NOW - timedelta(hours=1),
        "started_at": STARTED,
    }
    base.update(changes)
    return Job(**base)


@pytest.mark.parametrize("status", list(JobStatus))
def test_only_running_jobs_are_orphans(status: JobStatus) -> None:
    assert is_orphan(orphan(status=status)) is (status is S.RUNNING)


def test_an_orphan_with_attempts_left_is_requeued_at_once() -> None:
    job = orphan(attempt=2)
    s = recover(job, now=NOW)
    assert s.transitions == (
        Transition(
            job_id="job-7",
            from_status=S.RUNNING,
            to_status=S.QUEUED,
            reason=f"{DEFAULT_ERROR}; attempt 3 of 4",
            actor=Actor.RECOVERY,
            at=NOW,
        ),
    )
    assert s.job.status is S.QUEUED
    assert s.job.attempt == 3
    assert s.job.next_retry_at is None  # runs again at once, no backoff
    assert s.job.started_at is None
    assert s.job.completed_at is None
    assert s.job.last_error == DEFAULT_ERROR
    assert s.retrying
    # Breaker, state and children are untouched.
    assert s.breaker is None
    assert s.state is None
    assert s.children == ()
    assert s.events == ()
    assert s.response is None
    assert s.protocol_error is None
    # The lost run is on record.
    assert s.run.job_id == "job-7"
    assert s.run.attempt == 2
    assert s.run.started_at == STARTED
    assert s.run.finished_at == NOW
    assert s.run.duration == 420.0
    assert s.run.exit_code is None
    assert s.run.signal is None
    assert s.run.timed_out is False
    assert s.run.error == DEFAULT_ERROR
    assert s.run.stderr_tail == b""
    assert s.run.stdout_head == b""
    assert s.run.logs == ()


@pytest.mark.parametrize(("attempt", "max_attempts"), [(4, 4), (1, 1)])
def test_an_orphan_out_of_attempts_dies_like_any_terminal_failure(attempt: int, max_attempts: int) -> None:
    job = orphan(attempt=attempt, max_attempts=max_attempts, last_error="earlier failure")
    s = recover(job, now=NOW, reason="the machine rebooted")
    assert s.transitions == (
        Transition(
            job_id="job-7",
            from_status=S.RUNNING,
            to_status=S.DEAD,
            reason=(f"interrupted: the machine rebooted; attempts exhausted ({attempt}/{max_attempts})"),
            actor=Actor.RECOVERY,
            at=NOW,
        ),
    )
    assert s.job.status is S.DEAD
    assert s.job.attempt == attempt
    assert s.job.completed_at == NOW
    assert s.job.next_retry_at is None
    assert s.job.last_error == "interrupted: the machine rebooted"
    assert s.breaker is None
    assert s.state is None
    assert s.children == ()


def test_recover_is_settle_with_an_interrupted_outcome() -> None:
    job = orphan()
    assert recover(job, now=NOW) == settle(job, Interrupted(), ctx=SettleContext(now=NOW))
    assert recover(job, now=NOW, reason="oom") == settle(
        job, Interrupted(reason="oom"), ctx=SettleContext(now=NOW)
    )


def test_recovery_ignores_breaker_routes_and_draw() -> None:
    job = orphan()
    ctx = SettleContext(now=NOW, draw=0.9, breaker=br.BreakerPolicy(threshold=1))
    s = settle(
        job, Interrupted(), ctx=ctx, state={"a": 1}, breaker=br.Breaker(plugin="withings", command="poll")
    )
    assert s == recover(job, now=NOW)
    assert s.breaker is None


@pytest.mark.parametrize("by", list(SubmittedBy))
def test_recovery_is_the_same_whoever_submitted_the_job(by: SubmittedBy) -> None:
    s = recover(orphan(submitted_by=by), now=NOW)
    assert s.job.status is S.QUEUED
    assert s.breaker is None


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_a_blank_reason_gets_the_default(reason: str | None) -> None:
    assert recover(orphan(), now=NOW, reason=reason).job.last_error == DEFAULT_ERROR
    s = settle(orphan(), Interrupted(reason=reason or ""), ctx=SettleContext(now=NOW))
    assert s.job.last_error == DEFAULT_ERROR


def test_a_huge_reason_is_capped() -> None:
    s = recover(orphan(), now=NOW, reason="x" * 10_000)
    assert s.job.last_error is not None
    assert len(s.job.last_error) == MAX_ERROR_CHARS
    assert s.job.last_error.endswith("…")


def test_a_clock_that_went_backwards_gives_no_negative_duration() -> None:
    s = recover(orphan(started_at=NOW + timedelta(minutes=5)), now=NOW)
    assert s.run.duration == 0.0


@pytest.mark.parametrize("status", [s for s in JobStatus if s is not S.RUNNING])
def test_recovering_a_job_that_is_not_running_raises(status: JobStatus) -> None:
    with pytest.raises(IllegalTransitionError, match=f"'settle' is not allowed from '{status.value}'"):
        recover(orphan(status=status), now=NOW)


def test_a_recovered_job_is_no_longer_an_orphan() -> None:
    requeued = recover(orphan(), now=NOW).job
    assert not is_orphan(requeued)
    with pytest.raises(IllegalTransitionError):
        recover(requeued, now=NOW)


PAIRS = {(src, dst) for (src, _), dst in TRANSITIONS.items()}


@st.composite
def orphans(draw: st.DrawFn) -> Job:
    max_attempts = draw(st.integers(1, 8))
    return orphan(
        attempt=draw(st.integers(1, max_attempts)),
        max_attempts=max_attempts,
        submitted_by=draw(st.sampled_from(list(SubmittedBy))),
        started_at=draw(st.none() | st.just(STARTED)),
        last_error=draw(st.none() | st.text(max_size=5)),
    )


@settings(max_examples=200, deadline=None)
@given(job=orphans(), reason=st.none() | st.text(max_size=30))
def test_recovery_requeues_iff_attempts_are_left(job: Job, reason: str | None) -> None:
    s = recover(job, now=NOW, reason=reason)
    (move,) = s.transitions
    assert move.from_status is S.RUNNING
    assert (move.from_status, move.to_status) in PAIRS
    assert move.actor is Actor.RECOVERY
    assert move.to_status is s.job.status
    if job.attempt < job.max_attempts:
        assert s.job.status is S.QUEUED
        assert s.job.attempt == job.attempt + 1
        assert s.job.completed_at is None
        assert f"attempt {job.attempt + 1} of {job.max_attempts}" in move.reason
    else:
        assert s.job.status is S.DEAD
        assert s.job.attempt == job.attempt
        assert s.job.completed_at == NOW
        assert f"attempts exhausted ({job.attempt}/{job.max_attempts})" in move.reason
    assert s.job.next_retry_at is None
    assert s.job.last_error is not None
    assert s.job.last_error.startswith("interrupted: ")
    assert s.run.error == s.job.last_error
    assert s.breaker is None
    assert s.state is None
    assert s.children == ()
    assert recover(job, now=NOW, reason=reason) == s  # deterministic
