"""How the scheduler's ticks are going: failures counted, each episode logged once.

A tick can fail as a whole (the store cannot be read) or for one schedule (its
firing cannot be committed). Either must never be a silent stop: the daemon
keeps ticking, the other schedules keep firing, and :class:`TickReport` keeps
what ``/healthz`` and ``ductile status`` show (failed ticks, the schedules that
are failing, the last error). It logs the first failure of an episode (with its
traceback: it may be a bug worth reporting) and the recovery, never every
retry in between.
"""

from __future__ import annotations

from datetime import datetime
from logging import ERROR
from typing import Any

import attrs

from ductile.domain.protocol import iso_utc
from ductile.domain.schedule import split_key
from ductile.log import Log

_log = Log("scheduler")

#: Longest error text kept in the report.
MAX_ERROR_CHARS = 500


def _bound(key: str) -> Log:
    """The log bound to the plugin and schedule of a schedule key (``<plugin>/<id>``)."""
    plugin, schedule_id = split_key(key)
    return _log.bind(plugin=plugin, schedule=schedule_id)


def _text(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


@attrs.define
class TickReport:
    """Failures of the scheduler's ticks, whole or per schedule (see the module's docs)."""

    #: Ticks in which anything failed, since the daemon started.
    failed_ticks: int = 0
    last_error: str | None = None
    last_error_at: datetime | None = None
    #: The whole tick is failing (None: the last tick ran through).
    tick_error: str | None = None
    #: Schedules whose firing is failing, by key, with their error.
    failing: dict[str, str] = attrs.field(factory=dict)
    _failed_this_tick: bool = attrs.field(default=False, init=False)

    @property
    def ok(self) -> bool:
        return self.tick_error is None and not self.failing

    def schedule_failed(self, key: str, error: Exception, now: datetime) -> None:
        """One schedule's firing failed: logged when its episode starts; it is tried again."""
        text = _text(error)
        if key not in self.failing:
            why = f"schedule '{key}' could not fire: {text}; the other schedules go on, it is retried"
            _bound(key).log(ERROR, why, exc_info=error)
        self.failing[key] = text
        self._note(text, now)

    def schedule_fired(self, key: str) -> None:
        if self.failing.pop(key, None) is not None:
            _bound(key).info(f"schedule '{key}' fires again")

    def forget(self, keys: set[str]) -> None:
        """Schedules that no longer exist (a reload removed them) are failing no more."""
        for key in [k for k in self.failing if k not in keys]:
            del self.failing[key]

    def tick_failed(self, error: Exception, now: datetime) -> None:
        """The whole tick failed: logged when the episode starts; the daemon tries again shortly."""
        text = _text(error)
        if self.tick_error is None:
            _log.log(ERROR, f"scheduler tick failed: {text}; trying again shortly", exc_info=error)
        self.tick_error = text
        self._note(text, now)
        self.tick_ended()

    def tick_ended(self) -> None:
        """A tick is over (whatever failed in it was noted): count it once if anything did."""
        if self._failed_this_tick:
            self.failed_ticks += 1
            self._failed_this_tick = False

    def tick_ran(self) -> None:
        """A tick ran through (some schedules may still have failed in it)."""
        if self.tick_error is not None:
            _log.info(f"scheduler ticks run again (after: {self.tick_error})")
            self.tick_error = None
        self.tick_ended()

    def _note(self, text: str, now: datetime) -> None:
        self.last_error, self.last_error_at = text, now
        self._failed_this_tick = True

    def to_json(self) -> dict[str, Any]:
        """The ``scheduler`` section of ``/healthz`` and of the daemon's status file."""
        return {
            "ok": self.ok,
            "failed_ticks": self.failed_ticks,
            "tick_error": self.tick_error,
            "failing_schedules": dict(sorted(self.failing.items())),
            "last_error": self.last_error,
            "last_error_at": iso_utc(self.last_error_at) if self.last_error_at is not None else None,
        }
