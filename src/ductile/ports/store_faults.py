"""What a store says when the machine, not the request, stops it: faults, transient or permanent.

Every store raises these (the SQLite adapter subclasses them with its own
details), so the app can react without knowing the store:

* a :class:`TransientStoreError` (the write lock held by another process past
  the busy timeout, a full disk, an I/O error, a read-only file) may succeed
  if tried again later: a settle is retried, a webhook gets 503 and is
  redelivered, a tick is tried again;
* a :class:`PermanentStoreError` (a corrupt page, a file that is not a
  database) will fail the same way however often it is tried: a settle that
  meets one is abandoned (the job stays running, for crash recovery after the
  database is restored), never retried forever.

The message of either names the file, what failed and what to do, in one
line: callers log it as it is, without a traceback.

:class:`WriteFault` is a store's answer to "do you accept writes now?"
(:meth:`ductile.ports.store.Store.write_fault`): the daemon's ``/healthz`` and
``ductile status`` show it.
"""

from __future__ import annotations

from datetime import datetime

import attrs

from ductile.domain.errors import DuctileError

__all__ = ["PermanentStoreError", "StoreFaultError", "TransientStoreError", "WriteFault"]


class StoreFaultError(DuctileError):
    """The store could not do what was asked because of the machine (disk, lock, file), not the request."""

    #: True when trying again later may succeed.
    transient: bool = True
    #: A short stable code (``busy``, ``full``, ``io``, ``corrupt``...): see :class:`WriteFault`.
    kind: str = "fault"


class TransientStoreError(StoreFaultError):
    """A fault that may pass: a lock held too long, a full disk, an I/O error. Try again later."""

    transient = True


class PermanentStoreError(StoreFaultError):
    """A fault that trying again will not cure: a corrupt page, a file that is not a database."""

    transient = False


@attrs.frozen(kw_only=True)
class WriteFault:
    """Why a store refuses writes now: its last write failed this way and none has succeeded since
    (a permanent fault stays until the store is reopened)."""

    #: One line: what fails and what to do (the message of the error that started it).
    reason: str
    #: A short stable code: ``busy``, ``full``, ``io``, ``readonly``, ``corrupt``...
    kind: str
    #: Trying again may succeed (``busy``, ``full``, ``io``, ``readonly``); False for ``corrupt``.
    transient: bool
    #: When the first failure of this episode happened (aware UTC).
    since: datetime
