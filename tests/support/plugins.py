"""Plugins on disk for the tests: a plugin folder, and the scripts that go in it.

:func:`recorder` and :func:`gated` write what they saw into a
:class:`~tests.support.site.Site`'s ``out/`` folder.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.support.site import Site

__all__ = ["gated", "plugin_folder", "python_plugin", "recorder", "shell_plugin"]


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
