"""Aliases (``plugins.<name>.uses: <base>``): a second instance of a plugin under a name of its own.

An alias runs its base's manifest and files with its own config, state,
breaker and schedules. ``uses`` may name another alias: the chain is followed
to a plugin that was found (:func:`chain`); a chain that comes back on itself
is a config error (:func:`find_cycle`, checked when the config is read).
Where a chain ends is looked up by :func:`resolve_base`, the one place that
says what a base name means: a plugin discovered in a plugin root, or, for a
name ``builtin:<name>`` (:func:`builtin_name`), one of the plugins shipped
inside ductile (``ductile/builtins``).
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from ductile.domain.plugin.model import Plugin
from ductile.domain.suggest import did_you_mean


def find_cycle(uses: Mapping[str, str]) -> list[str] | None:
    """A chain of ``uses`` that comes back to where it started (``[a, b, a]``), or None.

    ``uses`` maps each alias to the name it uses. Cycles of any length are
    found, a name using itself included.
    """
    done: set[str] = set()
    for start in sorted(uses):
        path: list[str] = []
        seen: set[str] = set()
        name: str | None = start
        while name is not None and name in uses and name not in done:
            if name in seen:
                return [*path[path.index(name) :], name]
            seen.add(name)
            path.append(name)
            name = uses[name]
        done.update(seen)
    return None


def chain(name: str, uses: Mapping[str, str]) -> list[str]:
    """``name`` and every name its ``uses`` leads through, up to the first that is no alias."""
    names = [name]
    while names[-1] in uses and len(names) <= len(uses):
        names.append(uses[names[-1]])
    return names


#: ``uses: builtin:<name>`` names a plugin shipped with ductile.
BUILTIN_PREFIX = "builtin:"


def builtin_name(base: str) -> str | None:
    """``notify`` for ``builtin:notify``; None for any other name."""
    return base[len(BUILTIN_PREFIX) :] if base.startswith(BUILTIN_PREFIX) else None


def resolve_base(
    base: str, found: Mapping[str, Plugin], builtins: Mapping[str, Plugin] | None = None
) -> Plugin | None:
    """The plugin an alias chain ends at: the built-in ``builtin:<name>`` (from ``builtins``),
    else the plugin named ``base`` that discovery found."""
    shipped = builtin_name(base)
    if shipped is not None:
        return (builtins or {}).get(shipped)
    plugin = found.get(base)
    return None if plugin is None or plugin.alias is not None else plugin


def as_alias(name: str, base: Plugin) -> Plugin:
    """``base`` running as the instance ``name``."""
    return attrs.evolve(base, alias=name)


def unknown_base(name: str, base: str, found: Mapping[str, Plugin], where: str) -> str:
    """Why alias ``name`` is refused when its chain ends at ``base``, which is not a plugin."""
    return f"plugins.{name}.uses: no plugin named '{base}' in {where}{did_you_mean(base, found)}"
