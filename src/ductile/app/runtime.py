"""The engine's view of the world at one moment: one config, one set of plugins.

A :class:`Runtime` is immutable and swapped whole on reload (D13: old or new,
never a mix). A job captures the runtime it was claimed under and finishes
with it, whatever reloads happen meanwhile.

It is also the one place that says what state a plugin is in, and why
(:meth:`Runtime.status_of`), and whether its ``init`` is due
(:meth:`Runtime.init_status`).
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Any

import attrs

from ductile.domain.config import (
    KILL_GRACE,
    SPAWN_ALLOWANCE,
    Config,
    LogLevel,
    PluginConfig,
    StoreConfig,
    Timeouts,
)
from ductile.domain.job import Command
from ductile.domain.lanes import Lanes
from ductile.domain.lifecycle import Alerts
from ductile.domain.plugin import Discovery, Plugin, Refusal
from ductile.domain.routing import Target
from ductile.domain.schedule import Schedule, schedule_key
from ductile.domain.suggest import did_you_mean
from ductile.ports.store import InitRecord


class PluginState(enum.StrEnum):
    LOADED = "loaded"
    #: Loaded, but its ``init`` failed: not scheduled, its jobs fail fast.
    UNHEALTHY = "unhealthy"
    #: Found but not loaded: a check failed (see the reason).
    REFUSED = "refused"
    #: Switched off in the config.
    DISABLED = "disabled"
    #: Not a plugin ductile knows of (removed, or never there).
    ABSENT = "absent"


@attrs.frozen
class PluginStatus:
    state: PluginState
    #: Why it is refused or unhealthy; None otherwise.
    reason: str | None = None


class InitState(enum.StrEnum):
    #: The plugin has no ``init`` command.
    NONE = "none"
    #: Never run for this manifest and config (or they changed since): it runs at the next start or reload.
    PENDING = "pending"
    OK = "ok"
    #: The last run, for this manifest and config, failed: it runs again at the next start or reload.
    FAILED = "failed"


@attrs.frozen(kw_only=True)
class InitStatus:
    state: InitState
    #: What the stored record is judged against (see :func:`init_fingerprint`).
    fingerprint: str
    #: Why the plugin is unhealthy, when the last ``init`` failed.
    reason: str | None = None


@attrs.frozen(kw_only=True)
class Runtime:
    config: Config
    discovery: Discovery
    #: Plugins whose ``init`` failed: name -> reason. They are not scheduled,
    #: and their jobs fail fast with this reason until a reload fixes them.
    unhealthy: Mapping[str, str] = attrs.field(factory=dict)
    # Derived once (the runtime never changes): the dispatcher asks for the targets at
    # every settle and the scheduler for the schedules at every tick (bench/bench_sim.py).
    _targets: Mapping[str, Target] = attrs.field(init=False, eq=False, repr=False)
    _schedules: Mapping[str, Schedule] = attrs.field(init=False, eq=False, repr=False)
    _alerts: Alerts = attrs.field(init=False, eq=False, repr=False)
    _lanes: Lanes = attrs.field(init=False, eq=False, repr=False)
    _fingerprint: str = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_targets", MappingProxyType(self.config.targets(set(self.plugins))))
        object.__setattr__(self, "_alerts", self.config.alerts(set(self.plugins)))
        schedules: dict[str, Schedule] = {}
        for name in sorted(self.plugins):
            pc = self.settings(name)
            if pc.enabled and name not in self.unhealthy:
                for entry in pc.all_schedules:
                    schedules[schedule_key(name, entry.id)] = entry
        object.__setattr__(self, "_schedules", MappingProxyType(schedules))
        object.__setattr__(self, "_lanes", self._make_lanes())
        object.__setattr__(self, "_fingerprint", config_fingerprint(self.config, self.discovery))

    def _make_lanes(self) -> Lanes:
        widths: dict[str, int] = {}
        holds: dict[str, timedelta] = {}
        ceiling = self.config.service.max_workers
        for name, plugin in self.plugins.items():
            settings = self.settings(name)
            widths[name] = min(settings.parallelism, ceiling) if plugin.manifest.concurrency_safe else 1
            holds[name] = claim_hold(settings.timeouts, plugin.manifest.commands)
        return Lanes(widths=widths, default_width=1, holds=holds, default_hold=claim_hold(Timeouts()))

    @property
    def plugins(self) -> Mapping[str, Plugin]:
        return self.discovery.plugins

    @property
    def refused(self) -> tuple[Refusal, ...]:
        return self.discovery.refused

    def settings(self, name: str) -> PluginConfig:
        return self.config.plugin(name)

    def targets(self) -> Mapping[str, Target]:
        """Where routed events may go: loaded, enabled plugins (a read-only view)."""
        return self._targets

    def alerts(self) -> Alerts:
        """Where lifecycle events go under this runtime (the routes ``from: ductile``)."""
        return self._alerts
    def lanes(self) -> Lanes:
        """Each loaded plugin's lane width (its ``parallelism`` within ``service.max_workers``,
        1 when its manifest is not ``concurrency_safe``) and its claims' hold; any other
        plugin's jobs (they fail fast: not loaded) one at a time."""
        return self._lanes

    def fingerprint(self) -> str:
        """What nodes sharing a store must agree on (:func:`config_fingerprint`)."""
        return self._fingerprint

    def schedules(self) -> Mapping[str, Schedule]:
        """Schedules that may run, by index key ``<plugin>/<schedule id>``: loaded, enabled,
        healthy plugins only (a read-only view)."""
        return self._schedules

    def status_of(self, name: str) -> PluginStatus:
        """What state plugin ``name`` is in, and why.

        A plugin the catalog refused is refused whatever the config says (a
        disabled name without a directory included); a plugin that was not
        loaded and not refused is disabled when the config says so, else absent.
        """
        if name in self.plugins:
            if name in self.unhealthy:
                return PluginStatus(PluginState.UNHEALTHY, self.unhealthy[name])
            return PluginStatus(PluginState.LOADED)
        for refusal in self.refused:
            if refusal.name == name:
                return PluginStatus(PluginState.REFUSED, refusal.reason)
        if name in self.discovery.disabled or not self.settings(name).enabled:
            return PluginStatus(PluginState.DISABLED)
        return PluginStatus(PluginState.ABSENT)

    def why_not_runnable(self, name: str, command: str) -> str | None:
        """None when a job of (name, command) may be spawned now, else the reason."""
        status = self.status_of(name)
        if status.state is PluginState.LOADED:
            if self.plugins[name].supports(command):
                return None
            commands = ", ".join(sorted(self.plugins[name].manifest.commands))
            return f"plugin '{name}' does not support '{command}' (its manifest lists: {commands})"
        if status.state is PluginState.ABSENT:
            known = [*self.plugins, *(r.name for r in self.refused), *self.discovery.disabled]
            where = " or ".join(self.config.roots)
            return f"plugin '{name}' is not loaded (no such plugin in {where}){did_you_mean(name, known)}"
        if status.reason is None:
            return f"plugin '{name}' is {status.state}"
        return f"plugin '{name}' is {status.state}: {status.reason}"

    def init_status(self, name: str, record: InitRecord | None) -> InitStatus:
        """Whether loaded plugin ``name``'s ``init`` is due, given its stored ``record``.

        ``init`` runs when the plugin is first seen, when its manifest or its
        config changed (the fingerprint differs), or when it last failed.
        """
        plugin = self.plugins[name]
        fingerprint = init_fingerprint(plugin, self.settings(name))
        if not plugin.supports(Command.INIT):
            return InitStatus(state=InitState.NONE, fingerprint=fingerprint)
        if record is None or record.fingerprint != fingerprint:
            return InitStatus(state=InitState.PENDING, fingerprint=fingerprint)
        if not record.ok:
            reason = f"init failed: {record.error or 'no reason recorded'}"
            return InitStatus(state=InitState.FAILED, fingerprint=fingerprint, reason=reason)
        return InitStatus(state=InitState.OK, fingerprint=fingerprint)

    def grace(self) -> timedelta:
        """How late a due run may be before it counts as missed (ADR 0003)."""
        return max(2 * self.config.service.tick_interval, timedelta(seconds=60))


def config_fingerprint(config: Config, discovery: Discovery) -> str:
    """A digest of what every daemon sharing a store must run alike: the config without what
    is each host's own (its state directory and plugins folder, its log level and worker count,
    its listeners' addresses, the store's URL), and the plugins found (manifests, refusals).
    Secrets are in it (webhooks must verify alike), as a digest only."""
    service = attrs.evolve(config.service, state_dir="", log_level=LogLevel.INFO, max_workers=1)
    hooks = config.webhooks and attrs.evolve(config.webhooks, host="", port=0)
    api = config.api and attrs.evolve(config.api, host="", port=0)
    shared = attrs.evolve(
        config, service=service, webhooks=hooks, api=api, plugins_dir="", source=None, store=StoreConfig()
    )
    body = {
        "config": attrs.asdict(shared, value_serializer=_serialize),
        "plugins": {
            n: attrs.asdict(p.manifest, value_serializer=_serialize) for n, p in discovery.plugins.items()
        },
        "refused": sorted(r.name for r in discovery.refused),
    }
    raw = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def claim_hold(timeouts: Timeouts, commands: Iterable[str] = ()) -> timedelta:
    """How long a claim of the plugin may hold (``deadline_at - started_at``): the longest
    timeout of its commands, the kill grace after it, and the time a spawn may take to begin."""
    return timeouts.longest(commands) + KILL_GRACE + SPAWN_ALLOWANCE


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
