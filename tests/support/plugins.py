"""Plugins on disk for the tests: a plugin folder, and the scripts that go in it."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = ["plugin_folder", "python_plugin", "shell_plugin"]


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
