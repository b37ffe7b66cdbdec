"""Plugins on disk for the tests: a plugin folder, the scripts that go in it, and one real run.

:func:`recorder` and :func:`gated` write what they saw into a
:class:`~tests.support.site.Site`'s ``out/`` folder. :func:`run_plugin`
spawns one job of a plugin for real (the SubprocessSpawner, with the
environment the engine gives plugins) and settles it like the engine does.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ductile import plugin
from ductile.adapters.spawner import SubprocessSpawner
from ductile.app.spawn import plugin_env
from ductile.domain.classify import classify
from ductile.domain.job import Job, JobStatus, SubmittedBy
from ductile.domain.outcome import SpawnOutcome
from ductile.domain.protocol import build_request
from ductile.domain.routing import Route, Target
from ductile.domain.settle import SettleContext, Settlement, settle
from ductile.ports.spawner import SpawnRequest

if TYPE_CHECKING:
    from tests.support.site import Site

__all__ = [
    "SRC",
    "Ran",
    "gated",
    "plugin_folder",
    "python_plugin",
    "recorder",
    "run_plugin",
    "shell_plugin",
    "spawn_env",
    "v2_folder",
]

#: Where the ``ductile`` package lives: with ``PYTHONPATH`` set to it a plugin imports ``ductile.plugin``.
SRC = Path(plugin.__file__).resolve().parent.parent


def shell_plugin(body: str) -> str:
    return "#!/bin/sh\n" + body.strip("\n") + "\n"


def python_plugin(body: str) -> str:
    """A Python plugin run by this very interpreter (``python3`` on PATH is a slow shim here)."""
    return f"#!{sys.executable} -I\n" + body.strip("\n") + "\n"


def plugin_folder(
    plugins_dir: Path,
    name: str,
    script: str,
    *,
    commands: Iterable[str] = ("poll", "handle"),
    version: str = "1.0.0",
    protocol: int = 1,
    entrypoint: str = "run",
    required: Iterable[str] = (),
) -> Path:
    """``<plugins_dir>/<name>``: a manifest and an executable entrypoint, none of it world-writable."""
    folder = plugins_dir / name
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    manifest = (
        f"name: {name}\nversion: {version}\nprotocol: {protocol}\nentrypoint: {entrypoint}\n"
        f"commands: [{', '.join(commands)}]\n"
    )
    keys = list(required)
    if keys:
        manifest += f"config_keys: {{required: [{', '.join(keys)}]}}\n"
    (folder / "manifest.yaml").write_text(manifest)
    entry = folder / entrypoint
    entry.write_text(script)
    entry.chmod(0o755)
    return folder


def v2_folder(root: Path, folder: str, manifest: str, script: str, *, entrypoint: str = "run") -> Path:
    """``<root>/<folder>`` holding a v2 manifest written as given (the folder's name need not be
    the plugin's) and the executable entrypoint; nothing world-writable."""
    path = root / folder
    path.mkdir(mode=0o755, parents=True)
    path.chmod(0o755)
    (path / "manifest.yaml").write_text(manifest.lstrip("\n"))
    entry = path / entrypoint
    entry.write_text(script)
    entry.chmod(0o755)
    return path


def recorder(
    site: Site, name: str, *, response: str = '{"status": "ok"}', before: str = "", exit_code: int = 0
) -> str:
    """A shell plugin that appends its request (one line) to ``out/<name>.requests`` and
    ``<job_id> <attempt> <pid>`` to ``out/<name>.runs``, runs ``before``, answers
    ``response`` and exits with ``exit_code``."""
    out = site.out
    return shell_plugin(
        f"""
{{ tr -d '\\n'; echo; }} >> '{out}/{name}.requests'
echo "$DUCTILE_JOB_ID $DUCTILE_ATTEMPT $$" >> '{out}/{name}.runs'
{before}
printf '%s\\n' '{response}'
exit {exit_code}
"""
    )


def gated(site: Site, name: str) -> str:
    """A recorder that waits (at most ~15 s) for the site's release file before answering."""
    return recorder(
        site,
        name,
        before=(
            f"i=0; while [ ! -e '{site.release_file}' ] && [ $i -lt 300 ]; do sleep 0.05; i=$((i+1)); done"
        ),
    )


# --------------------------------------------------------------------------- one plugin run for real


@attrs.frozen
class Ran:
    outcome: SpawnOutcome
    settlement: Settlement

    @property
    def job(self) -> Job:
        return self.settlement.job

    @property
    def stderr(self) -> str:
        return self.outcome.stderr_tail.decode("utf-8", "replace")


def spawn_env(
    plugin_name: str, command: str, job_id: str, *, attempt: int = 1, pythonpath: bool = True
) -> dict[str, str]:
    """What the engine gives a plugin (engine.plugin_env + DUCTILE_*), plus where ductile lives;
    ``pythonpath`` False: no ``PYTHONPATH`` at all (as for a ``#!`` line with ``-E``)."""
    env = plugin_env(os.environ)
    env.update(
        DUCTILE_PLUGIN=plugin_name,
        DUCTILE_COMMAND=command,
        DUCTILE_JOB_ID=job_id,
        DUCTILE_ATTEMPT=str(attempt),
    )
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # keep the source tree clean
    if pythonpath:
        env["PYTHONPATH"] = str(SRC)
    else:
        env.pop("PYTHONPATH", None)
    return env


def run_plugin(
    executable: Path,
    command: str = "poll",
    *,
    config: Mapping[str, Any] | None = None,
    state: dict[str, Any] | None = None,
    event: dict[str, Any] | None = None,
    timeout: float = 20.0,
    grace: float = 5.0,
    routes: tuple[Route, ...] = (),
    env: dict[str, str] | None = None,
    attempt: int = 1,
    max_attempts: int = 4,
    plugin_name: str = "demo",
    pythonpath: bool = True,
) -> Ran:
    """Spawn one job of the plugin for real and settle it like the engine does."""
    job_id = f"job-{command}-{attempt}"
    started = datetime.now(UTC)
    request = build_request(
        job_id=job_id,
        command=command,
        config=dict(config or {}),
        state=state or {},
        deadline_at=started + timedelta(seconds=timeout),
        event=event,
    )
    spawn = SpawnRequest(
        executable=str(executable),
        cwd=str(executable.parent),
        stdin=request,
        env=env
        if env is not None
        else spawn_env(plugin_name, command, job_id, attempt=attempt, pythonpath=pythonpath),
        timeout=timeout,
        grace=grace,
    )
    outcome = asyncio.run(SubprocessSpawner().run(spawn))
    job = Job(
        id=job_id,
        plugin=plugin_name,
        command=command,
        payload=event or {},
        status=JobStatus.RUNNING,
        attempt=attempt,
        max_attempts=max_attempts,
        submitted_by=SubmittedBy.SCHEDULER,
        created_at=started,
        started_at=started,
    )
    targets = {r.target: Target(max_attempts=4) for r in routes}
    ctx = SettleContext(now=datetime.now(UTC), routes=routes, targets=targets)
    verdict = classify(outcome, timedelta(seconds=timeout))
    return Ran(outcome, settle(job, verdict, ctx=ctx, state=state or {}))
