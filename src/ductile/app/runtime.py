"""The engine's view of the world at one moment: one config, one set of plugins.

A :class:`Runtime` is immutable and swapped whole on reload (D13: old or new,
never a mix). A job captures the runtime it was claimed under and finishes
with it, whatever reloads happen meanwhile.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import attrs

from ductile.domain.config import Config, PluginConfig
from ductile.domain.plugin import Discovery, Plugin, Refusal
from ductile.domain.routing import Target
from ductile.domain.schedule import Schedule


@attrs.frozen(kw_only=True)
class Runtime:
    config: Config
    discovery: Discovery
    #: Plugins whose ``init`` failed: name -> reason. They are not scheduled,
    #: and their jobs fail fast with this reason until a reload fixes them.
    unhealthy: Mapping[str, str] = attrs.field(factory=dict)
    # Derived once (the runtime never changes): the dispatcher asks for the targets at
    # every settle and the scheduler for the schedules at every tick (bench/bench_sim.py).
    _targets: dict[str, Target] = attrs.field(init=False, eq=False, repr=False)
    _schedules: dict[str, Schedule] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_targets", self.config.targets(set(self.plugins)))
        schedules: dict[str, Schedule] = {}
        for name in self.plugins:
            pc = self.settings(name)
            if pc.enabled and pc.schedule is not None and name not in self.unhealthy:
                schedules[name] = pc.schedule
        object.__setattr__(self, "_schedules", schedules)

    @property
    def plugins(self) -> Mapping[str, Plugin]:
        return self.discovery.plugins

    @property
    def refused(self) -> tuple[Refusal, ...]:
        return self.discovery.refused

    def settings(self, name: str) -> PluginConfig:
        return self.config.plugin(name)

    def targets(self) -> dict[str, Target]:
        return dict(self._targets)

    def schedules(self) -> dict[str, Schedule]:
        """Schedules that may run: loaded, enabled, healthy plugins only."""
        return dict(self._schedules)

    def why_not_runnable(self, name: str, command: str) -> str | None:
        """None when a job of (name, command) may be spawned now, else the reason."""
        if name not in self.plugins:
            for refusal in self.refused:
                if refusal.name == name:
                    return f"plugin '{name}' is refused: {refusal.reason}"
            if name in self.discovery.disabled or not self.settings(name).enabled:
                return f"plugin '{name}' is disabled"
            return f"plugin '{name}' is not loaded (no such plugin in {self.config.plugins_dir})"
        if name in self.unhealthy:
            return f"plugin '{name}' is unhealthy: {self.unhealthy[name]}"
        if not self.plugins[name].supports(command):
            commands = ", ".join(sorted(self.plugins[name].manifest.commands))
            return f"plugin '{name}' does not support '{command}' (its manifest lists: {commands})"
        return None

    def grace(self) -> timedelta:
        """How late a due run may be before it counts as missed (ADR 0003)."""
        return max(2 * self.config.service.tick_interval, timedelta(seconds=60))


def init_fingerprint(plugin: Plugin, settings: PluginConfig) -> str:
    """Changes when what ``init`` depends on changes: the manifest or the plugin's config."""
    body: dict[str, Any] = {
        "manifest": attrs.asdict(plugin.manifest, value_serializer=_serialize),
        "config": dict(settings.config),
    }
    raw = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _serialize(_: object, __: object, value: Any) -> Any:
    if isinstance(value, frozenset):
        return sorted(value)
    return value
