"""Settle: everything that follows from one run of a job, decided at once.

The app calls :func:`settle` inside the store's unit of work with the job as
it is *now* in the store, the plugin's current state and breaker; the store
commits the returned :class:`Settlement` in one transaction (D9). Crash
recovery (D6) goes through the same function with an
:class:`~ductile.domain.outcome.Interrupted` outcome.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import attrs

from ductile.domain import breaker as br
from ductile.domain.errors import IllegalTransitionError, ProtocolError, UnitError
from ductile.domain.job import Actor, Job, JobEvent, JobStatus, SubmittedBy, Transition, apply
from ductile.domain.outcome import (
    STDOUT_KEEP,
    Interrupted,
    NotRun,
    Outcome,
    SpawnOutcome,
    signal_name,
)
from ductile.domain.protocol import LogLine, Response, iso_utc, parse_response
from ductile.domain.quantities import format_duration
from ductile.domain.retry import EX_CONFIG, RetryPolicy, decide_retry, is_retryable
from ductile.domain.routing import Envelope, FanOut, Route, Target, event_id_for, fan_out, wrap
from ductile.domain.state import MAX_STATE_BYTES, merge_state, serialize_state

#: Longest ``last_error`` / run error / failure reason kept.
MAX_ERROR_CHARS = 4000
#: Most log lines kept per run, the "more dropped" marker included.
MAX_LOG_LINES = 200
#: Longest log message kept.
MAX_LOG_CHARS = 2000


def _check_draw(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{attribute.name} must be a random draw in [0, 1), got {value!r}")


@attrs.frozen(kw_only=True)
class SettleContext:
    """Policy and inputs from outside the job row."""

    now: datetime
    #: The retry jitter draw, in [0, 1).
    draw: float = attrs.field(default=0.0, validator=_check_draw)
    retry: RetryPolicy = RetryPolicy()
    breaker: br.BreakerPolicy = br.BreakerPolicy()
    routes: tuple[Route, ...] = ()
    targets: Mapping[str, Target] = attrs.field(factory=dict)
    timeout: timedelta | None = None
    state_limit: int = MAX_STATE_BYTES


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


def _clip(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text(value: str | None) -> str:
    """A message with its surrounding blanks removed ('' when there is none)."""
    return value.strip() if value else ""


def _stderr_hint(tail: bytes) -> str:
    if not tail:
        return ""
    for line in reversed(tail.decode("utf-8", "replace").splitlines()):
        if line.strip():
            return f"; stderr ends: {_clip(line.strip(), 200)!r}"
    return ""


def _cap_logs(logs: tuple[LogLine, ...]) -> tuple[LogLine, ...]:
    """At most MAX_LOG_LINES lines in all; when cut, the last one says how many were dropped."""
    over = len(logs) > MAX_LOG_LINES
    kept = logs[: MAX_LOG_LINES - 1] if over else logs
    capped = tuple(attrs.evolve(line, message=_clip(line.message, MAX_LOG_CHARS)) for line in kept)
    if over:
        capped += (LogLine(level="warn", message=f"{len(logs) - len(kept)} more log lines dropped"),)
    return capped


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") + "s"


def _after(timeout: timedelta | None, duration: float) -> str:
    """`` after 1m`` from the configured timeout, else the measured duration, else nothing."""
    if timeout is not None and timeout > timedelta(0):
        try:
            return f" after {format_duration(timeout)}"
        except UnitError:  # finer than a millisecond: no canonical text
            return f" after {_seconds(timeout.total_seconds())}"
    if duration > 0:
        return f" after {_seconds(duration)}"
    return ""


@attrs.frozen
class _Verdict:
    """The classification of a spawn outcome before any transition."""

    event: JobEvent  # SUCCEED, FAIL or TIME_OUT
    error: str | None
    retryable: bool
    response: Response | None = None
    protocol_error: str | None = None


def classify(outcome: SpawnOutcome, timeout: timedelta | None = None) -> _Verdict:
    """What a finished process means, independent of state and routing.

    The order matters: a timeout wins over everything (output produced after
    the deadline never makes a success, D4), then a failed exec, an
    overflowing stdout, a signal, exit 78, and only then the response.
    """
    hint = _stderr_hint(outcome.stderr_tail)
    if outcome.timed_out:
        return _Verdict(JobEvent.TIME_OUT, f"timed out{_after(timeout, outcome.duration)}{hint}", True)
    if outcome.spawn_error is not None:
        why = outcome.spawn_error.strip()
        return _Verdict(
            JobEvent.FAIL, f"could not start the plugin: {why}" if why else "could not start the plugin", True
        )
    if outcome.stdout_overflow:
        return _Verdict(JobEvent.FAIL, f"stdout over 10 MiB: the plugin was stopped{hint}", True)
    code = outcome.exit_code
    sig = outcome.signal
    if sig is None and code is not None and code < 0:  # a raw waitpid-style "-N": signal N
        sig = -code
    if sig is not None:  # a killed process has no exit code, whatever else was filled in
        code = None
    response: Response | None = None
    perr: ProtocolError | None = None
    try:
        response = parse_response(outcome.stdout)
    except ProtocolError as e:
        perr = e
    kind = perr.kind if perr is not None else None
    # A complete response saying "retry": false is honoured whatever else went wrong (D3).
    retryable = is_retryable(exit_code=code, response_retry=response.retry if response else None)
    if sig is not None:
        return _Verdict(JobEvent.FAIL, f"killed by {signal_name(sig)}{hint}", retryable, response)
    if code == EX_CONFIG:
        if response is not None and _text(response.error):
            detail = f"{_text(response.error)} (exit code 78, EX_CONFIG: not retried)"
        elif perr is not None and perr.kind != "empty":
            detail = f"exit code 78 (EX_CONFIG: not retried) with protocol error: {perr}{hint}"
        else:
            detail = f"exit code 78 (EX_CONFIG: not retried){hint}"
        return _Verdict(JobEvent.FAIL, detail, False, response, kind)
    if response is None:
        assert perr is not None
        if code not in (0, None):
            what = "no response on stdout" if perr.kind == "empty" else f"protocol error: {perr}"
            return _Verdict(JobEvent.FAIL, f"exit code {code} with {what}{hint}", True, None, kind)
        return _Verdict(JobEvent.FAIL, f"protocol error: {perr}{hint}", True, None, kind)
    if not response.ok:
        message = _text(response.error) or f"the plugin reported an error without a message{hint}"
        if code not in (0, None):
            message = f"{message} (exit code {code})"
        return _Verdict(JobEvent.FAIL, message, retryable, response)
    if code not in (0, None):
        return _Verdict(JobEvent.FAIL, f"exit code {code} with an ok response{hint}", retryable, response)
    return _Verdict(JobEvent.SUCCEED, None, True, response)


def settle(
    job: Job,
    outcome: Outcome,
    *,
    ctx: SettleContext,
    state: dict[str, Any] | None = None,
    breaker: br.Breaker | None = None,
) -> Settlement:
    """Decide the end of one run of ``job`` (which must be ``running``)."""
    if job.status is not JobStatus.RUNNING:
        raise IllegalTransitionError(job.id, job.status.value, "settle")
    now = ctx.now
    if isinstance(outcome, Interrupted):
        return _interrupted(job, outcome, now)
    if isinstance(outcome, NotRun):
        verdict = _Verdict(
            JobEvent.FAIL, _text(outcome.reason) or "the core did not run the plugin", outcome.retryable
        )
        spawn = SpawnOutcome()
        counts_for_breaker = False
    else:
        verdict = classify(outcome, ctx.timeout)
        spawn = outcome
        counts_for_breaker = True

    response = verdict.response
    new_state: dict[str, Any] | None = None
    if verdict.event is JobEvent.SUCCEED:
        assert response is not None
        if response.state_updates:
            before = state or {}
            merged = merge_state(before, response.state_updates, limit=ctx.state_limit)
            if not merged.ok:
                verdict = _Verdict(JobEvent.FAIL, merged.rejected, response.retry, response)
            elif merged.text != serialize_state(before):
                # Compared as JSON text: 1, 1.0 and true are equal in Python, not in state.
                new_state = merged.state

    logs = _cap_logs(response.logs) if response is not None and response.logs else ()
    error = _clip(verdict.error) if verdict.error is not None else None
    run = RunRecord(
        job_id=job.id,
        attempt=job.attempt,
        started_at=job.started_at,
        finished_at=now,
        duration=spawn.duration,
        exit_code=spawn.exit_code,
        signal=spawn.signal,
        timed_out=spawn.timed_out,
        error=error,
        stderr_tail=spawn.stderr_tail,
        stdout_head=spawn.stdout[:STDOUT_KEEP],
        logs=logs,
    )

    new_breaker: br.Breaker | None = None
    if counts_for_breaker and job.submitted_by is SubmittedBy.SCHEDULER:
        current = breaker or br.closed(job.plugin, job.command)
        if verdict.event is JobEvent.SUCCEED:
            updated = br.record_success(current)
        else:
            updated = br.record_failure(current, now=now, policy=ctx.breaker)
        new_breaker = updated if updated != current else None

    if verdict.event is JobEvent.SUCCEED:
        assert response is not None
        done, record = apply(job, JobEvent.SUCCEED, at=now, actor=Actor.DISPATCHER, reason="succeeded")
        if not response.events:  # most runs: what fan_out answers for no events
            envelopes: tuple[Envelope, ...] = ()
            routed = _NO_FAN_OUT
        else:
            envelopes = tuple(
                wrap(e, source=job.plugin, at=now, event_id=event_id_for(job.id, i))
                for i, e in enumerate(response.events)
            )
            routed = fan_out(envelopes, routes=ctx.routes, targets=ctx.targets, parent_job_id=job.id, at=now)
        return Settlement(
            job=done,
            transitions=(record,),
            run=run,
            response=response,
            state=new_state,
            breaker=new_breaker,
            events=envelopes,
            children=routed.children,
            unroutable=routed.unroutable,
            unmatched=routed.unmatched,
        )

    assert error is not None
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
        response=response,
        breaker=new_breaker,
        protocol_error=verdict.protocol_error,
    )


def _interrupted(job: Job, outcome: Interrupted, now: datetime) -> Settlement:
    error = _clip(f"interrupted: {_text(outcome.reason) or Interrupted().reason}")
    run = RunRecord(
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
