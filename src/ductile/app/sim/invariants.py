"""The invariants I1-I8, each a pure function citing the SPEC, and the error that reports one."""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

import attrs

from ductile.app.sim.trace import stamp
from ductile.domain.breaker import Breaker, BreakerPolicy, BreakerStatus, subject
from ductile.domain.config import KILL_GRACE, Config, Timeouts
from ductile.domain.errors import DuctileError
from ductile.domain.job import (
    TERMINAL,
    TRANSIENT,
    TRANSITIONS,
    Actor,
    Command,
    Job,
    JobStatus,
    SubmittedBy,
    Transition,
)
from ductile.domain.protocol import EmittedEvent
from ductile.domain.retry import MAX_BACKOFF, RetryPolicy
from ductile.domain.routing import Envelope, child_job_id
from ductile.domain.settle import SettleContext
from ductile.ports.store import Committed, EnqueueResult, FireResult, Guard

#: Legal moves of the job machine as (from, to) pairs of a transition log.
LEGAL_MOVES = frozenset((src, dst) for (src, _), dst in TRANSITIONS.items())

#: How many trace lines an InvariantError quotes.
TRACE_TAIL = 12

_MICROSECOND = timedelta(microseconds=1)


class InvariantError(DuctileError):
    """An invariant failed: the message says which, where, and how to replay it."""

    def __init__(
        self, code: str, detail: str, *, at: datetime, replay: str, trace: Sequence[str] = ()
    ) -> None:
        self.code = code
        self.detail = detail
        self.at = at
        self.replay = replay
        lines = [f"invariant {code} violated at {stamp(at)}: {detail}", f"replay: {replay}"]
        if trace:
            lines.append("last steps:")
            lines += [f"  {line}" for line in trace[-TRACE_TAIL:]]
        super().__init__("\n".join(lines))


INVARIANTS: dict[str, str] = {
    "I1": "acknowledged work is never lost",
    "I2": "one state per job, legal moves only, one job running at a time",
    "I3": "attempts count runs; dead only for a reason",
    "I4": "state and routed children follow exactly the successes",
    "I5": "deduplication drops exactly what D1 says",
    "I6": "duplicate executions only after crashes",
    "I7": "the circuit breaker and the poll guard hold back the scheduler",
    "I8": "once faults stop, every job ends in bounded time",
    "I9": "no lane runs more jobs than it is wide, nor the daemon more than max_workers",
    "I10": "two runs of one dedupe identity never overlap",
    "I11": "one lifecycle event per death, none about a notifier's own jobs",
}


class Violation(BaseException):
    """Carries an :class:`InvariantError` out of the engine: raised inside a port
    call, a plain Exception could be caught (and retried forever) by the engine's
    own error handling. Public methods turn it back into the InvariantError."""

    def __init__(self, error: InvariantError) -> None:
        super().__init__(str(error))
        self.error = error


def _blocks(job: Job, *, now: datetime, ttl: timedelta) -> bool:
    """Does an existing job of the same identity make a new enqueue redundant (D1)?
    Written out here from the SPEC, not taken from the domain: a queued or a running
    job blocks whatever its age (the running case is D1's amendment A2); a success
    blocks within the TTL."""
    if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        return True
    return (
        job.status is JobStatus.SUCCEEDED and job.completed_at is not None and job.completed_at >= now - ttl
    )


def backoff_bound(policy: RetryPolicy, attempt: int) -> timedelta:
    """The longest wait after attempt ``attempt`` failed (D3: base * 2^(n-1) + U(0, base),
    the exponential part capped at :data:`~ductile.domain.retry.MAX_BACKOFF`)."""
    base = policy.backoff_base
    if not base:
        return timedelta(0)
    cap = MAX_BACKOFF // _MICROSECOND
    if attempt - 1 >= cap.bit_length():
        exponential = MAX_BACKOFF
    else:  # integer microseconds: base * 2**(n-1) as a timedelta overflows for large n
        exponential = timedelta(microseconds=min((base // _MICROSECOND) << (attempt - 1), cap))
    return exponential + base


def check_acknowledged(
    acked: Mapping[str, str], present: Collection[str], deleted: Collection[str]
) -> list[str]:
    """I1 — D1 (at-least-once: never silently dropped), D11 (202 only after a durable
    commit), D19 (only retention deletes): every job whose creation the store
    acknowledged — an enqueue's answer, a scheduled firing, a routed child — exists,
    unless retention deleted it after it ended. ``acked`` maps job id -> who got the answer."""
    return [
        f"job {job_id} ({who}) was acknowledged but is not in the store"
        for job_id, who in acked.items()
        if job_id not in present and job_id not in deleted
    ]


def check_history(job: Job, log: Sequence[Transition]) -> list[str]:
    """I2 — D2: a job has exactly one state; its transition log starts with its
    creation (→ queued), each entry moves from the state the previous one reached,
    only along the table's moves (``TRANSITIONS``), and ends in the row's state. The
    row never rests in ``failed`` or ``timed_out``; terminal rows carry ``completed_at``."""
    problems: list[str] = []
    where = f"job {job.id} ({job.plugin}.{job.command})"
    if not log:
        return [f"{where} has no transition log"]
    first = log[0]
    if first.from_status is not None or first.to_status is not JobStatus.QUEUED:
        problems.append(
            f"{where}: the log starts with {first.from_status}->{first.to_status}, not creation->queued"
        )
    for before, entry in itertools.pairwise(log):
        if entry.from_status is not before.to_status:
            problems.append(
                f"{where}: '{entry.from_status}->{entry.to_status}' follows a move to '{before.to_status}'"
            )
        elif (entry.from_status, entry.to_status) not in LEGAL_MOVES:
            problems.append(f"{where}: illegal move {entry.from_status}->{entry.to_status} ({entry.reason})")
        if entry.at < before.at:
            problems.append(f"{where}: the log goes back in time at {entry.from_status}->{entry.to_status}")
    if log[-1].to_status is not job.status:
        problems.append(f"{where}: the row says '{job.status}', the log ends in '{log[-1].to_status}'")
    if job.status in TRANSIENT:
        problems.append(f"{where} rests in the transient state '{job.status}'")
    if job.status in TERMINAL and job.completed_at is None:
        problems.append(f"{where} is {job.status} without completed_at")
    return problems


def check_single_runner(running: Collection[str], *, between_steps: bool) -> list[str]:
    """I2 — D14 (one lane: one job at a time) and D6 (a finished step leaves nothing
    running): at most one job is ``running`` at any port call, none between steps."""
    limit = 0 if between_steps else 1
    if len(running) > limit:
        when = "between steps" if between_steps else "at once"
        return [f"{len(running)} jobs running {when}: {', '.join(sorted(running))}"]
    return []


def check_attempts(job: Job, log: Sequence[Transition]) -> list[str]:
    """I3 — D2/D3/D6: ``attempt`` counts runs: it is 1 + the re-queues in the log,
    never more than ``max_attempts``; every claim is one attempt, except a claim the
    dispatcher released because it could not start the run for lack of resources
    (running -> queued by the dispatcher: not a re-queue, not an attempt). A job is ``dead``
    only when its attempts are exhausted, when the last one was not retryable (exit
    78, ``"retry": false``, or the core did not run it: NotRun), or when it was
    cancelled while queued (D13)."""
    problems: list[str] = []
    where = f"job {job.id} ({job.plugin}.{job.command})"
    requeues = claims = 0
    for t in log:
        if t.to_status is JobStatus.QUEUED:
            if t.from_status is JobStatus.RUNNING and t.actor is Actor.DISPATCHER:  # released
                claims -= 1
            elif t.from_status is not None:
                requeues += 1
        elif t.to_status is JobStatus.RUNNING:
            claims += 1
    if job.attempt != 1 + requeues:
        problems.append(f"{where}: attempt {job.attempt} after {requeues} re-queue(s)")
    if job.attempt > job.max_attempts:
        problems.append(f"{where}: attempt {job.attempt} exceeds max_attempts {job.max_attempts}")
    cancelled = bool(log) and log[-1].from_status is JobStatus.QUEUED and log[-1].to_status is JobStatus.DEAD
    expected_claims = job.attempt - 1 if job.status is JobStatus.QUEUED or cancelled else job.attempt
    if claims != expected_claims:
        problems.append(f"{where}: {claims} claim(s) for attempt {job.attempt} in state {job.status}")
    if job.status is JobStatus.DEAD and not cancelled:
        reason = log[-1].reason if log else ""
        if job.attempt < job.max_attempts and not reason.startswith("not retryable"):
            problems.append(
                f"{where} is dead at attempt {job.attempt} of {job.max_attempts} "
                f"though retryable and not cancelled ({reason!r})"
            )
    return problems


@attrs.frozen
class Expectation:
    """What a simulated run produced, as the plugin knows it: the model's input."""

    #: ``ok`` (a valid success), ``retryable`` or ``fatal`` (a failure the SPEC retries or not).
    verdict: Literal["ok", "retryable", "fatal"]
    events: tuple[EmittedEvent, ...] = ()
    behaviour: str = ""


def check_settlement(before: Job, committed: Committed, expectation: Expectation | None) -> list[str]:
    """I3 — D3/D4/D7: the outcome decides the next state. A run the plugin ended
    well succeeds; a retryable failure (error, timeout, protocol error) is re-queued
    while attempts remain, else dead; a non-retryable one (exit 78, ``"retry":
    false``) is dead at once. A run that never spawned (NotRun) never succeeds."""
    final = committed.settlement.job
    where = f"job {before.id} ({before.plugin}.{before.command}) attempt {before.attempt}"
    if expectation is None:
        if final.status is JobStatus.SUCCEEDED:
            return [f"{where} succeeded without ever running"]
        return []
    if expectation.verdict == "ok":
        wanted = JobStatus.SUCCEEDED
    elif expectation.verdict == "fatal":
        wanted = JobStatus.DEAD
    else:
        wanted = JobStatus.QUEUED if before.attempt < before.max_attempts else JobStatus.DEAD
    if final.status is not wanted:
        return [
            f"{where}: the plugin's run was '{expectation.verdict}' ({expectation.behaviour}), "
            f"so the job should be {wanted}, but it is {final.status} ({final.last_error})"
        ]
    return []


def check_state(plugin: str, state: Mapping[str, Any], succeeded: int, *, overlap: bool = False) -> list[str]:
    """I4 — D9 (completion and state merge commit together): a simulated plugin adds
    1 to ``count`` on each success, so its stored count equals the number of its
    jobs that succeeded — never a lost update, never a merge without a success. A
    plugin whose runs overlapped (a lane wider than 1) read the same count in two
    runs: its count may then lag (D14 [A2]: shallow merges in the order runs end),
    but never exceed its successes."""
    count = state.get("count", 0)
    if count == succeeded or (overlap and isinstance(count, int) and 0 < count < succeeded):
        return []
    return [f"plugin {plugin}: state count is {count!r}, but {succeeded} of its jobs succeeded"]


def check_children(
    parent: Job, committed: Committed, ctx: SettleContext, expectation: Expectation | None
) -> list[str]:
    """I4 — D8/D15/D9: children exist only for a succeeded parent, committed with it;
    each emitted event (exactly the ones the plugin printed) yields one ``handle``
    child per distinct matching route to a loaded target, with the event envelope as
    payload, the event's dedupe key, and the target's retry limit."""
    s = committed.settlement
    where = f"job {parent.id} ({parent.plugin}.{parent.command})"
    problems: list[str] = []
    if len(committed.children) != len(s.children):
        problems.append(f"{where}: {len(s.children)} children but {len(committed.children)} enqueue results")
    if not s.succeeded:
        if s.children or s.events:
            problems.append(f"{where} ended {s.job.status} but routed {len(s.children)} children")
        return problems
    if expectation is not None:
        emitted = [(e.type, e.dedupe_key) for e in expectation.events]
        wrapped = [(e.type, e.dedupe_key) for e in s.events]
        if emitted != wrapped:
            problems.append(f"{where}: the plugin emitted {emitted}, the core wrapped {wrapped}")
    expected = _expected_children(parent, s.events, ctx)
    actual = [(c.source_event_id or "", c.plugin, c.command) for c in s.children]
    if actual != expected:
        problems.append(f"{where}: children {actual}, expected one per event and matching route: {expected}")
    envelopes = {e.event_id: e for e in s.events}
    for child in s.children:
        problems += _check_child(where, parent, child, envelopes.get(child.source_event_id or ""), ctx)
    return problems


def _expected_children(
    parent: Job, events: Sequence[Envelope], ctx: SettleContext
) -> list[tuple[str, str, str]]:
    """(event id, target, command) of each child the events should yield, in order: one
    per distinct (target, command) of the matching routes, loaded targets only."""
    expected: list[tuple[str, str, str]] = []
    for envelope in events:
        seen: set[tuple[str, str]] = set()
        for route in ctx.routes:
            if route.source != parent.plugin or route.event_type != envelope.type:
                continue
            if (route.target, route.command) in seen:
                continue
            seen.add((route.target, route.command))
            if route.target in ctx.targets:
                expected.append((envelope.event_id, route.target, route.command))
    return expected


def _check_child(
    where: str, parent: Job, child: Job, envelope: Envelope | None, ctx: SettleContext
) -> list[str]:
    """One routed child against the envelope of the event it handles."""
    if child.parent_job_id != parent.id or envelope is None:
        return [f"{where}: child {child.id} does not point back at it and its event"]
    problems = []
    if child.payload != envelope.to_json() or child.dedupe_key != envelope.dedupe_key:
        problems.append(f"{where}: child {child.id} does not carry its event envelope and dedupe key")
    if child.submitted_by is not SubmittedBy.ROUTE or child.command != Command.HANDLE:
        problems.append(
            f"{where}: child {child.id} is {child.submitted_by} {child.command}, not a routed handle"
        )
    target = ctx.targets.get(child.plugin)
    if target is not None and child.max_attempts != target.max_attempts:
        problems.append(
            f"{where}: child {child.id} has max_attempts {child.max_attempts}, not {target.max_attempts}"
        )
    if child.id != child_job_id(parent.id, envelope.event_id, child.plugin, child.command):
        problems.append(f"{where}: child {child.id} does not have its derived id")
    return problems


def check_dedupe(
    job: Job, result: EnqueueResult, others: Sequence[Job], *, now: datetime, ttl: timedelta
) -> list[str]:
    """I5 — D1: identity is (plugin, command, dedupe_key). An enqueue is performed
    unless a job of the same identity is still queued, is running, or succeeded
    within the TTL (at that moment); then the caller gets that job's id. ``others``: the jobs of the
    same identity just before the call (retention-deleted ones excluded: the store
    cannot know them any more). Child replays (same parent, event, target) return
    the existing child."""
    where = f"{job.plugin}.{job.command} key={job.dedupe_key!r}"
    if result.created:
        blockers = [o for o in others if o.id != job.id and _blocks(o, now=now, ttl=ttl)]
        if blockers:
            b = blockers[0]
            return [f"{where}: job {job.id} was created although job {b.id} ({b.status}) blocks it"]
        return []
    if result.job_id == job.id:  # the same job again (a replayed child or an id already stored)
        return []
    match = next((o for o in others if o.id == result.job_id), None)
    if match is None:
        return [f"{where}: dropped as a duplicate of job {result.job_id}, which does not share its identity"]
    if not _blocks(match, now=now, ttl=ttl):
        return [
            f"{where}: dropped as a duplicate of job {match.id}, which is {match.status}: it does not block"
        ]
    return []


def check_executions(
    runs: Mapping[tuple[str, int], int], unsettled: Collection[tuple[str, int]], crashes: int
) -> list[str]:
    """I6 — D1/D6: each attempt of a job runs its plugin at most once (recovery makes
    a re-run a new attempt), and a run whose result was lost — spawned, but never
    settled — happens only when the process died: at most one per crash.
    ``runs``: (job id, attempt) -> how often it was spawned; ``unsettled``: the
    spawned attempts whose settlement never committed."""
    problems = [
        f"job {job} attempt {attempt} ran {n} times" for (job, attempt), n in sorted(runs.items()) if n > 1
    ]
    if len(unsettled) > crashes:
        lost = sorted(unsettled)[:5]
        problems.append(f"{len(unsettled)} runs were never settled after {crashes} crash(es): {lost}")
    return problems


def check_fire(
    guard: Guard | None,
    before: Breaker | None,
    outstanding: int,
    result: FireResult,
    *,
    now: datetime,
) -> list[str]:
    """I7 — D3 (while a breaker is open the scheduler enqueues nothing for the pair;
    after ``reset_after`` one probe goes, then half-open admits no other) and D21
    (no new poll while ``max_outstanding_polls`` are queued or running). Checked
    against the breaker row and the outstanding count just before the firing."""
    created = [r for r in result.jobs if r.created]
    if guard is None:
        return [f"an unguarded firing was blocked ({result.blocked})"] if result.blocked else []
    where = f"{guard.plugin}.{guard.breaker_command}"
    closed_for = None
    if before is not None and guard.breaker is not None:
        reset = guard.breaker.reset_after
        if (
            before.status is BreakerStatus.OPEN
            and before.opened_at is not None
            and now < before.opened_at + reset
        ):
            closed_for = f"open since {stamp(before.opened_at)}"
        elif (
            before.status is BreakerStatus.HALF_OPEN
            and before.probe_at is not None
            and now < before.probe_at + reset
        ):
            closed_for = f"half-open, probe sent at {stamp(before.probe_at)}"
    full = guard.max_outstanding is not None and outstanding >= guard.max_outstanding
    problems: list[str] = []
    if created and closed_for:
        problems.append(f"{where}: a scheduled job was enqueued while the breaker was {closed_for}")
    if created and full:
        problems.append(f"{where}: a job was enqueued with {outstanding} of its schedule outstanding (D21)")
    if result.blocked == "breaker_open" and not closed_for:
        problems.append(f"{where}: blocked as 'breaker open', but the breaker admits a run")
    if result.blocked == "poll_guard" and not full:
        problems.append(f"{where}: blocked by the poll guard with only {outstanding} outstanding")
    return problems


def check_breaker_after_run(
    job: Job, succeeded: bool, before: Breaker | None, after: Breaker | None, policy: BreakerPolicy
) -> list[str]:
    """I7 — D3: the breaker of (plugin, command) counts consecutive failed or timed-out
    runs of scheduler-originated jobs: a success closes it, a failure adds one and
    opens it at ``threshold`` (a failed half-open probe re-opens it)."""
    where = f"breaker {job.plugin}.{subject(job.command, job.schedule_id)} after job {job.id}"
    if succeeded:
        if after is not None and (after.status is not BreakerStatus.CLOSED or after.failures):
            return [
                f"{where} succeeded: expected closed, found {after.status} with {after.failures} failures"
            ]
        return []
    failures = (before.failures if before is not None else 0) + 1
    status_before = before.status if before is not None else BreakerStatus.CLOSED
    if after is None or after.failures != failures:
        return [
            f"{where} failed: expected {failures} failures, found {after.failures if after else 'no breaker'}"
        ]
    should_open = status_before is not BreakerStatus.CLOSED or failures >= policy.threshold
    if should_open and after.status is not BreakerStatus.OPEN:
        return [
            f"{where} failed ({failures} in a row, was {status_before}): expected open, found {after.status}"
        ]
    if not should_open and after.status is not BreakerStatus.CLOSED:
        return [f"{where}: opened after {failures} failures (threshold {policy.threshold})"]
    return []


def liveness_deadlines(pending: Sequence[Job], config: Config, *, now: datetime) -> dict[str, datetime]:
    """I8's deadlines once faults stop at ``now``: job id -> the latest instant it may end at.

    From ``now`` (or its retry time, if later) each unfinished job is given: the
    remaining runs of every pending job at their timeout plus the kill grace (one
    lane: they may all go first), its own backoffs each at its bound, and its own
    remaining attempts at the longest timeout of any command plus the grace."""
    grace = KILL_GRACE
    timeouts = [config.plugin(name).timeouts for name in config.plugins] + [Timeouts()]
    longest = max(max(t.poll, t.handle, t.health, t.init) for t in timeouts)

    def left(job: Job) -> int:
        return job.max_attempts - job.attempt + 1

    def timeout(job: Job) -> timedelta:
        return config.plugin(job.plugin).timeouts.for_command(job.command)

    ahead = sum((left(j) * (timeout(j) + grace) for j in pending), timedelta(0))
    out = {}
    for job in pending:
        policy = config.plugin(job.plugin).retry
        waits = sum((backoff_bound(policy, n) for n in range(job.attempt, job.max_attempts)), timedelta(0))
        begin = max(now, job.next_retry_at or now)
        out[job.id] = begin + ahead + waits + left(job) * (longest + grace)
    return out


def check_liveness(pending: Mapping[str, tuple[Job, datetime]], now: datetime) -> list[str]:
    """I8 — D1/D3/D4/D14: once faults stop, a job that is not terminal ends within
    its remaining attempts x (timeout + 5 s kill grace + the longest backoff) plus
    the runs queued ahead of it (one lane, FIFO). ``pending`` maps id -> (job as
    last seen, deadline); every one still non-terminal must be before its deadline."""
    return [
        f"job {job.id} ({job.plugin}.{job.command}, {job.status}, attempt {job.attempt}/{job.max_attempts}) "
        f"is not finished at its deadline {stamp(deadline)}"
        for job, deadline in pending.values()
        if job.status not in TERMINAL and now > deadline
    ]
