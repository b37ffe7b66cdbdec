"""The in-memory fakes' activity log: entries in id order, appended and pruned with undo.

A part of :class:`~ductile.fakes.memory_tx.MemoryTx` (its ``_undo`` list is the
Tx's undo log). The log keeps its oldest instant, so retention's prune, run at
every scheduler tick, is a comparison until something may go instead of a scan
of the whole log (issue 18: that scan made a long simulation quadratic).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from ductile.domain.activity import Activity, Entry


class ActivityLog:
    """``append_activity`` and ``prune_activity`` of the Tx, over a list."""

    _undo: list[tuple[Callable[..., object], tuple[Any, ...]]]  # the Tx's undo log

    def __init__(self) -> None:
        #: The activity log, in id order; ids come from ``activity_seq`` and are never reused.
        self.activity: list[Entry] = []
        self.activity_seq = 0
        #: No entry of ``activity`` is older than this (None: empty).
        self.activity_floor: datetime | None = None

    def append_activity(self, activity: Activity) -> None:
        self.activity_seq += 1
        self.activity.append(Entry(id=self.activity_seq, activity=activity))
        if self.activity_floor is None or activity.at < self.activity_floor:
            self.activity_floor = activity.at
        # Undoing leaves the floor as it is: a floor too low costs one scan, never a wrong answer.
        self._undo.append((self._drop_activity, ()))

    def _drop_activity(self) -> None:
        self.activity.pop()
        self.activity_seq -= 1

    def prune_activity(self, before: datetime, *, limit: int | None = None) -> int:
        if self.activity_floor is None or self.activity_floor >= before or limit == 0:
            return 0
        if limit is None:
            kept = [e for e in self.activity if e.activity.at >= before]
        else:  # the oldest ids first, at most ``limit`` of them
            doomed = [i for i, e in enumerate(self.activity) if e.activity.at < before][:limit]
            gone = set(doomed)
            kept = [e for i, e in enumerate(self.activity) if i not in gone]
        pruned = len(self.activity) - len(kept)
        old = (self.activity, self.activity_floor)
        self._set_activity(kept, min((e.activity.at for e in kept), default=None))
        if pruned:
            self._undo.append((self._set_activity, old))
        return pruned

    def _set_activity(self, entries: list[Entry], floor: datetime | None) -> None:
        self.activity, self.activity_floor = entries, floor
