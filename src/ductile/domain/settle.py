"""Settle: everything that follows from one run of a job, decided at once.

The engine classifies the run first (:func:`~ductile.domain.classify.classify`
needs no stored row); the store's settle unit then calls :func:`settle` with
that :data:`~ductile.domain.classify.RunEnd`, the job as it is *now* in the
store, the plugin's current state and breaker, and commits the returned
:class:`Settlement` in one transaction (D9). Only the decisions that depend on
those rows are made here: the state merge, the breaker, retry or bury, and the
fan-out of events. Crash recovery (D6) goes through the same function with an
:class:`~ductile.domain.outcome.Interrupted` end.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from ductile.domain import breaker as br
from ductile.domain.classify import MAX_ERROR_CHARS, RunEnd, Verdict, clip, plain
from ductile.domain.draw import draw_validator
from ductile.domain.errors import IllegalTransitionError
from ductile.domain.facts import Fact
from ductile.domain.job import Actor, Job, JobEvent, JobStatus, SubmittedBy, Transition, apply
from ductile.domain.lifecycle import Alerts
from ductile.domain.outcome import Interrupted, NotRun, NotStarted
from ductile.domain.plugin import FactOutput
from ductile.domain.protocol import MAX_RESULT_CHARS, LogLine, Response, iso_utc
from ductile.domain.retry import RetryPolicy, decide_retry
from ductile.domain.routing import Envelope, FanOut, Route, Target, event_id_for, fan_out, wrap
from ductile.domain.state import MAX_STATE_BYTES, merge_state, serialize_state

__all__ = [
    "MAX_ERROR_CHARS",
    "MAX_LOG_CHARS",
    "MAX_LOG_LINES",
    "RunRecord",
    "SettleContext",
    "Settlement",
    "reads_breaker",
    "reads_state",
    "settle",
]

#: Most log lines kept per run, the "more dropped" marker included.
MAX_LOG_LINES = 200
#: Longest log message kept.
MAX_LOG_CHARS = 2000


@attrs.frozen(kw_only=True)
class SettleContext:
    """Policy and inputs from outside the job row."""

    now: datetime
    #: The retry jitter draw, in [0, 1).
    draw: float = attrs.field(default=0.0, validator=draw_validator)
    retry: RetryPolicy = RetryPolicy()
    breaker: br.BreakerPolicy = br.BreakerPolicy()
    routes: tuple[Route, ...] = ()
    targets: Mapping[str, Target] = attrs.field(factory=dict)
    state_limit: int = MAX_STATE_BYTES
    #: ``service.max_route_depth``: no routed child is made deeper than this (None: no limit).
    max_route_depth: int | None = None
    #: The plugin's ``fact_outputs`` rule for this job's command, if it has one.
    fact: FactOutput | None = None
    #: Where lifecycle events go (``job.dead``...); None: nowhere.
    alerts: Alerts | None = None


@attrs.frozen(kw_only=True)
class RunRecord:
    """One attempt, as kept with the job for ``ductile job <id>``."""

    job_id: str
    attempt: int
    started_at: datetime | None
    finished_at: datetime
    duration: float
    exit_code: int | None
    signal: int | None
    timed_out: bool
    error: str | None
    stderr_tail: bytes
    stdout_head: bytes
    logs: tuple[LogLine, ...]
    #: The response's ``result``, clipped to :data:`~ductile.domain.protocol.MAX_RESULT_CHARS`.
    result: str | None = None


@attrs.frozen(kw_only=True)
class Settlement:
    job: Job
    transitions: tuple[Transition, ...]
    run: RunRecord
    response: Response | None = None
    #: The plugin's whole new state, when it changed.
    state: dict[str, Any] | None = None
    #: The pair's new breaker, when it changed.
    breaker: br.Breaker | None = None
    events: tuple[Envelope, ...] = ()
    children: tuple[Job, ...] = ()
    unroutable: tuple[tuple[str, str], ...] = ()
    unmatched: tuple[str, ...] = ()
    #: (event type, target) pairs not routed: the chain is at ``max_route_depth`` already.
    too_deep: tuple[tuple[str, str], ...] = ()
    #: The fact a ``fact_outputs`` rule records (the state is then that fact's body).
    fact: Fact | None = None
    #: The :class:`ProtocolError` kind (``empty``, ``not_json``...) when the
    #: process exited by itself but its stdout was not one valid response.
    protocol_error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.job.status is JobStatus.SUCCEEDED

    @property
    def retrying(self) -> bool:
        return self.job.status is JobStatus.QUEUED


#: What :func:`fan_out` returns for no envelopes (a frozen value: one serves every run).
_NO_FAN_OUT = FanOut(children=())


def _cap_logs(logs: tuple[LogLine, ...]) -> tuple[LogLine, ...]:
    """At most MAX_LOG_LINES lines in all; when cut, the last one says how many were dropped."""
    over = len(logs) > MAX_LOG_LINES
    kept = logs[: MAX_LOG_LINES - 1] if over else logs
    capped = tuple(attrs.evolve(line, message=clip(line.message, MAX_LOG_CHARS)) for line in kept)
    if over:
        capped += (LogLine(level="warn", message=f"{len(logs) - len(kept)} more log lines dropped"),)
    return capped


def settle(
    job: Job,
    end: RunEnd,
    *,
    ctx: SettleContext,
    state: dict[str, Any] | None = None,
    breaker: br.Breaker | None = None,
    cancelled: str | None = None,
) -> Settlement:
    """Decide the end of one run of ``job`` (which must be ``running``).

    ``cancelled`` is the reason its cancellation was asked for (``if_running:
    cancel`` stopped it): a run that did not succeed is then not retried.
    """
    if job.status is not JobStatus.RUNNING:
        raise IllegalTransitionError(job.id, job.status.value, "settle")
    if isinstance(end, Interrupted):
        return _interrupted(job, end, ctx.now)
    if isinstance(end, NotStarted):
        return _released(job, end, ctx.now)
    if isinstance(end, NotRun):
        verdict = Verdict(
            JobEvent.FAIL, plain(end.reason) or "the core did not run the plugin", end.retryable
        )
    else:
        verdict = end
    if cancelled is not None and not verdict.succeeded:
        verdict = attrs.evolve(verdict, event=JobEvent.FAIL, error=cancelled, retryable=False)
    new_state: dict[str, Any] | None = None
    if reads_state(end):
        verdict, new_state = _merge(verdict, state, ctx.state_limit, mirror=ctx.fact is not None)
    run = _record(job, verdict, ctx.now)
    new_breaker = _count(job, verdict, breaker, ctx) if reads_breaker(job, end) else None
    if verdict.succeeded:
        return _succeeded(job, verdict, run, state=new_state, breaker=new_breaker, ctx=ctx)
    return _failed(job, verdict, run, new_breaker, ctx)


def reads_state(end: RunEnd) -> bool:
    """Does settling ``end`` read the plugin's state? Only a success with state updates
    does: a store's unit need not read (nor lock) the state for any other run."""
    return (
        isinstance(end, Verdict)
        and end.succeeded
        and end.response is not None
        and bool(end.response.state_updates)
    )


def reads_breaker(job: Job, end: RunEnd) -> bool:
    """Does settling ``end`` read the pair's breaker? Only a scheduled job's real run
    counts (D3): a run the core refused says nothing of the plugin's health."""
    return isinstance(end, Verdict) and job.submitted_by is SubmittedBy.SCHEDULER


def _merge(
    verdict: Verdict, state: dict[str, Any] | None, limit: int, *, mirror: bool = False
) -> tuple[Verdict, dict[str, Any] | None]:
    """A success's state updates merged over ``state`` (``mirror``: replacing it whole): the
    plugin's whole new state when it changed (else None), or a failed verdict when the new
    state would be too large."""
    response = verdict.response
    assert response is not None
    before = state or {}
    merged = merge_state({} if mirror else before, response.state_updates, limit=limit)
    if not merged.ok:
        failed = attrs.evolve(verdict, event=JobEvent.FAIL, error=merged.rejected, retryable=response.retry)
        return failed, None
    # Compared as JSON text: 1, 1.0 and true are equal in Python, not in state.
    return verdict, (merged.state if merged.text != serialize_state(before) else None)


def _record(job: Job, verdict: Verdict, now: datetime) -> RunRecord:
    response = verdict.response
    facts = verdict.facts
    return RunRecord(
        job_id=job.id,
        attempt=job.attempt,
        started_at=job.started_at,
        finished_at=now,
        duration=facts.duration,
        exit_code=facts.exit_code,
        signal=facts.signal,
        timed_out=facts.timed_out,
        error=clip(verdict.error) if verdict.error is not None else None,
        stderr_tail=facts.stderr_tail,
        stdout_head=facts.stdout_head,
        logs=_cap_logs(response.logs) if response is not None and response.logs else (),
        result=clip(response.result, MAX_RESULT_CHARS) if response is not None and response.result else None,
    )


def _count(job: Job, verdict: Verdict, breaker: br.Breaker | None, ctx: SettleContext) -> br.Breaker | None:
    """The pair's breaker after this run, when it changed."""
    current = breaker or br.closed(job.plugin, br.subject(job.command, job.schedule_id))
    if verdict.succeeded:
        updated = br.record_success(current)
    else:
        updated = br.record_failure(current, now=ctx.now, policy=ctx.breaker)
    return updated if updated != current else None


def _succeeded(
    job: Job,
    verdict: Verdict,
    run: RunRecord,
    *,
    state: dict[str, Any] | None,
    breaker: br.Breaker | None,
    ctx: SettleContext,
) -> Settlement:
    response = verdict.response
    assert response is not None
    now = ctx.now
    done, record = apply(job, JobEvent.SUCCEED, at=now, actor=Actor.DISPATCHER, reason="succeeded")
    if not response.events:  # most runs: what fan_out answers for no events
        envelopes: tuple[Envelope, ...] = ()
        routed = _NO_FAN_OUT
    else:
        envelopes = tuple(
            wrap(e, source=job.plugin, at=now, event_id=event_id_for(job.id, i))
            for i, e in enumerate(response.events)
        )
        routed = fan_out(
            envelopes,
            routes=ctx.routes,
            targets=ctx.targets,
            parent_job_id=job.id,
            at=now,
            depth=job.route_depth,
            max_depth=ctx.max_route_depth,
        )
    fact = None
    if ctx.fact is not None and response.state_updates:
        fact = Fact(
            plugin=job.plugin,
            fact_type=ctx.fact.fact_type,
            job_id=job.id,
            at=now,
            body=dict(response.state_updates),
        )
    return Settlement(
        job=done,
        transitions=(record,),
        run=run,
        response=response,
        state=state,
        breaker=breaker,
        events=envelopes,
        children=routed.children,
        unroutable=routed.unroutable,
        unmatched=routed.unmatched,
        too_deep=routed.too_deep,
        fact=fact,
    )


def _failed(
    job: Job, verdict: Verdict, run: RunRecord, breaker: br.Breaker | None, ctx: SettleContext
) -> Settlement:
    error = run.error
    assert error is not None
    now = ctx.now
    failed, first = apply(job, verdict.event, at=now, actor=Actor.DISPATCHER, reason=error, last_error=error)
    decision = decide_retry(
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        retryable=verdict.retryable,
        now=now,
        base=ctx.retry.backoff_base,
        draw=ctx.draw,
    )
    if decision.requeue:
        assert decision.next_retry_at is not None
        final, second = apply(
            failed,
            JobEvent.RETRY,
            at=now,
            actor=Actor.RETRY,
            reason=f"attempt {job.attempt + 1} of {job.max_attempts} at {iso_utc(decision.next_retry_at)}",
            next_retry_at=decision.next_retry_at,
        )
    else:
        why = (
            "not retryable"
            if not verdict.retryable
            else f"attempts exhausted ({job.attempt}/{job.max_attempts})"
        )
        final, second = apply(failed, JobEvent.BURY, at=now, actor=Actor.DISPATCHER, reason=why)
    return Settlement(
        job=final,
        transitions=(first, second),
        run=run,
        response=verdict.response,
        breaker=breaker,
        protocol_error=verdict.protocol_error,
    )


def _not_run_record(job: Job, error: str, now: datetime) -> RunRecord:
    return RunRecord(
        job_id=job.id,
        attempt=job.attempt,
        started_at=job.started_at,
        finished_at=now,
        duration=max(0.0, (now - job.started_at).total_seconds()) if job.started_at else 0.0,
        exit_code=None,
        signal=None,
        timed_out=False,
        error=error,
        stderr_tail=b"",
        stdout_head=b"",
        logs=(),
    )


def _released(job: Job, end: NotStarted, now: datetime) -> Settlement:
    """Not started for lack of resources: back to the queue, the same attempt, no breaker count."""
    error = clip(f"not started: {plain(end.reason) or 'no resources'}; not counted as an attempt")
    retry_at = now + end.retry_in
    final, record = apply(
        job,
        JobEvent.RELEASE,
        at=now,
        actor=Actor.DISPATCHER,
        reason=f"{error}; attempt {job.attempt} again at {iso_utc(retry_at)}",
        next_retry_at=retry_at,
        last_error=error,
    )
    return Settlement(job=final, transitions=(record,), run=_not_run_record(job, error, now))


def _interrupted(job: Job, outcome: Interrupted, now: datetime) -> Settlement:
    error = clip(f"interrupted: {plain(outcome.reason) or Interrupted().reason}")
    run = _not_run_record(job, error, now)
    if job.attempts_left:
        final, record = apply(
            job,
            JobEvent.RETRY,
            at=now,
            actor=Actor.RECOVERY,
            reason=f"{error}; attempt {job.attempt + 1} of {job.max_attempts}",
            last_error=error,
        )
    else:
        final, record = apply(
            job,
            JobEvent.BURY,
            at=now,
            actor=Actor.RECOVERY,
            reason=f"{error}; attempts exhausted ({job.attempt}/{job.max_attempts})",
            last_error=error,
        )
    return Settlement(job=final, transitions=(record,), run=run)
