"""Values the tests build over and over: jobs, manifests, configs and routes.

The engine's tests place every plugin under :data:`PLUGINS_DIR` with the
entrypoint ``run`` (what :class:`~ductile.fakes.catalog.DictCatalog` gives a
config whose ``plugins_dir`` is :data:`PLUGINS_DIR`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ductile.domain.config import Config, PluginConfig, ServiceConfig
from ductile.domain.job import Job
from ductile.domain.plugin import CommandSpec, CommandType, FactOutput, Manifest
from ductile.domain.routing import Route
from ductile.domain.schedule import Schedule
from ductile.fakes.catalog import DictCatalog

BERLIN = ZoneInfo("Europe/Berlin")
PLUGINS_DIR = "/srv/ductile/plugins"
#: When a built job was created, unless the test says otherwise.
JOB_CREATED_AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


# --------------------------------------------------------------------------- jobs


def job(
    job_id: str = "j",
    plugin: str = "p",
    command: str = "poll",
    *,
    created_at: datetime = JOB_CREATED_AT,
    **fields: Any,
) -> Job:
    """A job as a value (queued unless ``fields`` say otherwise); any other field by keyword."""
    return Job(id=job_id, plugin=plugin, command=command, created_at=created_at, **fields)


# --------------------------------------------------------------------------- plugins and config


def manifest(name: str, *commands: str, version: str = "1.0.0", required: tuple[str, ...] = ()) -> Manifest:
    return Manifest(
        name=name,
        version=version,
        protocol=1,
        entrypoint="run",
        commands=frozenset(commands or ("poll", "handle")),
        required_keys=required,
    )


def v2_manifest(
    name: str, *commands: str, facts: tuple[FactOutput, ...] = (), concurrency_safe: bool = True
) -> Manifest:
    """A protocol-2 manifest (the upstream ecosystem's format) with these commands (each ``write``)."""
    names = commands or ("poll", "handle")
    return Manifest(
        name=name,
        version="2.0.0",
        protocol=2,
        entrypoint="run",
        commands=frozenset(names),
        manifest_format=2,
        concurrency_safe=concurrency_safe,
        command_specs=tuple(CommandSpec(name=c, type=CommandType.WRITE) for c in names),
        fact_outputs=facts,
    )


def directory(name: str) -> str:
    return f"{PLUGINS_DIR}/{name}"


def executable(name: str) -> str:
    return f"{PLUGINS_DIR}/{name}/run"


def every(interval: timedelta, **kw: Any) -> Schedule:
    return Schedule(tz=BERLIN, every=interval, **kw)


def make_config(
    *plugins: PluginConfig,
    routes: Iterable[Route] = (),
    tick_interval: timedelta = timedelta(seconds=60),
    retention: timedelta = timedelta(days=30),
) -> Config:
    return Config(
        service=ServiceConfig(
            state_dir="/srv/ductile/state", tick_interval=tick_interval, job_log_retention=retention
        ),
        plugins_dir=PLUGINS_DIR,
        plugins={p.name: p for p in plugins},
        routes=tuple(routes),
    )


def route(source: str, event_type: str, target: str) -> Route:
    return Route(source=source, event_type=event_type, target=target)


def two_plugins(**alpha: Any) -> tuple[Config, DictCatalog]:
    catalog = DictCatalog(manifest("alpha", "poll", "handle"), manifest("beta", "poll", "handle"))
    config = make_config(PluginConfig(name="alpha", **alpha), PluginConfig(name="beta"))
    return config, catalog
