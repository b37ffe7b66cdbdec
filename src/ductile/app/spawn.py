"""What a plugin process is started with: its environment (D5).

A plugin inherits a short allow-list of the daemon's environment and nothing
else: no secret of the daemon's leaks into a plugin by accident.
"""

from __future__ import annotations

from collections.abc import Mapping

#: Environment variables a plugin inherits from the daemon; nothing else leaks.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def plugin_env(base: Mapping[str, str]) -> dict[str, str]:
    """The controlled environment of every plugin (D5): a short allow-list."""
    env = {k: base[k] for k in INHERITED_ENV if k in base}
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("LANG", "C.UTF-8")
    return env
