"""Lanes (D14 [A2]): how many jobs may run at once, and what a claim takes.

A plugin's **lane** is as wide as its ``parallelism`` (capped by
``service.max_workers``, and at 1 when its manifest says it is not
``concurrency_safe``): at most that many of its jobs run at once. A running
job holds one **slot** of its lane, ``0 .. width - 1``; a store keeps "one
running job per (plugin, slot)" as a constraint, so two claimers that raced
for the same slot cannot both win. FIFO holds within a lane: a claim takes the
oldest runnable job whose lane has a free slot, so a saturated plugin never
holds back another's jobs. A job whose dedupe identity (plugin, command,
key) is running waits for that run to end: two runs of one delivery never
overlap.

Every claim also records how long it may hold: ``deadline_at = claim + hold``,
the plugin's longest timeout plus the kill grace plus a spawn allowance. No
process of the claim may outlive it (the watchdog sees to that on a shared
store, ADR 0034), which is what lets another node recover the job of a dead
one safely.

Pure values and functions; the claim unit (:mod:`ductile.units.claim`) uses them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import datetime, timedelta

import attrs

from ductile.domain.job import Claim, Job

Identity = tuple[str, str, str]


@attrs.frozen(kw_only=True)
class Lanes:
    """The width of each plugin's lane and how long its claims may hold."""

    #: plugin -> how many of its jobs may run at once.
    widths: Mapping[str, int] = attrs.field(factory=dict)
    #: The width of a plugin not in ``widths``; None: no limit.
    default_width: int | None = None
    #: plugin -> how long a claim of one of its jobs may hold.
    holds: Mapping[str, timedelta] = attrs.field(factory=dict)
    #: The hold of a plugin not in ``holds``; None: no deadline is recorded.
    default_hold: timedelta | None = None

    def width(self, plugin: str) -> int | None:
        return self.widths.get(plugin, self.default_width)

    def hold(self, plugin: str) -> timedelta | None:
        return self.holds.get(plugin, self.default_hold)


#: No lane limits, no deadlines: what a store does when it is not told (one claim at a time,
#: as the serial dispatcher of D14 makes them, never meets a limit anyway).
UNLIMITED = Lanes()


@attrs.frozen(kw_only=True)
class Busy:
    """What is running, as a claim sees it: the slots each plugin holds, the identities that run."""

    #: plugin -> how many of its jobs run.
    running: Mapping[str, int] = attrs.field(factory=dict)
    #: plugin -> the slots its running jobs hold (a job claimed before lanes existed holds none).
    slots: Mapping[str, frozenset[int]] = attrs.field(factory=dict)
    #: (plugin, command, dedupe_key) of every running job with a key.
    identities: frozenset[Identity] = frozenset()

    def saturated(self, lanes: Lanes) -> frozenset[str]:
        """The plugins whose lane has no free slot."""
        return frozenset(
            plugin
            for plugin, count in self.running.items()
            if (width := lanes.width(plugin)) is not None and count >= width
        )


def identity(job: Job) -> Identity | None:
    """D1's identity of ``job``: (plugin, command, dedupe_key), None without a key."""
    return None if job.dedupe_key is None else (job.plugin, job.command, job.dedupe_key)


def busy(running: Iterable[Job]) -> Busy:
    """The :class:`Busy` of these running jobs."""
    counts: dict[str, int] = {}
    slots: dict[str, set[int]] = {}
    identities: set[Identity] = set()
    for job in running:
        counts[job.plugin] = counts.get(job.plugin, 0) + 1
        if job.slot is not None:
            slots.setdefault(job.plugin, set()).add(job.slot)
        key = identity(job)
        if key is not None:
            identities.add(key)
    return Busy(
        running=counts,
        slots={plugin: frozenset(taken) for plugin, taken in slots.items()},
        identities=frozenset(identities),
    )


def free_slot(taken: Collection[int], width: int | None) -> int | None:
    """The lowest slot not ``taken``; None when it would be ``width`` or more."""
    slot = 0
    while slot in taken:
        slot += 1
    return slot if width is None or slot < width else None


def claim_of(job: Job, state: Busy, lanes: Lanes, *, node: str | None, now: datetime) -> Claim | None:
    """What a claim of ``job`` records now, or None when its lane is full or its identity runs."""
    key = identity(job)
    if key is not None and key in state.identities:
        return None
    width = lanes.width(job.plugin)
    if width is not None and state.running.get(job.plugin, 0) >= width:
        return None
    slot = free_slot(state.slots.get(job.plugin, frozenset()), width)
    if slot is None:
        return None
    hold = lanes.hold(job.plugin)
    return Claim(slot=slot, node=node, deadline_at=None if hold is None else now + hold)
