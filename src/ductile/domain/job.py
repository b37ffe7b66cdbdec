"""The job and its state machine (D2).

The machine is a table: ``TRANSITIONS[(status, event)] -> status``. One
function, :func:`apply`, moves a job; any move the table does not hold raises
:class:`IllegalTransitionError` and changes nothing. The diagram in
``docs/job-states.md`` is rendered from this table (see :func:`render_diagram`).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import attrs

from ductile.domain.errors import IllegalTransitionError


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    DEAD = "dead"


class JobEvent(enum.StrEnum):
    CLAIM = "claim"  # the dispatcher takes the job
    SUCCEED = "succeed"  # the run ended well
    FAIL = "fail"  # the run ended badly
    TIME_OUT = "time_out"  # the run hit its deadline
    RETRY = "retry"  # back to the queue for another attempt
    BURY = "bury"  # no more attempts: dead
    CANCEL = "cancel"  # a queued job whose plugin went away
    RELEASE = "release"  # the core could not start the run (no descriptors...): not an attempt


S, E = JobStatus, JobEvent

#: The whole machine. Anything missing here is illegal.
TRANSITIONS: dict[tuple[JobStatus, JobEvent], JobStatus] = {
    (S.QUEUED, E.CLAIM): S.RUNNING,
    (S.QUEUED, E.CANCEL): S.DEAD,
    (S.RUNNING, E.SUCCEED): S.SUCCEEDED,
    (S.RUNNING, E.FAIL): S.FAILED,
    (S.RUNNING, E.TIME_OUT): S.TIMED_OUT,
    (S.RUNNING, E.RETRY): S.QUEUED,  # crash recovery (D6)
    (S.RUNNING, E.BURY): S.DEAD,  # crash recovery, attempts exhausted
    (S.RUNNING, E.RELEASE): S.QUEUED,  # not started for lack of resources: the same attempt again
    (S.FAILED, E.RETRY): S.QUEUED,
    (S.FAILED, E.BURY): S.DEAD,
    (S.TIMED_OUT, E.RETRY): S.QUEUED,
    (S.TIMED_OUT, E.BURY): S.DEAD,
}

TERMINAL: frozenset[JobStatus] = frozenset({S.SUCCEEDED, S.DEAD})
#: States a row never rests in: settle passes through them in one commit.
TRANSIENT: frozenset[JobStatus] = frozenset({S.FAILED, S.TIMED_OUT})

del S, E


class SubmittedBy(enum.StrEnum):
    SCHEDULER = "scheduler"
    WEBHOOK = "webhook"
    ROUTE = "route"
    CLI = "cli"
    API = "api"


class Actor(enum.StrEnum):
    """Who made a transition; the creator's ``SubmittedBy`` value for creation."""

    SCHEDULER = "scheduler"
    WEBHOOK = "webhook"
    ROUTE = "route"
    CLI = "cli"
    API = "api"
    DISPATCHER = "dispatcher"
    RETRY = "retry"
    RECOVERY = "recovery"
    RELOAD = "reload"
    OPERATOR = "operator"


class Command(enum.StrEnum):
    POLL = "poll"
    HANDLE = "handle"
    HEALTH = "health"
    INIT = "init"


DEFAULT_MAX_ATTEMPTS = 4


def _aware(_: Any, attribute: attrs.Attribute[Any], value: datetime | None) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"{attribute.name} must be an aware datetime")


@attrs.frozen(kw_only=True)
class Job:
    """One request to run one plugin command, as stored.

    ``payload`` is the JSON object the job was submitted with. For a
    ``handle`` job it is the event envelope (D8) handed to the plugin as
    ``event``; other commands receive no event.
    """

    id: str
    plugin: str
    command: str
    payload: dict[str, Any] = attrs.field(factory=dict)
    status: JobStatus = JobStatus.QUEUED
    attempt: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    max_attempts: int = attrs.field(default=DEFAULT_MAX_ATTEMPTS, validator=attrs.validators.ge(1))
    submitted_by: SubmittedBy = SubmittedBy.API
    dedupe_key: str | None = None
    created_at: datetime = attrs.field(validator=_aware)
    started_at: datetime | None = attrs.field(default=None, validator=_aware)
    completed_at: datetime | None = attrs.field(default=None, validator=_aware)
    next_retry_at: datetime | None = attrs.field(default=None, validator=_aware)
    last_error: str | None = None
    parent_job_id: str | None = None
    source_event_id: str | None = None
    #: The schedule that made a scheduled job (``default`` for ``schedule:``); None otherwise.
    schedule_id: str | None = None
    #: How many routing hops led to this job: 0 for a job asked for directly, a routed
    #: child one more than its parent (a timer's event: 1). Capped by ``service.max_route_depth``.
    route_depth: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    #: Set on a job an operator queued again by hand (``ductile retry``, the API): the job it repeats.
    retry_of: str | None = None
    #: The fence (ADR 0032): every claim raises it by one, and a move out of ``running``
    #: is only committed by the holder of the claim that has this token.
    claim_token: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    #: Of the current or last claim: the slot of its plugin's lane it took (0 .. width - 1),
    #: the node that took it (None: a store of one process) and the instant by which no
    #: process of it may still live (None: not recorded).
    slot: int | None = None
    node: str | None = None
    deadline_at: datetime | None = attrs.field(default=None, validator=_aware)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def attempts_left(self) -> bool:
        return self.attempt < self.max_attempts


@attrs.frozen(kw_only=True)
class Claim:
    """What a claim records beside the move to ``running`` (see :attr:`Job.claim_token`)."""

    slot: int | None = None
    node: str | None = None
    deadline_at: datetime | None = attrs.field(default=None, validator=_aware)


@attrs.frozen(kw_only=True)
class Transition:
    """One line of a job's history. ``from_status`` is None for creation."""

    job_id: str
    from_status: JobStatus | None
    to_status: JobStatus
    reason: str
    actor: Actor
    at: datetime = attrs.field(validator=_aware)


def can(status: JobStatus, event: JobEvent) -> bool:
    return (status, event) in TRANSITIONS


def apply(
    job: Job,
    event: JobEvent,
    *,
    at: datetime,
    actor: Actor,
    reason: str,
    next_retry_at: datetime | None = None,
    last_error: str | None = None,
    claim: Claim | None = None,
) -> tuple[Job, Transition]:
    """Move ``job`` by ``event``; return the new value and its log line.

    Field bookkeeping follows the target state: claiming stamps
    ``started_at``, raises ``claim_token`` and records ``claim`` (its slot,
    node and deadline); a terminal state stamps ``completed_at``; a retry
    bumps ``attempt`` and sets ``next_retry_at``; a release sets
    ``next_retry_at`` and keeps ``attempt`` (the run never started).
    ``last_error`` replaces the previous one when given. The claim's facts stay
    on the job after it leaves ``running`` (the last claim), and only a claim
    changes them.
    """
    target = TRANSITIONS.get((job.status, event))
    if target is None:
        raise IllegalTransitionError(job.id, job.status.value, event.value)
    attempt, started_at, completed_at, retry_at = job.attempt, job.started_at, job.completed_at, None
    token, taken = job.claim_token, Claim(slot=job.slot, node=job.node, deadline_at=job.deadline_at)
    if target is JobStatus.RUNNING:
        started_at, completed_at = at, None
        token, taken = token + 1, claim or Claim()
    elif target in TERMINAL:
        completed_at = at
    elif target is JobStatus.QUEUED:
        attempt = job.attempt if event is JobEvent.RELEASE else job.attempt + 1
        retry_at, started_at = next_retry_at, None
    else:  # a transient state keeps the row's retry time
        retry_at = job.next_retry_at
    new = attrs.evolve(
        job,
        status=target,
        attempt=attempt,
        started_at=started_at,
        completed_at=completed_at,
        next_retry_at=retry_at,
        last_error=job.last_error if last_error is None else last_error,
        claim_token=token,
        slot=taken.slot,
        node=taken.node,
        deadline_at=taken.deadline_at,
    )
    record = Transition(
        job_id=job.id, from_status=job.status, to_status=target, reason=reason, actor=actor, at=at
    )
    return new, record


def creation(job: Job, *, actor: Actor, reason: str = "created") -> Transition:
    """The first line of a job's history (not a move of the machine)."""
    return Transition(
        job_id=job.id,
        from_status=None,
        to_status=job.status,
        reason=reason,
        actor=actor,
        at=job.created_at,
    )


def render_diagram() -> str:
    """The state machine as a Mermaid diagram, rendered from :data:`TRANSITIONS`."""
    lines = [
        "# Job states",
        "",
        "Generated from `ductile.domain.job.TRANSITIONS` by",
        "`python -m ductile.domain.job > docs/job-states.md`; a test fails when it is stale.",
        "",
        "```mermaid",
        "stateDiagram-v2",
        f"    [*] --> {JobStatus.QUEUED.value}",
    ]
    for (src, event), dst in TRANSITIONS.items():
        lines.append(f"    {src.value} --> {dst.value}: {event.value}")
    for status in JobStatus:
        if status in TERMINAL:
            lines.append(f"    {status.value} --> [*]")
    lines += [
        "```",
        "",
        "| from | event | to |",
        "|---|---|---|",
    ]
    for (src, event), dst in TRANSITIONS.items():
        lines.append(f"| {src.value} | {event.value} | {dst.value} |")
    lines += [
        "",
        "Terminal: " + ", ".join(sorted(s.value for s in TERMINAL)) + ". "
        "Transient (settle passes through them in one commit, rows never rest there): "
        + ", ".join(sorted(s.value for s in TRANSIENT))
        + ".",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - a tiny generator entry point
    print(render_diagram(), end="")
