"""Work from outside the scheduler, each at its seeded instant: webhook deliveries (some
with redelivered dedupe keys, some sent again within minutes as a sender that got no answer
in time does), ``ductile run`` polls, and reloads.

:meth:`Agenda.plan` draws the instants before the run (a Poisson stream per kind
of arrival, the reloads within the run's middle); the simulation's loop applies
each item when the clock reaches it, as one step that a crash may cut short (a
cut arrival is sent again, as a client would).
"""

from __future__ import annotations

import heapq
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import attrs

from ductile.app.intake import EnqueueRefusedError, Webhook
from ductile.app.sim.faults import Reload
from ductile.domain.config import Endpoint
from ductile.domain.job import Command, SubmittedBy

if TYPE_CHECKING:
    from ductile.app.sim.simulation import Simulation


@attrs.define(eq=False)
class Item:
    """Something due at an instant: an arrival or a reload. ``data`` is drawn when the item
    is first applied, and kept, so that an arrival sent again after a crash is the same one."""

    kind: Literal["webhook", "cli", "reload"]
    data: Any = None


class Agenda:
    """The items still to come, in time order."""

    def __init__(self, sim: Simulation) -> None:
        self._sim = sim
        self._items: list[tuple[datetime, int, Item]] = []
        self._seq = 0
        self._webhooks_sent = 0
        self._keys: list[str] = []

    def plan(self, end: datetime) -> None:
        """Draw every arrival and reload of a run from the simulation's start to ``end``."""
        sim = self._sim
        span = end - sim.start
        streams = (("webhook", sim.arrivals.webhooks_per_day), ("cli", sim.arrivals.cli_per_day))
        for kind, per_day in streams:
            if per_day <= 0:
                continue
            at = sim.start
            while True:
                at += timedelta(seconds=sim.rng.expovariate(per_day / 86400.0))
                if at >= end:
                    break
                self.push(at, Item(kind=kind))  # type: ignore[arg-type]
        for reload in sim.reloads:
            offset = reload.at if reload.at is not None else span * (0.1 + 0.8 * sim.rng.random())
            self.push(sim.start + offset, Item(kind="reload", data=reload))

    def push(self, at: datetime, item: Item) -> None:
        self._seq += 1
        heapq.heappush(self._items, (at, self._seq, item))

    def next_at(self) -> datetime | None:
        """When the next item is due (None: nothing more)."""
        return self._items[0][0] if self._items else None

    def next_kind(self) -> str | None:
        """The kind of the next item (None: nothing more)."""
        return self._items[0][2].kind if self._items else None

    def pop(self) -> Item:
        _, _, item = heapq.heappop(self._items)
        return item

    def clear(self) -> int:
        """Drop every item still to come; how many there were."""
        dropped = len(self._items)
        self._items = []
        return dropped

    # ------------------------------------------------------------- applying an item
    async def reload(self, item: Item) -> None:
        """A drawn reload: one of its configurations, chosen the first time."""
        if not isinstance(item.data, tuple):
            reload: Reload = item.data
            item.data = reload.choices[self._sim.rng.randrange(len(reload.choices))]
        label, config = item.data
        await self._sim.apply_reload(config, label)

    async def arrive(self, item: Item) -> None:
        if item.kind == "webhook":
            await self._webhook(item)
        else:
            await self._cli_run(item)

    async def _webhook(self, item: Item) -> None:
        """A delivery to one of the config's endpoints, drawn with its dedupe key the first time."""
        sim = self._sim
        hooks = sim.config.webhooks
        endpoints = hooks.endpoints if hooks is not None else ()
        if item.data is None:
            if not endpoints:
                sim.note("webhook dropped: no endpoint configured")
                return
            endpoint = endpoints[sim.rng.randrange(len(endpoints))]
            key = None
            if sim.rng.random() < sim.arrivals.keyed:
                if self._keys and sim.rng.random() < sim.arrivals.redeliver:
                    key = self._keys[sim.rng.randrange(len(self._keys))]
                else:
                    key = f"delivery-{len(self._keys) + 1}"
                    self._keys.append(key)
            self._webhooks_sent += 1
            item.data = (endpoint.path, key, self._webhooks_sent)
            soon = sim.arrivals.redeliver_soon
            if key is not None and soon and sim.rng.random() < soon:
                again = sim.clock.now() + sim.arrivals.redeliver_within * sim.rng.random()
                self.push(again, Item(kind="webhook", data=item.data))
        path, key, number = item.data
        found = next((e for e in endpoints if e.path == path), None)
        if found is None:
            sim.note(f"webhook {path} -> 404 (endpoint gone)")
            return
        await self._deliver(found, key, number)

    async def _cli_run(self, item: Item) -> None:
        """``ductile run`` of a plugin (a scheduled one when there is any), drawn the first time."""
        sim = self._sim
        assert sim.engine is not None
        if item.data is None:
            names = sorted(n for n, p in sim.config.plugins.items() if p.all_schedules) or sorted(
                sim.config.plugins
            )
            if not names:
                return
            item.data = names[sim.rng.randrange(len(names))]
        try:
            result = await sim.engine.enqueue(item.data, command=Command.POLL, submitted_by=SubmittedBy.CLI)
        except EnqueueRefusedError as e:
            sim.note(f"cli run {item.data} refused: {e}")
            return
        sim.monitor.ack(result.job_id, "cli")

    async def _deliver(self, endpoint: Endpoint, key: str | None, number: int) -> None:
        sim = self._sim
        assert sim.engine is not None
        delivery = Webhook(endpoint=endpoint, payload={"delivery": number}, headers={}, dedupe_key=key)
        result = await sim.engine.submit(delivery)
        sim.monitor.ack(result.job_id, "webhook")
