"""classify(): a finished process's outcome into a Verdict, before any stored row is read.

The verdict is all the store's settle unit gets of a run, so it must carry
what the run record keeps (and no more: never the whole stdout). The verdicts
themselves (which outcome fails, retries, times out) are pinned end to end in
``test_settle.py``, which classifies every outcome the way the engine does.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from ductile.domain.classify import MAX_ERROR_CHARS, NO_RUN, RunFacts, Verdict, classify, clip
from ductile.domain.job import JobEvent
from ductile.domain.outcome import STDOUT_CAP, STDOUT_KEEP, SpawnOutcome, StartFailure


def test_the_facts_are_the_outcomes_as_the_spawner_reported_them() -> None:
    outcome = SpawnOutcome(exit_code=-9, stdout=b"partial", stderr_tail=b"oops\n", duration=2.5)
    verdict = classify(outcome)
    assert verdict.facts == RunFacts(
        duration=2.5,
        exit_code=-9,
        signal=None,
        timed_out=False,
        stderr_tail=b"oops\n",
        stdout_head=b"partial",
    )
    # The raw exit code is kept as a fact; its meaning (signal 9) is the verdict's.
    assert verdict.event is JobEvent.FAIL
    assert verdict.error == "killed by SIGKILL; stderr ends: 'oops'"


def test_a_verdict_keeps_only_the_head_of_a_large_stdout() -> None:
    stdout = b"x" * (STDOUT_CAP - 1)
    verdict = classify(SpawnOutcome(exit_code=0, stdout=stdout))
    assert verdict.facts.stdout_head == stdout[:STDOUT_KEEP]
    assert len(verdict.facts.stdout_head) == STDOUT_KEEP
    assert "bytes>" in repr(verdict.facts)  # a repr names sizes, never 64 KiB of output


def test_a_success_carries_its_parsed_response() -> None:
    verdict = classify(SpawnOutcome(exit_code=0, stdout=b'{"status": "ok", "state_updates": {"n": 1}}'))
    assert verdict.succeeded
    assert verdict.error is None
    assert verdict.response is not None
    assert verdict.response.state_updates == {"n": 1}


def test_a_timeout_names_the_configured_timeout() -> None:
    verdict = classify(SpawnOutcome(timed_out=True, duration=61.0), timedelta(minutes=1))
    assert (verdict.event, verdict.error, verdict.retryable) == (
        JobEvent.TIME_OUT,
        "timed out after 1m",
        True,
    )
    assert verdict.facts.timed_out


def test_a_verdict_built_by_hand_has_no_run_facts() -> None:
    assert Verdict(JobEvent.FAIL, "refused", False).facts is NO_RUN
    assert RunFacts(stdout_head=b"", stderr_tail=b"") == NO_RUN


def test_clip_keeps_short_texts_and_marks_a_cut() -> None:
    assert clip("short") == "short"
    assert clip("z" * (MAX_ERROR_CHARS + 1)) == "z" * (MAX_ERROR_CHARS - 1) + "…"


@pytest.mark.parametrize("kind", list(StartFailure))
def test_a_start_failure_is_not_retried_and_keeps_its_cause(kind: StartFailure) -> None:
    outcome = SpawnOutcome(spawn_error="run: the #! line ends with a carriage return", start_failure=kind)
    verdict = classify(outcome)
    assert (verdict.event, verdict.retryable) == (JobEvent.FAIL, False)
    assert verdict.error == (
        "could not start the plugin: run: the #! line ends with a carriage return (not retried)"
    )


def test_an_exec_failure_of_the_machine_is_retried() -> None:
    verdict = classify(SpawnOutcome(spawn_error="run: Too many open files (EMFILE)"))
    assert (verdict.event, verdict.retryable) == (JobEvent.FAIL, True)


def test_a_timeout_wins_over_a_start_failure() -> None:
    outcome = SpawnOutcome(timed_out=True, spawn_error="x", start_failure=StartFailure.IMPORT_ERROR)
    assert classify(outcome).event is JobEvent.TIME_OUT
