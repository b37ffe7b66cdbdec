"""Journal: the writes that also append to the activity log, in the unit that makes them.

A unit never calls ``tx.add_transition`` or ``tx.put_breaker`` alone: it
calls :func:`transition` or :func:`breaker` here, which write the row and the
activity entry the domain derives from the change
(:mod:`ductile.domain.activity`), in the same transaction. So the log holds
exactly what was committed, and a rolled-back unit leaves no entry.
"""

from __future__ import annotations

from datetime import datetime

from ductile.domain import activity
from ductile.domain.breaker import Breaker
from ductile.domain.job import Job, Transition
from ductile.domain.settle import RunRecord
from ductile.ports.tx import Tx


def transition(tx: Tx, job: Job, record: Transition, *, run: RunRecord | None = None) -> None:
    """Append ``record`` to ``job``'s history (``job``: the row as written) and log it;
    ``run``: the run whose end the transition is, when it is one."""
    tx.add_transition(record)
    error = run.error if run is not None else None
    duration = run.duration if run is not None else None
    tx.append_activity(activity.of_transition(job, record, error=error, duration=duration))


def breaker(tx: Tx, before: Breaker | None, after: Breaker, *, at: datetime, actor: str) -> None:
    """Store ``after`` over ``before`` and log it when it opened or closed."""
    tx.put_breaker(after)
    entry = activity.of_breaker(before, after, at=at, actor=actor)
    if entry is not None:
        tx.append_activity(entry)
