"""Run one built-in plugin (``uses: builtin:<name>``) as the dispatcher does, for the tests.

The plugin is loaded by discovery as the alias ``it`` of ``builtin:<name>``,
its request is :func:`spawn_request`'s, the real :class:`SubprocessSpawner`
runs it (its own process group, the daemon's interpreter), and what came back
goes through :func:`classify`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ductile.adapters.plugin_dir import discover
from ductile.adapters.spawner import SubprocessSpawner
from ductile.app.spawn import plugin_env, spawn_request
from ductile.domain.classify import Verdict, classify
from ductile.domain.config import PluginConfig, Timeouts


def run(
    name: str,
    config: dict[str, Any],
    command: str = "handle",
    *,
    event: dict[str, Any] | None = None,
    payload: dict[str, Any] | None = None,
    tmp: Path,
    state: dict[str, Any] | None = None,
) -> Verdict:
    """Run builtin ``name`` once, as the alias ``it``, and classify its end."""
    timeouts = Timeouts(handle=timedelta(seconds=30), poll=timedelta(seconds=30))
    settings = PluginConfig(name="it", uses=f"builtin:{name}", config=config, timeouts=timeouts)
    found = discover(str(tmp), {"it": settings})
    assert not found.refused, found.refused
    plugin = found.plugins["it"]
    assert plugin.interpreter == sys.executable
    request = spawn_request(
        plugin,
        command,
        job_id="job-1",
        attempt=1,
        settings=settings,
        state=state or {},
        now=datetime.now(UTC),
        base_env=plugin_env(os.environ),
        event=event,
        payload=payload,
        context={"ductile_plugin": "it"},
    )
    outcome = asyncio.run(SubprocessSpawner().run(request))
    return classify(outcome, timedelta(seconds=30), protocol=plugin.protocol)
