"""The job state machine (D2): every cell of the table, bookkeeping, and a walk property."""

from __future__ import annotations

import copy
import itertools
import runpy
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ductile.domain.errors import DuctileError, IllegalTransitionError
from ductile.domain.job import (
    TERMINAL,
    TRANSIENT,
    TRANSITIONS,
    Actor,
    Claim,
    Job,
    JobEvent,
    JobStatus,
    SubmittedBy,
    apply,
    can,
    creation,
    render_diagram,
)

S, E = JobStatus, JobEvent

#: The machine as SPEC D2 draws it, written out independently of the code's table.
EXPECTED: dict[tuple[JobStatus, JobEvent], JobStatus] = {
    (S.QUEUED, E.CLAIM): S.RUNNING,
    (S.QUEUED, E.CANCEL): S.DEAD,
    (S.RUNNING, E.SUCCEED): S.SUCCEEDED,
    (S.RUNNING, E.FAIL): S.FAILED,
    (S.RUNNING, E.TIME_OUT): S.TIMED_OUT,
    (S.RUNNING, E.RETRY): S.QUEUED,
    (S.RUNNING, E.BURY): S.DEAD,
    (S.RUNNING, E.RELEASE): S.QUEUED,  # not started for lack of resources: not an attempt
    (S.FAILED, E.RETRY): S.QUEUED,
    (S.FAILED, E.BURY): S.DEAD,
    (S.TIMED_OUT, E.RETRY): S.QUEUED,
    (S.TIMED_OUT, E.BURY): S.DEAD,
}

ALL_CELLS = list(itertools.product(JobStatus, JobEvent))
LEGAL = [cell for cell in ALL_CELLS if cell in EXPECTED]
ILLEGAL = [cell for cell in ALL_CELLS if cell not in EXPECTED]

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CREATED = T0 - timedelta(hours=1)
EARLIER_START = T0 - timedelta(minutes=10)
OLD_RETRY = T0 - timedelta(minutes=20)
NEW_RETRY = T0 + timedelta(minutes=2)

#: Fields no transition may touch.
IDENTITY_FIELDS = (
    "id",
    "plugin",
    "command",
    "payload",
    "max_attempts",
    "submitted_by",
    "dedupe_key",
    "created_at",
    "parent_job_id",
    "source_event_id",
    "schedule_id",
    "route_depth",
    "retry_of",
)


#: Fields a transition moves (see test_legal_cell_moves_to_target_with_bookkeeping).
BOOKKEEPING_FIELDS = ("status", "attempt", "started_at", "completed_at", "next_retry_at", "last_error")
#: The claim's facts (the fence and the lane): only a claim moves them (ADR 0032).
CLAIM_FIELDS = ("claim_token", "slot", "node", "deadline_at")


def test_every_job_field_is_identity_or_bookkeeping() -> None:
    # A new field must be placed in one set or the other, and then the cell tests check that
    # apply() carries it (identity) or moves it (bookkeeping) as they say.
    names = [f.name for f in attrs.fields(Job)]
    assert sorted(names) == sorted(IDENTITY_FIELDS + BOOKKEEPING_FIELDS + CLAIM_FIELDS)


def job_in(status: JobStatus, **overrides: object) -> Job:
    """A job resting in ``status`` with every bookkeeping field filled, so changes show."""
    fields: dict[str, object] = {
        "id": "job-1",
        "plugin": "withings",
        "command": "poll",
        "payload": {"nested": {"k": [1, 2]}},
        "status": status,
        "attempt": 2,
        "max_attempts": 4,
        "submitted_by": SubmittedBy.SCHEDULER,
        "dedupe_key": "key-1",
        "created_at": CREATED,
        "started_at": EARLIER_START,
        "completed_at": None,
        "next_retry_at": OLD_RETRY,
        "last_error": "old error",
        "parent_job_id": "parent-1",
        "source_event_id": "event-1",
        "claim_token": 3,
        "slot": 1,
        "node": "host-a/1",
        "deadline_at": T0 - timedelta(minutes=1),
    }
    fields.update(overrides)
    return Job(**fields)  # type: ignore[arg-type]


def test_table_is_exactly_the_spec_machine() -> None:
    assert TRANSITIONS == EXPECTED
    assert len(ALL_CELLS) == 48  # 6 states x 8 events
    assert len(LEGAL) == 12  # the release (issue 19, item 11) is the twelfth


def test_terminal_and_transient_sets() -> None:
    assert frozenset({S.SUCCEEDED, S.DEAD}) == TERMINAL
    assert frozenset({S.FAILED, S.TIMED_OUT}) == TRANSIENT


@pytest.mark.parametrize(("status", "event"), ALL_CELLS, ids=str)
def test_can_agrees_with_the_table(status: JobStatus, event: JobEvent) -> None:
    assert can(status, event) is ((status, event) in EXPECTED)


@pytest.mark.parametrize(("status", "event"), LEGAL, ids=str)
def test_legal_cell_moves_to_target_with_bookkeeping(status: JobStatus, event: JobEvent) -> None:
    before = job_in(status)
    target = EXPECTED[(status, event)]

    after, record = apply(
        before,
        event,
        at=T0,
        actor=Actor.DISPATCHER,
        reason="because",
        next_retry_at=NEW_RETRY,
        last_error="new error",
    )

    assert after.status is target
    for name in IDENTITY_FIELDS:
        assert getattr(after, name) == getattr(before, name), f"{name} changed on {status}->{event}"
    assert after.last_error == "new error"

    if target is S.RUNNING:
        assert after.started_at == T0
        assert after.completed_at is None
        assert after.next_retry_at is None
        assert after.attempt == before.attempt
        # a claim raises the token and records its own facts (none were given here)
        assert after.claim_token == before.claim_token + 1
        assert (after.slot, after.node, after.deadline_at) == (None, None, None)
    else:  # every other move keeps the last claim's facts, the fence included
        for name in CLAIM_FIELDS:
            assert getattr(after, name) == getattr(before, name), f"{name} changed on {status}->{event}"
    if target is S.RUNNING:
        pass
    elif target in TERMINAL:
        assert after.completed_at == T0
        assert after.next_retry_at is None
        assert after.started_at == before.started_at
        assert after.attempt == before.attempt
    elif target is S.QUEUED:
        assert after.attempt == before.attempt + (0 if event is E.RELEASE else 1)
        assert after.next_retry_at == NEW_RETRY
        assert after.started_at is None
        assert after.completed_at is None
    else:  # failed / timed_out: only the status moves
        assert target in TRANSIENT
        assert after.started_at == before.started_at
        assert after.completed_at == before.completed_at
        assert after.next_retry_at == before.next_retry_at
        assert after.attempt == before.attempt

    assert record.job_id == before.id
    assert record.from_status is status
    assert record.to_status is target
    assert record.reason == "because"
    assert record.actor is Actor.DISPATCHER
    assert record.at == T0


@pytest.mark.parametrize(("status", "event"), LEGAL, ids=str)
def test_last_error_kept_when_not_given(status: JobStatus, event: JobEvent) -> None:
    after, _ = apply(job_in(status), event, at=T0, actor=Actor.RETRY, reason="r")
    assert after.last_error == "old error"


def test_retry_without_next_retry_at_clears_it() -> None:
    after, _ = apply(job_in(S.FAILED), E.RETRY, at=T0, actor=Actor.RETRY, reason="r")
    assert after.next_retry_at is None
    assert after.attempt == 3


def test_a_claim_records_its_slot_node_and_deadline() -> None:
    deadline = T0 + timedelta(minutes=5)
    after, _ = apply(
        job_in(S.QUEUED),
        E.CLAIM,
        at=T0,
        actor=Actor.DISPATCHER,
        reason="claimed",
        claim=Claim(slot=2, node="host-b/7", deadline_at=deadline),
    )
    assert (after.claim_token, after.slot, after.node, after.deadline_at) == (4, 2, "host-b/7", deadline)


def test_legal_move_leaves_the_input_value_alone() -> None:
    before = job_in(S.RUNNING)
    snapshot = copy.deepcopy(before)
    apply(before, E.SUCCEED, at=T0, actor=Actor.DISPATCHER, reason="ok")
    assert before == snapshot


@pytest.mark.parametrize(("status", "event"), ILLEGAL, ids=str)
def test_illegal_cell_raises_and_changes_nothing(status: JobStatus, event: JobEvent) -> None:
    before = job_in(status, completed_at=T0 if status in TERMINAL else None)
    snapshot = copy.deepcopy(before)

    with pytest.raises(IllegalTransitionError) as info:
        apply(
            before,
            event,
            at=T0 + timedelta(hours=1),
            actor=Actor.OPERATOR,
            reason="nope",
            next_retry_at=NEW_RETRY,
            last_error="should not land",
        )

    err = info.value
    assert isinstance(err, DuctileError)
    assert err.job_id == "job-1"
    assert err.status == status.value
    assert err.event == event.value
    assert "job-1" in str(err)
    assert status.value in str(err)
    assert event.value in str(err)
    assert before == snapshot


@pytest.mark.parametrize("status", sorted(TERMINAL), ids=str)
def test_terminal_states_are_absorbing(status: JobStatus) -> None:
    job = job_in(status, completed_at=T0)
    for event in JobEvent:
        assert not can(status, event)
        with pytest.raises(IllegalTransitionError):
            apply(job, event, at=T0, actor=Actor.OPERATOR, reason="x")


def test_job_value_is_frozen() -> None:
    job = job_in(S.QUEUED)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        job.status = S.RUNNING  # type: ignore[misc]


def test_job_refuses_naive_datetimes_and_bad_attempts() -> None:
    with pytest.raises(ValueError, match="created_at must be an aware datetime"):
        Job(id="j", plugin="p", command="poll", created_at=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="attempt"):
        Job(id="j", plugin="p", command="poll", created_at=T0, attempt=0)
    with pytest.raises(ValueError, match="max_attempts"):
        Job(id="j", plugin="p", command="poll", created_at=T0, max_attempts=0)


def test_apply_refuses_a_naive_instant() -> None:
    with pytest.raises(ValueError, match="aware"):
        apply(job_in(S.QUEUED), E.CLAIM, at=datetime(2026, 1, 1), actor=Actor.DISPATCHER, reason="r")


def test_defaults_of_a_fresh_job() -> None:
    job = Job(id="j", plugin="p", command="poll", created_at=T0)
    assert job.status is S.QUEUED
    assert job.attempt == 1
    assert job.max_attempts == 4
    assert job.payload == {}
    assert not job.terminal
    assert job.attempts_left


def test_terminal_and_attempts_left_properties() -> None:
    assert job_in(S.SUCCEEDED).terminal
    assert job_in(S.DEAD).terminal
    assert not job_in(S.FAILED).terminal
    assert job_in(S.QUEUED, attempt=3, max_attempts=4).attempts_left
    assert not job_in(S.QUEUED, attempt=4, max_attempts=4).attempts_left


def test_creation_is_the_first_history_line() -> None:
    job = job_in(S.QUEUED)
    record = creation(job, actor=Actor.WEBHOOK)
    assert record.job_id == job.id
    assert record.from_status is None
    assert record.to_status is S.QUEUED
    assert record.actor is Actor.WEBHOOK
    assert record.reason == "created"
    assert record.at == job.created_at
    assert creation(job, actor=Actor.CLI, reason="manual run").reason == "manual run"


def test_actor_covers_every_submitter() -> None:
    assert {s.value for s in SubmittedBy} <= {a.value for a in Actor}


@settings(max_examples=300, deadline=None)
@given(events=st.lists(st.sampled_from(list(JobEvent)), max_size=30))
def test_any_event_sequence_follows_the_table_walk(events: list[JobEvent]) -> None:
    job = Job(id="walk", plugin="p", command="poll", created_at=T0, max_attempts=3)
    predicted = S.QUEUED
    retries = 0
    at = T0
    for event in events:
        at += timedelta(seconds=1)
        target = EXPECTED.get((predicted, event))
        if target is None:
            snapshot = copy.deepcopy(job)
            with pytest.raises(IllegalTransitionError):
                apply(job, event, at=at, actor=Actor.DISPATCHER, reason="walk")
            assert job == snapshot
            continue
        new, record = apply(job, event, at=at, actor=Actor.DISPATCHER, reason="walk")
        assert record.from_status is predicted
        assert new.attempt >= job.attempt, "attempt decreased"
        if target is S.QUEUED and event is not JobEvent.RELEASE:
            retries += 1
        job, predicted = new, target
        assert job.status is predicted
        assert job.attempt == 1 + retries
        if job.terminal:
            assert job.completed_at == at
            assert job.next_retry_at is None
    assert job.status is predicted


# --- the generated diagram ------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "job-states.md"


def test_state_diagram_doc_is_current() -> None:
    assert DOC.exists(), f"{DOC} is missing; run: .venv/bin/python -m ductile.domain.job > docs/job-states.md"
    assert DOC.read_text(encoding="utf-8") == render_diagram(), (
        "docs/job-states.md is stale (the TRANSITIONS table changed); regenerate it with: "
        ".venv/bin/python -m ductile.domain.job > docs/job-states.md"
    )


def test_diagram_shows_every_transition_and_terminal() -> None:
    text = render_diagram()
    for (src, event), dst in EXPECTED.items():
        assert f"    {src.value} --> {dst.value}: {event.value}" in text
        assert f"| {src.value} | {event.value} | {dst.value} |" in text
    for status in TERMINAL:
        assert f"    {status.value} --> [*]" in text
    assert "    [*] --> queued" in text


def test_module_entry_point_prints_the_diagram(capsys: pytest.CaptureFixture[str]) -> None:
    with warnings.catch_warnings():
        # runpy notes that the module is already imported; re-running it is the point here.
        warnings.simplefilter("ignore", RuntimeWarning)
        runpy.run_module("ductile.domain.job", run_name="__main__")
    assert capsys.readouterr().out == render_diagram()
