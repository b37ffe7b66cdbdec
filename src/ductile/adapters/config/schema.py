"""The shape of the config file: one class per YAML mapping, whose fields ARE its keys.

Where the file's shape differs from the domain value, a "doc" class mirrors
the YAML exactly and a builder turns it into the domain value (with the
cross-field checks: 'every' or 'cron', unique endpoint paths, unique
routes). Every doc field is optional and None means "not given": the
defaults live in the domain classes only. Domain classes read as they are
get per-field hooks and YAML names in :data:`OVERRIDES`. :func:`known_keys`
lists every accepted key path from the same tables.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta, tzinfo
from typing import Any, NewType, Union, get_args, get_origin, get_type_hints

import attrs
from cattrs.gen import override

from ductile.adapters.config.api_schema import ApiDoc, TokenDoc, build_api, build_token
from ductile.adapters.config.hooks import (
    ClockTime,
    Count,
    Cron,
    DirPath,
    Interval,
    Jitter,
    JsonObject,
    Listen,
    PluginTable,
    StoreUrl,
    UserName,
    UsesName,
    count_hook,
    current_context,
    endpoint_path_hook,
    event_type_hook,
    header_hook,
    json_object_hook,
    plugin_name_hook,
    secret_hook,
    size_hook,
)
from ductile.adapters.config.messages import Problem, shorten
from ductile.adapters.config.plugin_hooks import (
    EnvName,
    EnvValues,
    Instant,
    ScheduledCommand,
    ScheduleId,
    TimeoutTable,
    Weekdays,
)
from ductile.domain import lifecycle
from ductile.domain.breaker import BreakerPolicy
from ductile.domain.config import (
    DEFAULT_PLUGINS_DIR,
    DEFAULT_STATE_DIR,
    ApiConfig,
    ApiToken,
    Config,
    Endpoint,
    EnvSettings,
    LogLevel,
    Notify,
    PluginConfig,
    ServiceConfig,
    StoreConfig,
    UiConfig,
    WebhooksConfig,
)
from ductile.domain.errors import ScheduleError
from ductile.domain.plugin.alias import find_cycle
from ductile.domain.protocol import EmittedEvent
from ductile.domain.retry import RetryPolicy
from ductile.domain.routing import Route
from ductile.domain.schedule import CatchUp, IfRunning, Schedule, Window
from ductile.domain.suggest import did_you_mean

#: Top-level keys with this prefix are ignored: a place to keep YAML anchors.
EXTENSION_PREFIX = "x-"
#: Reserved by the health endpoint (D20) on the webhook listener.
HEALTH_PATH = "/healthz"
#: An entry of ``schedules:`` (a :class:`Schedule` read with its ``id``).
NamedSchedule = NewType("NamedSchedule", Schedule)


@attrs.frozen(kw_only=True)
class _EnvDoc:
    pass_: tuple[EnvName, ...] | None = None
    set: EnvValues | None = None


@attrs.frozen(kw_only=True)
class _ServiceDoc:
    state_dir: DirPath | None = None
    tick_interval: timedelta | None = None
    dedupe_ttl: timedelta | None = None
    job_log_retention: timedelta | None = None
    log_level: LogLevel | None = None
    max_workers: Count | None = None
    max_route_depth: Count | None = None
    plugin_env: EnvSettings | None = None
    plugin_user: UserName | None = None


@attrs.frozen(kw_only=True)
class _StoreDoc:
    url: StoreUrl | None = None
    lease: timedelta | None = None
    heartbeat: timedelta | None = None


@attrs.frozen(kw_only=True)
class _WindowDoc:
    start: ClockTime
    end: ClockTime


@attrs.frozen(kw_only=True)
class _ScheduleDoc:
    every: Interval | None = None
    cron: Cron | None = None
    at: Instant | None = None
    after: Jitter | None = None
    jitter: Jitter | None = None
    preferred_window: Window | None = None
    not_on: Weekdays | None = None
    timezone: tzinfo | None = None
    catch_up: CatchUp | None = None
    if_running: IfRunning | None = None
    command: ScheduledCommand | None = None
    payload: JsonObject | None = None
    emit: EmittedEvent | None = None


@attrs.frozen(kw_only=True)
class _ScheduleEntryDoc(_ScheduleDoc):
    id: ScheduleId


@attrs.frozen(kw_only=True)
class PluginDoc:
    enabled: bool | None = None
    uses: UsesName | None = None
    schedule: Schedule | None = None
    schedules: tuple[NamedSchedule, ...] | None = None
    config: JsonObject | None = None
    env: EnvSettings | None = None
    retry: RetryPolicy | None = None
    timeouts: TimeoutTable | None = None
    circuit_breaker: BreakerPolicy | None = None
    max_outstanding_polls: Count | None = None
    notify: Notify | None = None
    parallelism: Count | None = None
    user: UserName | None = None


@attrs.frozen(kw_only=True)
class _WebhooksDoc:
    listen: Listen | None = None
    endpoints: tuple[Endpoint, ...] | None = None


@attrs.frozen(kw_only=True)
class ConfigDoc:
    service: ServiceConfig | None = None
    plugins_dir: DirPath | None = None
    plugin_roots: tuple[DirPath, ...] | None = None
    plugins: PluginTable | None = None
    routes: tuple[Route, ...] | None = None
    webhooks: WebhooksConfig | None = None
    store: StoreConfig | None = None
    api: ApiConfig | None = None
    ui: UiConfig | None = None


#: Domain classes read as they are, with per-field hooks (and YAML names).
OVERRIDES: dict[type, dict[str, Any]] = {
    RetryPolicy: {"max_attempts": override(struct_hook=count_hook)},
    BreakerPolicy: {"threshold": override(struct_hook=count_hook)},
    _EnvDoc: {"pass_": override(rename="pass")},
    UiConfig: {},
    Route: {
        "source": override(rename="from", struct_hook=plugin_name_hook),
        "event_type": override(struct_hook=event_type_hook),
        "target": override(rename="to", struct_hook=plugin_name_hook),
        "command": override(omit=True),
    },
    Endpoint: {
        "path": override(struct_hook=endpoint_path_hook),
        "plugin": override(struct_hook=plugin_name_hook),
        "secret": override(struct_hook=secret_hook),
        "signature_header": override(struct_hook=header_hook),
        "max_body_size": override(struct_hook=size_hook),
        "event_type": override(struct_hook=event_type_hook),
        "dedupe_header": override(struct_hook=header_hook),
    },
    EmittedEvent: {
        "type": override(struct_hook=event_type_hook),
        "payload": override(struct_hook=json_object_hook),
        # A fixed dedupe key on a recurring timer would swallow every run after the first.
        "dedupe_key": override(omit=True),
    },
}
#: Attribute name -> YAML key, for messages.
RENAMED: dict[Any, dict[str, str]] = {Route: {"source": "from", "target": "to"}, _EnvDoc: {"pass_": "pass"}}


def allowed_keys(cl: Any) -> list[str]:
    """The YAML keys of a doc or domain class (renamed, omitted fields left out), in field order."""
    omitted = {name for name, o in OVERRIDES.get(cl, {}).items() if o.omit}
    renamed = RENAMED.get(cl, {})
    if not attrs.has(cl):  # pragma: no cover - only attrs classes forbid extra keys
        return []
    return [renamed.get(a.name, a.name) for a in attrs.fields(cl) if a.init and a.name not in omitted]


def _given(doc: Any) -> dict[str, Any]:
    """The fields of a doc that the file gave (not None)."""
    return {a.name: getattr(doc, a.name) for a in attrs.fields(type(doc)) if getattr(doc, a.name) is not None}


def _resolve_dir(text: str) -> str:
    """``~`` expanded, relative to the config file's directory, normalized."""
    context = current_context()
    if text == "~" or text.startswith("~/"):
        home = context.env.get("HOME") or os.path.expanduser("~")
        text = home + text[1:]
    else:
        text = os.path.expanduser(text)
    return os.path.normpath(os.path.join(context.base_dir, text))


def _build_service(doc: _ServiceDoc) -> ServiceConfig:
    given = _given(doc)
    given["state_dir"] = _resolve_dir(doc.state_dir or DEFAULT_STATE_DIR)
    return ServiceConfig(**given)


def _build_store(doc: _StoreDoc) -> StoreConfig:
    store = StoreConfig(**_given(doc))
    if store.heartbeat <= timedelta(0):
        raise Problem("the heartbeat must be longer than 0s", "heartbeat")
    if store.heartbeat * 3 > store.lease:
        raise Problem(
            f"the lease ({_seconds(store.lease)}) must be at least three heartbeats "
            f"({_seconds(store.heartbeat)} each): a node renews its lease every heartbeat, and fences "
            "itself when two thirds of it passed without a renewal",
            "lease" if doc.lease is not None else "heartbeat",
        )
    return store


def _seconds(value: timedelta) -> str:
    return f"{value.total_seconds():g}s"


def _build_window(doc: _WindowDoc) -> Window:
    try:
        return Window(doc.start, doc.end)
    except ScheduleError as e:
        raise Problem(str(e), "end") from None


def _build_schedule(doc: _ScheduleDoc) -> Schedule:
    kinds = [k for k in ("every", "cron", "at", "after") if getattr(doc, k) is not None]
    if not kinds:
        raise Problem(
            "a schedule needs one of 'every' (e.g. every: 6h), 'cron' (e.g. cron: \"30 7 * * 1-5\"), "
            "'at' (a time) or 'after' (a delay from start)"
        )
    if len(kinds) > 1:
        raise Problem(f"give one of 'every', 'cron', 'at' or 'after', not {' and '.join(kinds)}", kinds[1])
    if doc.emit is not None and doc.command is not None:
        raise Problem("give either 'command' (run the plugin) or 'emit' (fire an event), not both", "emit")
    if doc.emit is not None and doc.payload is not None:
        raise Problem("'payload' is a job's payload; a timer's event carries 'emit.payload'", "payload")
    if doc.not_on is not None and (doc.at is not None or doc.after is not None):
        raise Problem("'not_on' is for recurring schedules ('every' or 'cron'), not one-shots", "not_on")
    given = _given(doc)
    given["tz"] = given.pop("timezone", None) or current_context().local_tz
    window = given.pop("preferred_window", None)
    if window is not None:
        given["window"] = window
    if doc.at is not None and doc.at.tzinfo is None:
        given["at"] = doc.at.replace(tzinfo=given["tz"])
    try:
        return Schedule(**given)
    except ScheduleError as e:
        raise Problem(str(e), *(("jitter",) if doc.jitter is not None else ())) from None


def build_plugin(name: str, doc: PluginDoc) -> PluginConfig:
    """One entry of the ``plugins`` table."""
    given = _given(doc)
    if doc.schedule is not None and doc.schedules is not None:
        raise Problem("give 'schedule' (one) or 'schedules' (a list), not both", "schedules")
    seen: dict[str, int] = {}
    for index, entry in enumerate(doc.schedules or ()):
        if entry.id in seen:
            raise Problem(
                f"the id '{entry.id}' is already used by schedules[{seen[entry.id]}]",
                "schedules",
                index,
                "id",
            )
        seen[entry.id] = index
    return PluginConfig(name=name, **given)


def _build_env(doc: _EnvDoc) -> EnvSettings:
    return EnvSettings(passed=doc.pass_, values=doc.set)


def _build_webhooks(doc: _WebhooksDoc) -> WebhooksConfig:
    given: dict[str, Any] = {}
    if doc.listen is not None:
        given["host"], given["port"] = doc.listen
    endpoints = doc.endpoints or ()
    seen: dict[str, int] = {}
    for index, endpoint in enumerate(endpoints):
        if endpoint.path == HEALTH_PATH:
            raise Problem(
                f"{HEALTH_PATH} is the health endpoint; choose another path", "endpoints", index, "path"
            )
        if endpoint.path in seen:
            raise Problem(
                f"path {shorten(endpoint.path)} is already used by endpoints[{seen[endpoint.path]}]",
                "endpoints",
                index,
                "path",
            )
        seen[endpoint.path] = index
    return WebhooksConfig(endpoints=endpoints, **given)


#: Domain values read through a doc class (whose fields are the allowed keys) and a builder.
BUILT_FROM: dict[Any, tuple[type, Callable[[Any], Any]]] = {
    ApiToken: (TokenDoc, build_token),
    ApiConfig: (ApiDoc, build_api),
    ServiceConfig: (_ServiceDoc, _build_service),
    StoreConfig: (_StoreDoc, _build_store),
    Window: (_WindowDoc, _build_window),
    Schedule: (_ScheduleDoc, _build_schedule),
    NamedSchedule: (_ScheduleEntryDoc, _build_schedule),
    EnvSettings: (_EnvDoc, _build_env),
    WebhooksConfig: (_WebhooksDoc, _build_webhooks),
}


def known_keys() -> list[str]:
    """Every key path the config file accepts, in schema order (for the docs and their test).

    Dotted paths with ``<name>`` for a plugin's name and ``[]`` for a list
    item: ``plugins.<name>.retry.max_attempts``, ``webhooks.endpoints[].path``.
    A mapping or list is listed itself before its keys; the free-form mappings
    (``plugins.<name>.config``, ``...emit.payload``) are listed without their
    contents. Computed from the same doc classes, overrides and renames the
    converter reads with, so it cannot drift from what the reader accepts.
    Top-level ``x-`` keys (ignored) are not listed.
    """
    out: list[str] = []
    _walk_keys(ConfigDoc, "", out)
    return out


def _walk_keys(cl: Any, prefix: str, out: list[str]) -> None:
    hints = get_type_hints(cl)
    omitted = {name for name, o in OVERRIDES.get(cl, {}).items() if o.omit}
    renamed = RENAMED.get(cl, {})
    for a in attrs.fields(cl):
        if not a.init or a.name in omitted:
            continue
        path = f"{prefix}.{renamed.get(a.name, a.name)}" if prefix else renamed.get(a.name, a.name)
        out.append(path)
        t = hints[a.name]
        if is_optional(t):
            t = next(arg for arg in get_args(t) if arg is not type(None))
        if is_tuple_of(t):
            t, path = get_args(t)[0], path + "[]"
        if t is PluginTable:
            out.append(f"{path}.<name>")
            _walk_keys(PluginDoc, f"{path}.<name>", out)
        elif t is TimeoutTable:
            out += [f"{path}.{command}" for command in ("poll", "handle", "health", "init", "<command>")]
        elif t in BUILT_FROM:
            _walk_keys(BUILT_FROM[t][0], path, out)
        elif attrs.has(t):
            _walk_keys(t, path, out)


def without_extensions(value: object) -> object:
    """The document without its top-level ``x-...`` keys (anchor storage, ignored)."""
    if not isinstance(value, dict):
        return value
    return {key: item for key, item in value.items() if not key.startswith(EXTENSION_PREFIX)}


def build_config(doc: ConfigDoc) -> Config:
    """The whole config, with defaulted sections, resolved directories and no repeated route."""
    routes = doc.routes or ()
    seen: dict[Route, int] = {}
    for index, route in enumerate(routes):
        if route in seen:
            raise Problem(f"the same route as routes[{seen[route]}]", "routes", index)
        seen[route] = index
        if route.source == lifecycle.SOURCE and route.event_type not in lifecycle.TYPES:
            raise Problem(
                f"ductile emits no '{route.event_type}' event"
                f"{did_you_mean(route.event_type, lifecycle.TYPES)}; its lifecycle events are "
                f"{', '.join(sorted(lifecycle.TYPES))}",
                "routes",
                index,
                "event_type",
            )
    service = doc.service if doc.service is not None else _build_service(_ServiceDoc())
    plugins: dict[str, PluginConfig] = doc.plugins or {}
    cycle = find_cycle({name: pc.uses for name, pc in plugins.items() if pc.uses is not None})
    if cycle is not None:
        raise Problem(
            f"an alias cycle: {' -> '.join(cycle)} (an alias must end at a plugin)", cycle[0], "uses"
        )
    roots = _roots(doc)
    return Config(
        service=service,
        plugins_dir=roots[0],
        plugins=plugins,
        routes=routes,
        webhooks=doc.webhooks,
        store=doc.store if doc.store is not None else StoreConfig(),
        api=doc.api,
        ui=doc.ui,
        source=current_context().source,
        plugin_roots=roots if doc.plugin_roots is not None else (),
    )


def _roots(doc: ConfigDoc) -> tuple[str, ...]:
    """``plugins_dir`` (when given) then ``plugin_roots``, resolved, each once; ``./plugins`` alone
    when neither is given."""
    written = [str(d) for d in (doc.plugins_dir,) if d is not None] + [str(d) for d in doc.plugin_roots or ()]
    if doc.plugin_roots is not None and not doc.plugin_roots:
        raise Problem("give at least one folder (or leave 'plugin_roots' out)", "plugin_roots")
    roots = list(dict.fromkeys(_resolve_dir(text) for text in written or [DEFAULT_PLUGINS_DIR]))
    return tuple(roots)


def is_optional(t: Any) -> bool:
    """``t`` is ``X | None``."""
    args = get_args(t)
    return get_origin(t) in (Union, type(int | None)) and len(args) == 2 and type(None) in args


def is_tuple_of(t: Any) -> bool:
    """``t`` is ``tuple[X, ...]`` (a YAML list)."""
    args = get_args(t)
    return get_origin(t) is tuple and len(args) == 2 and args[1] is Ellipsis
