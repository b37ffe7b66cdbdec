"""Settle and recover: the end of a run, committed whole (D9, D6).

The unit reads the job as it is now (it must still be running), the plugin's
state and the pair's breaker when the domain will need them, and whether the
job was asked to stop (``if_running: cancel``); lets
:func:`~ductile.domain.settle.settle` decide, and commits the settlement in
this order: the routed children (decided while the parent is still running,
so a replayed settle finds them), the job's compare-and-set, its transitions,
the run record, the process record and cancel request gone, the fact, the
state, the breaker, the count of events a routing loop dropped, and last the
jobs of the lifecycle events the change makes (:mod:`ductile.units.alerts`).
Asked to (``then_claim``), the same unit then claims the next job, in the lane
room this end gave back: one write transaction per job (ADR 0068).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import attrs

from ductile.domain import breaker as br
from ductile.domain import settle as decide
from ductile.domain.breaker import Breaker, BreakerPolicy
from ductile.domain.classify import RunEnd
from ductile.domain.job import Actor, Job, JobStatus
from ductile.domain.lanes import Lanes
from ductile.domain.lifecycle import Alerts
from ductile.domain.recovery import recover as recover_job
from ductile.domain.settle import SettleContext, Settlement
from ductile.ports.store_values import ROUTE_DEPTH_DROPS, Committed, StaleJobError
from ductile.ports.tx import Tx
from ductile.units import journal
from ductile.units.alerts import after_settle
from ductile.units.claim import claim_next
from ductile.units.enqueue import insert_jobs


def settle(
    tx: Tx,
    job_id: str,
    end: RunEnd,
    *,
    ctx: SettleContext,
    dedupe_ttl: timedelta,
    token: int,
    then_claim: Lanes | None = None,
    node: str | None = None,
) -> Committed:
    """Settle a running job from how its run ended, for the claim of ``token`` (the fence):
    StaleJobError when the job is not running, or runs under another claim (nothing is then
    claimed either). With ``then_claim``, claim the next runnable job at ``ctx.now`` in those
    lanes (for ``node``), as :func:`~ductile.units.claim.claim_next` would just after."""
    committed = _settle(tx, job_id, end, ctx=ctx, dedupe_ttl=dedupe_ttl, token=token)
    if then_claim is None:
        return committed
    return attrs.evolve(committed, next_job=claim_next(tx, ctx.now, lanes=then_claim, node=node))


def _settle(
    tx: Tx, job_id: str, end: RunEnd, *, ctx: SettleContext, dedupe_ttl: timedelta, token: int
) -> Committed:
    tx.lock_job(job_id)
    job = tx.get_job(job_id)
    if job is None or job.status is not JobStatus.RUNNING:
        raise StaleJobError(f"job {job_id} is not running")
    if job.claim_token != token:
        raise StaleJobError(
            f"job {job_id} runs under claim {job.claim_token}, not {token}: that claim was lost"
        )
    state = None
    breaker = None
    if decide.reads_state(end):
        tx.lock_state(job.plugin)
        state = tx.get_state(job.plugin)
    if decide.reads_breaker(job, end):
        command = br.subject(job.command, job.schedule_id)
        tx.lock_breaker(job.plugin, command)
        breaker = tx.get_breaker(job.plugin, command)
    cancelled = tx.cancel_reason(job_id)
    settlement = decide.settle(job, end, ctx=ctx, state=state, breaker=breaker, cancelled=cancelled)
    return _commit(
        tx,
        job,
        settlement,
        now=ctx.now,
        ttl=dedupe_ttl,
        actor=Actor.ROUTE,
        breaker=breaker,
        alerts=ctx.alerts,
        policy=ctx.breaker,
    )


def recover(tx: Tx, now: datetime, *, alerts: Alerts | None = None) -> list[Settlement]:
    """D6: the orphans (a store of one process: every running job; a shared store: those its
    Tx selects, see :meth:`~ductile.ports.tx.Tx.running_jobs`) settle as interrupted (re-queued
    or dead), with its lifecycle event (``job.recovered``, ``job.dead``) when ``alerts`` route one."""
    settlements: list[Settlement] = []
    for job in tx.running_jobs():
        settlement = recover_job(job, now=now)
        _commit(tx, job, settlement, now=now, ttl=timedelta(0), actor=Actor.RECOVERY, alerts=alerts)
        settlements.append(settlement)
    return settlements


def _commit(
    tx: Tx,
    before: Job,
    s: Settlement,
    *,
    now: datetime,
    ttl: timedelta,
    actor: Actor,
    breaker: Breaker | None = None,
    alerts: Alerts | None = None,
    policy: BreakerPolicy | None = None,
) -> Committed:
    children = insert_jobs(tx, s.children, actor=actor, now=now, ttl=ttl)
    tx.update_job(s.job, expected=before.status, token=before.claim_token)
    for transition in s.transitions:
        journal.transition(
            tx, s.job, transition, run=s.run if transition.from_status is JobStatus.RUNNING else None
        )
    tx.add_run(s.run, s.job.plugin)
    tx.delete_process(s.job.id)
    tx.delete_cancel(s.job.id)
    if s.fact is not None:
        tx.add_fact(s.fact)
    if s.state is not None:
        tx.put_state(s.job.plugin, s.state)
    if s.breaker is not None:
        journal.breaker(tx, breaker, s.breaker, at=now, actor=Actor.DISPATCHER.value)
    if s.too_deep:
        tx.add_count(ROUTE_DEPTH_DROPS, len(s.too_deep))
    told = after_settle(tx, s, alerts, breaker=breaker, policy=policy, now=now)
    return Committed(settlement=s, children=tuple(children), alerts=tuple(told))
