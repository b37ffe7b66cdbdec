"""The activity vocabulary (``ductile.domain.activity``): which entry each change makes.

Every transition of the state machine table maps to exactly one kind, by its
source and target; breaker entries only on a real opening or closing; the
stream's filters.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ductile.domain import breaker as br
from ductile.domain.activity import Activity, Kind, SkipReason, matches, of_breaker, of_fire, of_transition
from ductile.domain.job import TRANSITIONS, Actor, Job, JobStatus, Transition, creation
from tests.support import builders

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
S = JobStatus

EXPECTED = {
    (S.QUEUED, S.RUNNING): Kind.JOB_STARTED,
    (S.QUEUED, S.DEAD): Kind.JOB_CANCELLED,
    (S.RUNNING, S.SUCCEEDED): Kind.JOB_SUCCEEDED,
    (S.RUNNING, S.FAILED): Kind.JOB_FAILED,
    (S.RUNNING, S.TIMED_OUT): Kind.JOB_FAILED,
    (S.RUNNING, S.QUEUED): Kind.JOB_RETRYING,
    (S.RUNNING, S.DEAD): Kind.JOB_DEAD,
    (S.FAILED, S.QUEUED): Kind.JOB_RETRYING,
    (S.FAILED, S.DEAD): Kind.JOB_DEAD,
    (S.TIMED_OUT, S.QUEUED): Kind.JOB_RETRYING,
    (S.TIMED_OUT, S.DEAD): Kind.JOB_DEAD,
}


def test_every_move_of_the_machine_has_its_kind() -> None:
    moves = {(src, dst) for (src, _), dst in TRANSITIONS.items()}
    assert moves == set(EXPECTED)


@pytest.mark.parametrize(("move", "kind"), sorted(EXPECTED.items()))
def test_a_transition_makes_its_entry(move: tuple[JobStatus, JobStatus], kind: Kind) -> None:
    job = builders.job("j", "p", "poll", created_at=T0, status=move[1], last_error="boom", attempt=2)
    t = Transition(
        job_id="j", from_status=move[0], to_status=move[1], reason="r", actor=Actor.DISPATCHER, at=T0
    )
    entry = of_transition(job, t, error="boom", duration=1.5)
    assert (entry.kind, entry.plugin, entry.command, entry.job_id, entry.at) == (kind, "p", "poll", "j", T0)
    if kind in (Kind.JOB_SUCCEEDED, Kind.JOB_FAILED):
        assert entry.data["duration_seconds"] == 1.5
    if kind in (Kind.JOB_FAILED, Kind.JOB_DEAD):
        assert entry.data["error"] == "boom"


def test_creation_is_job_queued_with_who_asked() -> None:
    job = builders.job("j", "p", "poll", created_at=T0)
    entry = of_transition(job, creation(job, actor=Actor.CLI))
    assert entry.kind is Kind.JOB_QUEUED
    assert entry.data["actor"] == "cli"


POLICY = br.BreakerPolicy(threshold=2, reset_after=timedelta(minutes=5))
events = st.lists(st.sampled_from(["fail", "ok", "admit", "reset"]), max_size=12)


@given(events)
def test_breaker_entries_mark_exactly_the_openings_and_closings(steps: list[str]) -> None:
    current = br.closed("p", "poll")
    now = T0
    for step in steps:
        now += timedelta(minutes=3)
        if step == "fail":
            after = br.record_failure(current, now=now, policy=POLICY)
        elif step == "ok":
            after = br.record_success(current)
        elif step == "admit":
            after = br.admit(current, now=now, policy=POLICY)[1]
        else:
            after = br.reset(current)
        entry = of_breaker(current, after, at=now, actor="x")
        opened = after.status is br.BreakerStatus.OPEN and current.status is not br.BreakerStatus.OPEN
        closed = after.status is br.BreakerStatus.CLOSED and current.status is not br.BreakerStatus.CLOSED
        assert (entry is not None and entry.kind is Kind.BREAKER_OPENED) == opened
        assert (entry is not None and entry.kind is Kind.BREAKER_CLOSED) == closed
        current = after


def test_a_fire_and_a_skip() -> None:
    fired = of_fire(key="p/default", plugin="p", command="poll", planned_at=T0, nominal_at=T0,
                    at=T0 + timedelta(seconds=2), jobs=("j",), skipped=None)  # fmt: skip
    assert (fired.kind, fired.data["lag_seconds"], fired.data["jobs"]) == (Kind.SCHEDULE_FIRED, 2.0, ["j"])
    skipped = of_fire(key="p", plugin="p", command="poll", planned_at=T0, nominal_at=T0, at=T0, jobs=(),
                      skipped=SkipReason.BREAKER)  # fmt: skip
    assert (skipped.kind, skipped.data["reason"]) == (Kind.SCHEDULE_SKIPPED, "breaker")


def test_filters() -> None:
    a = Activity(kind=Kind.JOB_DEAD, at=T0, plugin="p")
    assert matches(a)
    assert matches(a, plugin="p")
    assert not matches(a, plugin="q")
    assert matches(a, kinds=frozenset({"job.dead"}))
    assert matches(a, kinds=frozenset({"job.*"}))
    assert not matches(a, kinds=frozenset({"breaker.*", "job.queued"}))


def test_an_activity_holds_a_json_object_and_an_aware_time() -> None:
    with pytest.raises(ValueError, match="aware"):
        Activity(kind=Kind.JOB_DEAD, at=datetime(2026, 1, 1))
    with pytest.raises(TypeError):
        Activity(kind=Kind.JOB_DEAD, at=T0, data={1: "x"})  # type: ignore[dict-item]
    assert attrs.evolve(Activity(kind="job.dead", at=T0), plugin="p").kind is Kind.JOB_DEAD
    assert Job  # the builders make Jobs
