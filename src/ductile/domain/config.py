"""The operator's configuration as values (the YAML reader lives in adapters).

Every default of SPEC.md lives here, once.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import attrs

from ductile.domain.breaker import BreakerPolicy
from ductile.domain.dedupe import DEFAULT_DEDUPE_TTL
from ductile.domain.errors import ScheduleError
from ductile.domain.job import Command, Job, SubmittedBy
from ductile.domain.lifecycle import Alerts
from ductile.domain.quantities import format_duration
from ductile.domain.retry import RetryPolicy
from ductile.domain.routing import Route, Target
from ductile.domain.schedule import DEFAULT_SCHEDULE_ID, Schedule
from ductile.domain.scopes import Scope

DEFAULT_TICK = timedelta(seconds=60)
DEFAULT_RETENTION = timedelta(days=30)
DEFAULT_MAX_BODY = 1024 * 1024
DEFAULT_SIGNATURE_HEADER = "X-Hub-Signature-256"
DEFAULT_LISTEN = ("127.0.0.1", 8081)
#: The operator API's listener: loopback by default (the API should not be exposed).
DEFAULT_API_LISTEN = ("127.0.0.1", 8080)
#: The shortest API token accepted (bytes).
MIN_TOKEN_BYTES = 16
#: Where ``service.state_dir`` and ``plugins_dir`` point when the file does not
#: say; relative paths are resolved against the config file's directory.
DEFAULT_STATE_DIR = "./state"
DEFAULT_PLUGINS_DIR = "./plugins"
KILL_GRACE = timedelta(seconds=5)
#: Between a claim and its spawn (reading the plugin's state, the trust check, the fork): part of
#: a claim's hold, so that ``deadline_at`` is never earlier than the plugin's own deadline + grace.
SPAWN_ALLOWANCE = timedelta(seconds=2)
#: A shared store's lease of one node (ADR 0034), and how often it is renewed.
DEFAULT_LEASE = timedelta(seconds=15)
DEFAULT_HEARTBEAT = timedelta(seconds=3)
#: How many routing hops a chain of events may take (``service.max_route_depth``).
DEFAULT_MAX_ROUTE_DEPTH = 20
#: The timeout of a command a v2 manifest defines (``timeouts.<command>`` changes it).
DEFAULT_CUSTOM_TIMEOUT = timedelta(seconds=60)
_STANDARD_COMMANDS = frozenset(c.value for c in Command)


class LogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


@attrs.frozen(kw_only=True)
class Timeouts:
    poll: timedelta = timedelta(seconds=60)
    handle: timedelta = timedelta(seconds=120)
    health: timedelta = timedelta(seconds=10)
    init: timedelta = timedelta(seconds=30)
    #: The commands a v2 manifest defines, by name (:data:`DEFAULT_CUSTOM_TIMEOUT` unless set).
    custom: Mapping[str, timedelta] = attrs.field(factory=dict)

    def for_command(self, command: str) -> timedelta:
        if command in _STANDARD_COMMANDS:
            value: timedelta = getattr(self, command)
            return value
        return self.custom.get(command, DEFAULT_CUSTOM_TIMEOUT)

    def longest(self, commands: Iterable[str] = ()) -> timedelta:
        """The longest timeout of the standard commands and of ``commands`` (a v2 manifest's)."""
        return max(self.poll, self.handle, self.health, self.init, *(self.for_command(c) for c in commands))


@attrs.frozen(kw_only=True)
class EnvSettings:
    """What a plugin's environment holds beyond the allow-list (``env``, ``service.plugin_env``).

    None means "not given here": a plugin's ``env`` takes each of ``pass``
    and ``set`` from ``service.plugin_env`` unless it gives its own.
    """

    #: Names of the daemon's variables passed on as they are (when the daemon has them).
    passed: tuple[str, ...] | None = None
    #: Variables set to these values (never logged, never stored with a job).
    values: Mapping[str, str] | None = attrs.field(default=None, repr=False)

    def over(self, default: EnvSettings) -> EnvSettings:
        """These settings, each part not given taken from ``default``."""
        return EnvSettings(
            passed=self.passed if self.passed is not None else default.passed,
            values=self.values if self.values is not None else default.values,
        )


@attrs.frozen(kw_only=True)
class ServiceConfig:
    #: Absolute; relative paths are resolved against the config file's folder.
    state_dir: str
    tick_interval: timedelta = DEFAULT_TICK
    dedupe_ttl: timedelta = DEFAULT_DEDUPE_TTL
    job_log_retention: timedelta = DEFAULT_RETENTION
    log_level: LogLevel = LogLevel.INFO
    #: D14 [A2]: how many jobs this daemon runs at once (1: one at a time, FIFO).
    max_workers: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    #: A routed chain deeper than this is not extended (the parent still succeeds).
    max_route_depth: int = attrs.field(default=DEFAULT_MAX_ROUTE_DEPTH, validator=attrs.validators.ge(1))
    #: The ``env`` of every plugin that does not give its own.
    plugin_env: EnvSettings = EnvSettings()
    #: The user plugins run as when ductile runs as root (a name or a uid); None: ductile's own.
    plugin_user: str | None = None


@attrs.frozen(kw_only=True)
class Notify:
    """``plugins.<name>.notify``: which of the plugin's jobs' news are lifecycle events beyond
    ``job.dead`` (which always is)."""

    #: Every failed attempt is a ``job.failed`` event, not only the last.
    on_failed_attempt: bool = False


@attrs.frozen(kw_only=True)
class PluginConfig:
    name: str
    enabled: bool = True
    #: The shorthand for one schedule, ``default`` (give this or ``schedules``, not both).
    schedule: Schedule | None = None
    config: Mapping[str, Any] = attrs.field(factory=dict)
    retry: RetryPolicy = RetryPolicy()
    timeouts: Timeouts = Timeouts()
    circuit_breaker: BreakerPolicy = BreakerPolicy()
    max_outstanding_polls: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    #: D14 [A2]: how many of the plugin's jobs may run at once (its lane's width).
    parallelism: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    #: An alias: this plugin runs the plugin named here, as a new instance.
    uses: str | None = None
    #: Several schedules, each with its own id.
    schedules: tuple[Schedule, ...] = ()
    env: EnvSettings = EnvSettings()
    notify: Notify = Notify()
    #: The user this plugin runs as (overrides ``service.plugin_user``).
    user: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.schedule is not None and self.schedules:
            raise ScheduleError("give 'schedule' (one) or 'schedules' (a list), not both")
        if self.schedule is not None and self.schedule.id != DEFAULT_SCHEDULE_ID:
            raise ScheduleError(f"the 'schedule' shorthand is the schedule '{DEFAULT_SCHEDULE_ID}'")
        seen: set[str] = set()
        for entry in self.schedules:
            if entry.id in seen:
                raise ScheduleError(f"two schedules have the id '{entry.id}'")
            seen.add(entry.id)

    @property
    def all_schedules(self) -> tuple[Schedule, ...]:
        """Every schedule of the plugin: the shorthand's, or the list's."""
        return (self.schedule,) if self.schedule is not None else self.schedules

    def schedule_by_id(self, schedule_id: str) -> Schedule | None:
        return next((s for s in self.all_schedules if s.id == schedule_id), None)


@attrs.frozen(kw_only=True)
class Endpoint:
    path: str
    plugin: str
    secret: str = attrs.field(repr=False)
    signature_header: str = DEFAULT_SIGNATURE_HEADER
    max_body_size: int = DEFAULT_MAX_BODY
    event_type: str = "webhook"
    dedupe_header: str | None = None


@attrs.frozen(kw_only=True)
class WebhooksConfig:
    host: str = DEFAULT_LISTEN[0]
    port: int = DEFAULT_LISTEN[1]
    endpoints: tuple[Endpoint, ...] = ()


@attrs.frozen(kw_only=True)
class StoreConfig:
    """Where jobs are kept: SQLite in ``service.state_dir`` (no URL), or a shared PostgreSQL."""

    #: ``postgresql://...``; None: SQLite under ``service.state_dir``.
    url: str | None = attrs.field(default=None, repr=False)
    #: A node whose lease ran out is dead to the others (ADR 0034).
    lease: timedelta = DEFAULT_LEASE
    heartbeat: timedelta = DEFAULT_HEARTBEAT

    @property
    def shared(self) -> bool:
        return self.url is not None


@attrs.frozen(kw_only=True)
class ApiToken:
    """One bearer token of the operator API: its name (logged, never the token), its
    scopes, and the token itself or only its SHA-256 digest."""

    name: str
    scopes: tuple[Scope, ...]
    #: The token's bytes, when the config holds it (compared in constant time).
    secret: bytes | None = attrs.field(default=None, repr=False)
    #: SHA-256 of the token, when the config holds only that.
    sha256: bytes | None = attrs.field(default=None, repr=False)


@attrs.frozen(kw_only=True)
class ApiConfig:
    host: str = DEFAULT_API_LISTEN[0]
    port: int = DEFAULT_API_LISTEN[1]
    tokens: tuple[ApiToken, ...] = ()


@attrs.frozen(kw_only=True)
class UiConfig:
    """The dashboard (issue 16), served under ``/ui/`` on the API's listener."""

    enabled: bool = True


@attrs.frozen(kw_only=True)
class Config:
    service: ServiceConfig
    #: Absolute. The first plugin root.
    plugins_dir: str
    plugins: Mapping[str, PluginConfig] = attrs.field(factory=dict)
    routes: tuple[Route, ...] = ()
    webhooks: WebhooksConfig | None = None
    store: StoreConfig = StoreConfig()
    #: The operator HTTP API (issue 14); None: no API listener.
    api: ApiConfig | None = None
    #: The dashboard's section as written; None when absent. The dashboard is
    #: served only when ``api`` is configured too (:attr:`ui_enabled`).
    ui: UiConfig | None = None
    #: Where it was read from, when it came from a file.
    source: str | None = None
    #: Every plugin root, in search order (absolute); empty means ``(plugins_dir,)``.
    plugin_roots: tuple[str, ...] = ()

    @property
    def ui_enabled(self) -> bool:
        """``ui.enabled``, true when the section is absent (the dashboard is on with ``api``)."""
        return self.ui is None or self.ui.enabled

    @property
    def roots(self) -> tuple[str, ...]:
        """Where plugins are looked for, in order: the first root holding a name wins."""
        return self.plugin_roots or (self.plugins_dir,)

    def env_of(self, name: str) -> EnvSettings:
        """The environment settings of plugin ``name``: its own over ``service.plugin_env``."""
        return self.plugin(name).env.over(self.service.plugin_env)

    def plugin(self, name: str) -> PluginConfig:
        """The plugin's settings; a plugin on disk without an entry gets the defaults."""
        return self.plugins.get(name) or PluginConfig(name=name)

    def run_as(self, name: str) -> tuple[str, str] | None:
        """The user plugin ``name`` runs as and the setting that says so; None: ductile's own."""
        own = self.plugin(name).user
        if own is not None:
            return own, f"plugins.{name}.user"
        if self.service.plugin_user is not None:
            return self.service.plugin_user, "service.plugin_user"
        return None

    def new_job(
        self,
        plugin: str,
        command: str,
        *,
        job_id: str,
        now: datetime,
        submitted_by: SubmittedBy,
        payload: dict[str, Any] | None = None,
        dedupe_key: str | None = None,
        schedule_id: str | None = None,
    ) -> Job:
        """A fresh queued job for ``plugin``, with the plugin's retry limit."""
        return Job(
            id=job_id,
            plugin=plugin,
            command=command,
            payload=payload or {},
            max_attempts=self.plugin(plugin).retry.max_attempts,
            submitted_by=submitted_by,
            dedupe_key=dedupe_key,
            created_at=now,
            schedule_id=schedule_id,
        )

    def targets(self, loaded: frozenset[str] | set[str]) -> dict[str, Target]:
        """Routing targets: loaded, enabled plugins, with their retry limits."""
        return {
            name: Target(max_attempts=self.plugin(name).retry.max_attempts)
            for name in loaded
            if self.plugin(name).enabled
        }

    def alerts(self, loaded: frozenset[str] | set[str]) -> Alerts:
        """Where lifecycle events go (the routes ``from: ductile``), for the plugins ``loaded``."""
        return Alerts.of(
            self.routes,
            self.targets(loaded),
            on_failed_attempt=[n for n, pc in self.plugins.items() if pc.notify.on_failed_attempt],
            dedupe_ttl=self.service.dedupe_ttl,
        )

    def advisories(self) -> tuple[str, ...]:
        """Settings that are valid but probably not what the operator meant, each naming its keys.

        Reported by ``ductile config check`` and logged at WARN when the daemon
        starts or reloads; never a reason to refuse the config.
        """
        found: list[str] = []
        service = self.service
        if service.job_log_retention < service.dedupe_ttl:
            found.append(
                f"service.job_log_retention ({format_duration(service.job_log_retention)}) is shorter than "
                f"service.dedupe_ttl ({format_duration(service.dedupe_ttl)}): a succeeded job deleted by "
                "retention no longer blocks its duplicates, so dedupe holds for "
                f"{format_duration(service.job_log_retention)} at most"
            )
        for name, settings in sorted(self.plugins.items()):
            if settings.parallelism > service.max_workers:
                found.append(
                    f"plugins.{name}.parallelism ({settings.parallelism}) is more than "
                    f"service.max_workers ({service.max_workers}): {name} runs at most "
                    f"{service.max_workers} job(s) at once"
                )
        if self.api is None and self.ui is not None and self.ui.enabled:
            found.append(
                "ui.enabled is true but there is no api section: the dashboard is served on the "
                "API's listener, so without one there is no dashboard"
            )
        store = self.store
        if not store.shared and (store.lease != DEFAULT_LEASE or store.heartbeat != DEFAULT_HEARTBEAT):
            found.append(
                "store.lease and store.heartbeat only apply to a shared store (store.url): "
                "with SQLite, one daemon owns the database and nothing is leased"
            )
        return tuple(found)
