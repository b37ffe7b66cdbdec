#!/usr/bin/env python3
"""builtin:echo — answer with the config (and what the job carried): for trying things out.

Every run succeeds with its ``result`` the instance's config as JSON, and
emits ``<instance>.echo`` (``emit: false`` turns that off) whose payload holds
the config, the job's payload and, for ``handle``, the event it got: route it
on to see a chain move. Standard library only.
"""

from __future__ import annotations

import json
from typing import Any

from ductile import plugin


def echo(request: plugin.Request) -> plugin.Response:
    config = dict(request.config)
    body: dict[str, Any] = {"config": config, "payload": dict(request.payload)}
    if request.event is not None:
        body["event"] = dict(request.event.raw)
    events = []
    if request.config_bool("emit", True):
        instance = request.plugin or str(request.context.get("ductile_plugin", "echo"))
        events.append(plugin.event(f"{instance}.echo", body))
    return plugin.ok(events=events, result=json.dumps(config, sort_keys=True))


def health(request: plugin.Request) -> None:
    return None


if __name__ == "__main__":
    plugin.run({"poll": echo, "handle": echo, "health": health})
