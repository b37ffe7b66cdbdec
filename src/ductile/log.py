"""One structured logger for all of ductile: context bound once, fields added per line.

Every component logs through a :class:`Log`::

    log = Log("dispatcher")
    job_log = log.bind(plugin=job.plugin, job_id=job.id)
    job_log.info("poll succeeded", duration_seconds=0.03)

A bound value is immutable: ``bind`` returns a new one carrying more context,
so the context of a job is written once and never repeated at each call.
``component``, ``plugin`` and ``job_id`` become the top-level fields of the
JSON line (D18); everything else goes in as an extra field. The lines go to
the standard :mod:`logging` logger named ``ductile`` (an embedding
application sees them there; the daemon installs its JSON formatter on it),
and nothing is built when the level is off.

Standard library only: the adapters and the app both log through it.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["LOGGER_NAME", "Log"]

LOGGER_NAME = "ductile"
#: The context keys the JSON formatter lifts to the top level of a line.
_TOP = ("component", "plugin", "job_id")


class Log:
    """A logger with bound context. See the module's docs."""

    __slots__ = ("_context", "_logger")

    def __init__(self, component: str, *, logger: logging.Logger | None = None, **context: Any) -> None:
        self._logger = logger if logger is not None else logging.getLogger(LOGGER_NAME)
        self._context: dict[str, Any] = {"component": component, **context}

    def bind(self, **context: Any) -> Log:
        """A logger with this one's context and ``context`` (which wins on a clash)."""
        bound = Log.__new__(Log)
        bound._logger = self._logger
        bound._context = {**self._context, **context}
        return bound

    @property
    def context(self) -> dict[str, Any]:
        return dict(self._context)

    def enabled_for(self, level: int) -> bool:
        return self._logger.isEnabledFor(level)

    def log(self, level: int, message: str, *, exc_info: Any = None, **fields: Any) -> None:
        """One line at ``level``; ``exc_info`` as in :mod:`logging` (True: the exception being handled)."""
        if not self._logger.isEnabledFor(level):
            return
        merged = {**self._context, **fields} if fields else self._context
        extra: dict[str, Any] = {"fields": {k: v for k, v in merged.items() if k not in _TOP}}
        for key in _TOP:
            value = merged.get(key)
            if value is not None:
                extra[key] = value
        self._logger.log(level, message, exc_info=exc_info, extra=extra)

    def debug(self, message: str, **fields: Any) -> None:
        self.log(logging.DEBUG, message, **fields)

    def info(self, message: str, **fields: Any) -> None:
        self.log(logging.INFO, message, **fields)

    def warning(self, message: str, **fields: Any) -> None:
        self.log(logging.WARNING, message, **fields)

    def error(self, message: str, **fields: Any) -> None:
        self.log(logging.ERROR, message, **fields)

    def critical(self, message: str, **fields: Any) -> None:
        self.log(logging.CRITICAL, message, **fields)

    def exception(self, message: str, **fields: Any) -> None:
        """An error line with the traceback of the exception being handled."""
        self.log(logging.ERROR, message, exc_info=True, **fields)


class Episode:
    """A run of failures of one thing, logged as one episode: the first failure once (at
    ``level``, with the traceback only when asked: a fault of the machine explains itself in
    one line), the rest counted, and the end once, at INFO, with the count.

    ``failed`` and ``ended`` are cheap when nothing changes: a loop retrying every second
    writes two lines for an outage, not one per try. Not thread-safe: one owner.
    """

    __slots__ = ("_failures", "_log", "_what")

    def __init__(self, log: Log, what: str) -> None:
        self._log = log
        self._what = what
        self._failures = 0

    @property
    def failing(self) -> bool:
        return self._failures > 0

    def failed(
        self, error: BaseException, *, level: int = logging.ERROR, traceback: bool = False, **fields: Any
    ) -> None:
        self._failures += 1
        if self._failures == 1:
            self._log.log(
                level,
                f"{self._what} failed: {error} (logged once until it works again)",
                exc_info=error if traceback else None,
                **fields,
            )

    def ended(self, **fields: Any) -> None:
        if self._failures:
            failures, self._failures = self._failures, 0
            self._log.info(f"{self._what} works again, after {failures} failure(s)", **fields)
