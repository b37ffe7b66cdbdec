"""Classify: what a finished plugin process means, before any stored row is read.

:func:`classify` turns a :class:`~ductile.domain.outcome.SpawnOutcome` (exit
code, signal, up to 10 MiB of stdout...) into a :class:`Verdict`: succeed,
fail or time out, the error text, whether a retry may help, the parsed
response, and the few facts of the run kept with the job (:class:`RunFacts`,
with only the head of stdout). Nothing of it depends on the store, so the
engine classifies *before* the settle unit: parsing a large stdout never runs
inside a write transaction, where every concurrent enqueue would wait for it.

What settle takes is a :data:`RunEnd`: a verdict, or a run that never
happened (:class:`~ductile.domain.outcome.NotRun`; :class:`~ductile.domain.outcome.NotStarted`
when resources were lacking) or was cut off by a crash
(:class:`~ductile.domain.outcome.Interrupted`).
"""

from __future__ import annotations

from datetime import timedelta

import attrs

from ductile.domain.errors import ProtocolError, UnitError
from ductile.domain.job import JobEvent
from ductile.domain.outcome import STDOUT_KEEP, Interrupted, NotRun, NotStarted, SpawnOutcome, signal_name
from ductile.domain.protocol import PROTOCOL_V1, Response, parse_response
from ductile.domain.quantities import format_duration
from ductile.domain.retry import EX_CONFIG, is_retryable

#: Longest ``last_error`` / run error / failure reason kept.
MAX_ERROR_CHARS = 4000


def clip(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` cut to ``limit`` characters, the last one an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plain(value: str | None) -> str:
    """A message with its surrounding blanks removed ('' when there is none)."""
    return value.strip() if value else ""


def _size(value: bytes) -> str:
    return f"<{len(value)} bytes>"


@attrs.frozen(kw_only=True)
class RunFacts:
    """What is kept of a process's run with the job: never the whole stdout."""

    duration: float = 0.0
    exit_code: int | None = None
    signal: int | None = None
    timed_out: bool = False
    stderr_tail: bytes = attrs.field(default=b"", repr=_size)
    #: The first :data:`~ductile.domain.outcome.STDOUT_KEEP` bytes of stdout.
    stdout_head: bytes = attrs.field(default=b"", repr=_size)


#: The facts of a run that never started.
NO_RUN = RunFacts()


@attrs.frozen
class Verdict:
    """What a finished process means, independent of state and routing."""

    event: JobEvent  # SUCCEED, FAIL or TIME_OUT
    error: str | None
    retryable: bool
    response: Response | None = None
    #: The :class:`ProtocolError` kind (``empty``, ``not_json``...) when stdout was no valid response.
    protocol_error: str | None = None
    facts: RunFacts = NO_RUN

    @property
    def succeeded(self) -> bool:
        return self.event is JobEvent.SUCCEED


#: What settle decides from: a classified run, a run the core refused, one it could not start
#: for lack of resources, or one a crash cut off.
RunEnd = Verdict | NotRun | NotStarted | Interrupted


def _stderr_hint(tail: bytes) -> str:
    if not tail:
        return ""
    for line in reversed(tail.decode("utf-8", "replace").splitlines()):
        if line.strip():
            return f"; stderr ends: {clip(line.strip(), 200)!r}"
    return ""


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


def classify(
    outcome: SpawnOutcome, timeout: timedelta | None = None, *, protocol: int = PROTOCOL_V1
) -> Verdict:
    """What a finished process means (``timeout``: the configured one, for the message;
    ``protocol``: the one the plugin's manifest declares, which its stdout is read under).

    The order matters: a timeout wins over everything (output produced after
    the deadline never makes a success, D4), then a failed exec (not retried
    when the spawner named a :class:`~ductile.domain.outcome.StartFailure`), an
    overflowing stdout, a signal, exit 78, and only then the response.
    """
    facts = RunFacts(
        duration=outcome.duration,
        exit_code=outcome.exit_code,
        signal=outcome.signal,
        timed_out=outcome.timed_out,
        stderr_tail=outcome.stderr_tail,
        stdout_head=outcome.stdout[:STDOUT_KEEP],
    )
    hint = _stderr_hint(outcome.stderr_tail)
    if outcome.timed_out:
        return Verdict(
            JobEvent.TIME_OUT, f"timed out{_after(timeout, outcome.duration)}{hint}", True, facts=facts
        )
    if outcome.spawn_error is not None:
        why = outcome.spawn_error.strip()
        error = f"could not start the plugin: {why}" if why else "could not start the plugin"
        if outcome.start_failure is not None:
            # The same on every attempt (no #! line, no interpreter, CRLF, an import error):
            # retrying cannot fix it, the operator must.
            return Verdict(JobEvent.FAIL, f"{error} (not retried)", False, facts=facts)
        return Verdict(JobEvent.FAIL, error, True, facts=facts)
    if outcome.stdout_overflow:
        return Verdict(JobEvent.FAIL, f"stdout over 10 MiB: the plugin was stopped{hint}", True, facts=facts)
    return _read_exit(outcome, hint, facts, protocol)


def _read_exit(outcome: SpawnOutcome, hint: str, facts: RunFacts, protocol: int) -> Verdict:
    """The verdict of a process that exited or was killed: its signal, its exit code, its response."""
    code = outcome.exit_code
    sig = outcome.signal
    if sig is None and code is not None and code < 0:  # a raw waitpid-style "-N": signal N
        sig = -code
    if sig is not None:  # a killed process has no exit code, whatever else was filled in
        code = None
    response: Response | None = None
    perr: ProtocolError | None = None
    try:
        response = parse_response(outcome.stdout, protocol=protocol)
    except ProtocolError as e:
        perr = e
    kind = perr.kind if perr is not None else None
    # A complete response saying "retry": false is honoured whatever else went wrong (D3).
    retryable = is_retryable(exit_code=code, response_retry=response.retry if response else None)
    if sig is not None:
        return Verdict(JobEvent.FAIL, f"killed by {signal_name(sig)}{hint}", retryable, response, facts=facts)
    if code == EX_CONFIG:
        return Verdict(JobEvent.FAIL, _ex_config(response, perr, hint), False, response, kind, facts=facts)
    if response is None:
        assert perr is not None
        if code not in (0, None):
            what = "no response on stdout" if perr.kind == "empty" else f"protocol error: {perr}"
            return Verdict(
                JobEvent.FAIL, f"exit code {code} with {what}{hint}", True, None, kind, facts=facts
            )
        return Verdict(JobEvent.FAIL, f"protocol error: {perr}{hint}", True, None, kind, facts=facts)
    if not response.ok:
        message = plain(response.error) or f"the plugin reported an error without a message{hint}"
        if code not in (0, None):
            message = f"{message} (exit code {code})"
        return Verdict(JobEvent.FAIL, message, retryable, response, facts=facts)
    if code not in (0, None):
        error = f"exit code {code} with an ok response{hint}"
        return Verdict(JobEvent.FAIL, error, retryable, response, facts=facts)
    return Verdict(JobEvent.SUCCEED, None, True, response, facts=facts)


def _ex_config(response: Response | None, perr: ProtocolError | None, hint: str) -> str:
    """The error of a run that exited 78 (EX_CONFIG, never retried)."""
    if response is not None and plain(response.error):
        return f"{plain(response.error)} (exit code 78, EX_CONFIG: not retried)"
    if perr is not None and perr.kind != "empty":
        return f"exit code 78 (EX_CONFIG: not retried) with protocol error: {perr}{hint}"
    return f"exit code 78 (EX_CONFIG: not retried){hint}"
