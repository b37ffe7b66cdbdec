"""What goes wrong and what arrives from outside, as settings: crashes, webhook and CLI
arrivals, reloads. The crash switch (:mod:`~ductile.app.sim.proxies`) and the agenda
(:mod:`~ductile.app.sim.agenda`) carry them out."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

import attrs

from ductile.domain.config import Config

#: Where a port call crashes: before it is forwarded (it never happened) or after it
#: returned (it happened, but the caller never heard back).
CrashPoint = Literal["before", "after"]
CRASH_POINTS: tuple[CrashPoint, ...] = ("before", "after")


class SimulatedCrash(BaseException):
    """The process died at a port call. A BaseException, so no ``except Exception``
    in the engine can swallow it: like ``kill -9``, everything just stops."""

    def __init__(self, call: int, name: str, point: CrashPoint) -> None:
        super().__init__(f"simulated crash {point} call {call} ({name})")
        self.call = call
        self.name = name
        self.point = point


@attrs.frozen(kw_only=True)
class Faults:
    """What goes wrong, and until when."""

    #: Crash at this port call (1-based, counted over the whole run, every engine).
    crash_at: int | None = None
    crash_point: CrashPoint = "before"
    #: Or crash at each port call with this probability (the point drawn too).
    crash_rate: float = attrs.field(
        default=0.0, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )
    #: No more crashes after this many.
    max_crashes: int = attrs.field(default=3, validator=attrs.validators.ge(0))
    #: The restart comes up to this long after a crash (drawn; 0: at once).
    downtime: timedelta = timedelta(0)
    #: Faults stop this long after the start (None: at the end of the run).
    until: timedelta | None = None
    #: No crash within this long after the start or the previous crash (spreads them out).
    spacing: timedelta = timedelta(0)

    @property
    def any(self) -> bool:
        return (self.crash_at is not None or self.crash_rate > 0) and self.max_crashes > 0


@attrs.frozen(kw_only=True)
class Arrivals:
    """Work from outside the scheduler, at seeded random instants (a Poisson stream each)."""

    #: Webhook deliveries per simulated day, spread over the config's endpoints.
    webhooks_per_day: float = attrs.field(default=0.0, validator=attrs.validators.ge(0.0))
    #: ``ductile run <plugin>`` polls per simulated day, over the scheduled plugins.
    cli_per_day: float = attrs.field(default=0.0, validator=attrs.validators.ge(0.0))
    #: Share of webhook deliveries that carry a dedupe key (``dedupe_header``).
    keyed: float = attrs.field(default=0.5, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)])
    #: Share of keyed deliveries that reuse an earlier key (a redelivery).
    redeliver: float = attrs.field(
        default=0.3, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )
    #: Share of keyed deliveries sent again, the same, within :attr:`redeliver_within` (a
    #: sender that got no answer in time retries; it may meet the first job queued or running).
    redeliver_soon: float = attrs.field(
        default=0.0, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )
    redeliver_within: timedelta = timedelta(minutes=2)


@attrs.frozen(kw_only=True)
class Reload:
    """A configuration change mid-run: one of ``choices`` (label, config), drawn, at
    ``at`` after the start (drawn within the middle 80 % of the run when None)."""

    choices: tuple[tuple[str, Config], ...]
    at: timedelta | None = None


#: The defaults of a :class:`~ductile.app.sim.simulation.Simulation`: nothing goes wrong, nothing arrives.
NO_FAULTS = Faults()
NO_ARRIVALS = Arrivals()
