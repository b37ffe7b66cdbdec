"""``ductile init [DIR]`` and ``ductile new plugin NAME``: files a newcomer starts from.

``init`` writes a commented starter ``ductile.yaml`` and a ``plugins`` folder
with one working shell plugin, ``hello``; ``new plugin`` writes a manifest
and an entrypoint (POSIX sh or Python with :mod:`ductile.plugin`) into the
config's ``plugins_dir``. What they write passes ``ductile config check`` and
runs as it is; neither ever overwrites a file.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from ductile.app.cli.context import EXIT_OK, Context, UsageError, read_config

#: A plugin name ``new plugin`` accepts: a directory name that reads well in a config key.
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")

STARTER_CONFIG = """\
# ductile's config. `ductile config check` validates it; `ductile start` runs it.
# Every key is in docs/config.md. Relative paths are resolved against this file's folder.

service:
  state_dir: ./state          # the SQLite database and the lock file
  tick_interval: 60s          # how often the scheduler looks for due runs
  log_level: info             # debug, info, warn or error

plugins_dir: ./plugins        # one folder per plugin: manifest.yaml and an executable

plugins:                      # settings per plugin (a plugin in plugins_dir needs none to load)
  hello:
    schedule:
      every: 1h               # or cron: "30 7 * * 1-5"; add jitter: 5m, timezone: Europe/Berlin
    config:                   # what the plugin receives in its request's "config"
      greeting: hello from ductile

# More plugins: `ductile new plugin NAME --lang sh|python`.
#
# routes:                     # one plugin's events become another's `handle` jobs
#   - {from: hello, event_type: hello.said, to: notify}
#
# webhooks:                   # signed HTTP deliveries become `handle` jobs
#   listen: 127.0.0.1:8081
#   endpoints:
#     - path: /hook/github
#       plugin: notify
#       secret: ${GITHUB_WEBHOOK_SECRET}
#       dedupe_header: X-GitHub-Delivery
"""

_MANIFEST = """\
name: {name}
version: 0.1.0
protocol: 1
entrypoint: {entrypoint}
description: "{description}"
commands: [{commands}]
"""

HELLO_SH = """\
#!/bin/sh
# hello: a ductile plugin in POSIX sh. The request is one JSON object on stdin; the answer is
# one JSON object on stdout. Diagnostics go to stderr. The guide is docs/plugins.md.
request=$(cat)
# A real plugin would read the request with jq; this one only needs one text setting.
greeting=$(printf '%s' "$request" | sed -n 's/.*"greeting":"\\([^"\\\\]*\\)".*/\\1/p')
case "$request" in
  *'"command":"health"'*)
    printf '{"status":"ok","protocol":1}\\n' ;;
  *)
    echo "hello ran at $(date -u +%H:%M:%S)" >&2
    printf '{"status":"ok","protocol":1,"logs":[{"level":"info","message":"%s"}]}\\n' \\
      "${greeting:-hello}" ;;
esac
"""

NEW_SH = """\
#!/bin/sh
# {name}: a ductile plugin in POSIX sh. The request is one JSON object on stdin; the answer
# is one JSON object on stdout (nothing else may go there). Diagnostics go to stderr.
# The guide is docs/plugins.md; read the request with jq when you need its fields.
request=$(cat)
case "$request" in
  *'"command":"health"'*)
    printf '{{"status":"ok","protocol":1}}\\n' ;;
  *'"command":"poll"'*)
    echo "{name}: polled" >&2
    printf '{{"status":"ok","protocol":1,"logs":[{{"level":"info","message":"{name} polled"}}]}}\\n' ;;
  *'"command":"handle"'*)
    echo "{name}: handled an event" >&2
    printf '{{"status":"ok","protocol":1}}\\n' ;;
  *)
    printf '{{"status":"error","error":"unknown command","retry":false,"protocol":1}}\\n'
    exit 78 ;;
esac
"""

NEW_PY = '''\
#!/usr/bin/env python3
"""{name}: a ductile plugin in Python, with the ductile.plugin helper (standard library only).

ductile puts ductile.plugin on the PYTHONPATH of every plugin, whichever python3 runs it.
The guide is docs/plugins.md.
"""

from ductile import plugin


def poll(request):
    count = request.state.get("count", 0) + 1
    plugin.log.info(f"{name} polled ({{count}} so far)")
    return plugin.ok(state_updates={{"count": count}})


def handle(request):
    plugin.log.info(f"{name} received an event of type {{request.event.type!r}}")
    return plugin.ok()


def health(request):
    return None  # None means ok


plugin.run({{"poll": poll, "handle": handle, "health": health}})
'''


def _write_new(path: Path, text: str, *, mode: int) -> None:
    """Write a file that must not exist yet (never overwrites)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, mode)  # the umask may have taken bits away


def _folder(path: Path) -> None:
    path.mkdir(mode=0o755, exist_ok=True)
    os.chmod(path, 0o755)  # noqa: S103 - readable by the daemon, never world-writable (refused)


def write_plugin(plugins_dir: Path, name: str, lang: str) -> list[Path]:
    """``plugins_dir/name`` with its manifest and entrypoint; the paths written."""
    folder = plugins_dir / name
    if folder.exists():
        raise FileExistsError(f"{folder} already exists")
    _folder(plugins_dir)
    _folder(folder)
    if lang == "python":
        entry, script = "run.py", NEW_PY.format(name=name)
        description = f"{name}: a Python plugin"
    elif name == "hello":
        entry, script, description = "run.sh", HELLO_SH, "Says hello on a schedule, in POSIX sh."
    else:
        entry, script = "run.sh", NEW_SH.format(name=name)
        description = f"{name}: a shell plugin"
    commands = "poll, health" if name == "hello" and lang == "sh" else "poll, handle, health"
    manifest = _MANIFEST.format(name=name, entrypoint=entry, description=description, commands=commands)
    _write_new(folder / "manifest.yaml", manifest, mode=0o644)
    _write_new(folder / entry, script, mode=0o755)
    return [folder / "manifest.yaml", folder / entry]


def init_site(where: str) -> list[Path]:
    """``where/ductile.yaml`` and ``where/plugins/hello``; FileExistsError before writing anything."""
    target = Path(where).expanduser().absolute()
    config = target / "ductile.yaml"
    for path in (config, target / "plugins" / "hello"):
        if path.exists():
            raise FileExistsError(f"{path} already exists")
    target.mkdir(parents=True, exist_ok=True)
    written = write_plugin(target / "plugins", "hello", "sh")
    _write_new(config, STARTER_CONFIG, mode=0o644)
    return [config, *written]


async def cmd_init(ctx: Context, args: argparse.Namespace) -> int:
    try:
        written = init_site(args.dir)
    except FileExistsError as e:
        return ctx.fail(f"{e}: nothing was written")
    except OSError as e:
        return ctx.fail(f"cannot write into {args.dir}: {e.strerror or e}")
    config = written[0]
    for path in written:
        ctx.print(f"wrote {path}")
    ctx.print()
    ctx.print("next:")
    ctx.print(f"  ductile config check --config {config}")
    ctx.print(f"  ductile start --config {config}")
    ctx.print(f"  ductile run hello --wait --config {config}    # in a second terminal")
    return EXIT_OK


async def cmd_new(ctx: Context, args: argparse.Namespace) -> int:
    # ``new`` has one kind of thing to make so far, ``plugin`` (argparse requires it).
    name: str = args.name
    if not _NAME.match(name):
        raise UsageError(
            f"plugin name {name!r}: use lower-case letters, digits, '-' and '_', starting with a letter"
        )
    config = read_config(ctx, args)
    plugins_dir = Path(config.plugins_dir)
    try:
        written = write_plugin(plugins_dir, name, args.lang)
    except FileExistsError as e:
        return ctx.fail(f"{e}: nothing was written")
    except OSError as e:
        return ctx.fail(f"cannot write into {plugins_dir}: {e.strerror or e}")
    for path in written:
        ctx.print(f"wrote {path}")
    ctx.print()
    ctx.print("it loads as it is: `ductile config check` shows it; a running daemon takes it")
    ctx.print(f"after `ductile reload`; then `ductile run {name} --wait`, or give it a schedule")
    ctx.print(f"under plugins.{name} in the config")
    return EXIT_OK
