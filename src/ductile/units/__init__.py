"""The store's units of work, written once for every store.

Each function is one unit of the Store port (``ductile.ports.store``): it
reads what it decides on through a :class:`~ductile.ports.tx.Tx`, calls the
domain's pure functions to decide, and writes the result through the same Tx.
A store runs the unit inside one transaction of its own (SQLite: on its
writer thread, in the batch's transaction; the in-memory fakes: over
dictionaries with an undo log) and returns what the unit returns. So the
contract suite compares one implementation of the units over several storage
engines, not several implementations (ADR 0019).

Like the domain, this package imports nothing of the world (an import-linter
contract holds it to that): no clock, no threads, no SQL, no logging.
"""

from ductile.units.claim import claim, claim_next, record_process
from ductile.units.enqueue import enqueue, insert_jobs
from ductile.units.fire import fire
from ductile.units.rewind import rewind
from ductile.units.settle import recover, settle
from ductile.units.upkeep import (
    cancel_job,
    cancel_queued,
    delete_finished,
    note,
    pause,
    reset_breakers,
    resume,
)

__all__ = [
    "cancel_job",
    "cancel_queued",
    "claim",
    "claim_next",
    "delete_finished",
    "enqueue",
    "fire",
    "insert_jobs",
    "note",
    "pause",
    "record_process",
    "recover",
    "reset_breakers",
    "resume",
    "rewind",
    "settle",
]
