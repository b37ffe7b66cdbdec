"""The built-in plugins shipped inside the package (``uses: builtin:<name>``, issue 15).

Each lives in ``ductile/builtins/<name>/`` with a v2 manifest and a Python
entrypoint written with the ``ductile.plugin`` helper. It is loaded with the
same file checks as a plugin in a plugin root (the package's ``builtins``
folder is its root), and runs under the daemon's own interpreter
(``sys.executable``), whatever the file's ``#!`` line says: a built-in needs
no plugins folder and no interpreter of its own.
"""

from __future__ import annotations

import os
import sys

import attrs

from ductile.adapters.plugin_dir.files import RefusedError, load, scan
from ductile.domain.plugin import Plugin
from ductile.domain.suggest import did_you_mean

#: ``src/ductile/builtins``: the root of the built-in plugins.
BUILTINS_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "builtins"
)


def available() -> list[str]:
    """The names of the built-in plugins, sorted."""
    names, _ = scan(os.path.realpath(BUILTINS_DIR))
    return sorted(n for n in names if not n.startswith("_"))


def load_builtin(name: str) -> Plugin:
    """The built-in ``name``, ready to run; :class:`RefusedError` when there is none or it fails a check."""
    names = available()
    if name not in names:
        raise RefusedError(
            f"no built-in plugin '{name}'{did_you_mean(name, names)} (the built-ins: {', '.join(names)})"
        )
    plugin = load(BUILTINS_DIR, os.path.realpath(BUILTINS_DIR), name)
    return attrs.evolve(plugin, interpreter=sys.executable)
