"""The monitor checks each job's history as it grows (I2, I3): only what the log gained,
when the log it reads begins with the entries it already checked; all of it otherwise.

The incremental answer must be the whole log's answer, for every log (a property), and a
store that rewrites a job's past, which only a check of the whole log can see, must still
be caught inside a simulation.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ductile.app.sim import InvariantError, quiet_scenario
from ductile.app.sim.invariants import check_attempts, check_history, count_moves, same_prefix
from ductile.domain.job import TRANSITIONS, Actor, Job, JobStatus, Transition
from ductile.fakes import InMemoryStore
from ductile.fakes.memory_tx import MemoryTx

T0 = datetime(2026, 3, 27, tzinfo=UTC)
STATUSES = list(JobStatus)


def _job(log: list[Transition], attempt: int) -> Job:
    status = log[-1].to_status
    done = T0 + timedelta(hours=1) if status in (JobStatus.SUCCEEDED, JobStatus.DEAD) else None
    return Job(
        id="j", plugin="p", command="poll", status=status, attempt=attempt, max_attempts=3,
        created_at=T0, completed_at=done,
    )  # fmt: skip


@st.composite
def growing_logs(draw: st.DrawFn) -> list[Transition]:
    """A job's log: mostly moves of the machine, sometimes a wrong one (any status, any actor,
    a step back in time), so that both clean and dirty logs come up."""
    log = [Transition(job_id="j", from_status=None, to_status=JobStatus.QUEUED, reason="created",
                      actor=Actor.API, at=T0)]  # fmt: skip
    for _ in range(draw(st.integers(0, 9))):
        last = log[-1]
        moves = [dst for (src, _), dst in TRANSITIONS.items() if src is last.to_status]
        wrong = draw(st.integers(0, 9)) == 0 or not moves
        dst = draw(st.sampled_from(STATUSES)) if wrong else draw(st.sampled_from(moves))
        src = draw(st.sampled_from(STATUSES)) if wrong and draw(st.booleans()) else last.to_status
        actor = draw(st.sampled_from([Actor.DISPATCHER, Actor.RETRY, Actor.RECOVERY]))
        step = timedelta(seconds=draw(st.integers(-5 if wrong else 0, 60)))
        log.append(Transition(job_id="j", from_status=src, to_status=dst, reason="r", actor=actor,
                              at=last.at + step))  # fmt: skip
    return log


@settings(max_examples=300, deadline=None)
@given(growing_logs(), st.data())
def test_checking_what_the_log_gained_answers_as_the_whole_log_does(
    log: list[Transition], data: st.DataObject
) -> None:
    """Read after read, as the monitor does: at each length, the checks of the log's new
    entries on top of the clean prefix give exactly the whole log's problems."""
    known, moves = 0, (0, 0)
    for length in range(1, len(log) + 1):
        now = log[:length]
        job = _job(now, attempt=data.draw(st.integers(1, 3)))
        assert same_prefix(now, log, known)
        moves = count_moves(now, start=known, tally=moves if known else (0, 0))
        assert moves == count_moves(now)
        assert check_history(job, now, known=known) == check_history(job, now)
        assert check_attempts(job, now, moves=moves) == check_attempts(job, now)
        if check_history(job, now) or check_attempts(job, now):
            return  # the monitor stops the run at the first problem
        known = length


def test_a_log_that_changed_behind_the_checked_entries_is_not_their_extension() -> None:
    first = Transition(job_id="j", from_status=None, to_status=JobStatus.QUEUED, reason="created",
                       actor=Actor.API, at=T0)  # fmt: skip
    claim = Transition(job_id="j", from_status=JobStatus.QUEUED, to_status=JobStatus.RUNNING,
                       reason="claimed", actor=Actor.DISPATCHER, at=T0)  # fmt: skip
    assert same_prefix([first, claim], [first], 1)
    assert same_prefix([attrs.evolve(first), claim], [first], 1)  # equal, not the same object
    assert not same_prefix([attrs.evolve(first, at=T0 - timedelta(1)), claim], [first], 1)
    assert not same_prefix([], [first], 1)


class RewritesHistory(MemoryTx):
    """Moves the claim of every job's first run back before the job existed, once the job has
    run: a past the monitor checked when it was written, changed behind it."""

    def add_transition(self, transition: Transition) -> None:
        super().add_transition(transition)
        history = self.transitions[transition.job_id]
        if len(history) == 3:
            history[1] = attrs.evolve(history[1], at=history[0].at - timedelta(hours=1))


def test_a_rewritten_past_is_caught_though_only_new_entries_are_checked() -> None:
    scenario = quiet_scenario()
    sim = scenario.simulation(3, days=1.0, memory_store=InMemoryStore(RewritesHistory()))
    with pytest.raises(InvariantError) as caught:
        asyncio.run(sim.run(scenario.until(1.0)))
    assert caught.value.code.startswith("I2"), str(caught.value)
    assert "goes back in time" in caught.value.detail
