"""The instance lock, watched while the daemon serves (ADR 0040).

Every :data:`CHECK_EVERY` seconds the lock's check runs
(:meth:`~ductile.adapters.pidlock.InstanceLock.check`): a deleted
``ductile.lock`` is put back; a state directory moved away under the daemon is
a reason to stop, logged at critical.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ductile.log import Log

#: Seconds between two checks.
CHECK_EVERY = 2.0

_log = Log("daemon")


async def watch_lock(check: Callable[[], str | None], stop: Callable[[], None]) -> None:
    """Run ``check`` every :data:`CHECK_EVERY` seconds until it gives a reason to ``stop``."""
    while True:
        try:
            reason = check()
        except Exception:
            _log.exception("the instance lock's check failed")
            reason = None
        if reason is not None:
            _log.critical(f"stopping: {reason}")
            stop()
            return
        await asyncio.sleep(CHECK_EVERY)
