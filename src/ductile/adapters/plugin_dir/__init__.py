"""Plugins on the filesystem: discovery over the plugin roots, aliases, and the trust check (D7, D16).

The file checks of one folder are :mod:`.files`; this module walks every
plugin root in order (``plugins_dir`` and ``plugin_roots``, ADR 0012 and
0026):

- every immediate subdirectory of a root is a candidate; regular files and
  names starting with ``.`` are skipped;
- a plugin is known by its manifest's name (a format-1 manifest's name is
  its folder's); the **first root holding a name wins**, a later folder with
  the same name is listed as refused, naming both paths;
- a name the config gives without a folder anywhere is refused, naming where
  it was looked for; a folder named as disabled is listed as disabled and
  never judged further (unless an alias uses it);
- an alias (``plugins.<name>.uses``) runs the plugin its chain ends at
  (:mod:`ductile.domain.plugin.alias`), under its own name; a chain may end
  at a built-in, ``builtin:<name>`` (:mod:`.shipped`);
- a folder holding a plugin named ``ductile`` is refused: that name is the
  source of the lifecycle events;
- a plugin whose settings do not fit its manifest (missing required config
  keys, a timeout for a command it lacks) is refused.

:class:`FilesystemCatalog` is the Catalog port (:mod:`ductile.ports.catalog`)
over a config's roots, checked again before each spawn (:func:`verify`).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import attrs

from ductile.adapters.plugin_dir.files import (
    MANIFEST_MAX_BYTES,
    MANIFEST_NAME,
    RefusedError,
    absence,
    inside,
    load,
    root_problem,
    scan,
    verify,
)
from ductile.adapters.plugin_dir.shipped import load_builtin
from ductile.adapters.runas import RunAsError, problem, resolve
from ductile.domain.config import Config, PluginConfig
from ductile.domain.lifecycle import SOURCE as LIFECYCLE_SOURCE
from ductile.domain.plugin import Discovery, Plugin, Refusal, settings_problem
from ductile.domain.plugin.alias import as_alias, builtin_name, chain, resolve_base, unknown_base

__all__ = [
    "MANIFEST_MAX_BYTES",
    "MANIFEST_NAME",
    "Discovery",
    "FilesystemCatalog",
    "discover",
    "inside",
    "verify",
]

#: The old private name of :func:`~ductile.adapters.plugin_dir.files.inside` (kept for its tests).
_inside = inside


@attrs.define
class _Walk:
    """What the walk over the roots has found so far."""

    settings: Mapping[str, PluginConfig]
    off: set[str]
    found: dict[str, Plugin] = attrs.field(factory=dict)
    refused: list[Refusal] = attrs.field(factory=list)
    disabled: dict[str, tuple[str, str, str]] = attrs.field(factory=dict)
    #: Folder name -> the name of the plugin loaded from it (when it differs).
    renamed: dict[str, tuple[str, str]] = attrs.field(factory=dict)

    def refuse(self, name: str, directory: str, reason: str) -> None:
        self.refused.append(Refusal(name=name, directory=directory, reason=reason))

    def settings_of(self, name: str) -> PluginConfig:
        return self.settings.get(name) or PluginConfig(name=name)


def discover(
    roots: str | Sequence[str],
    plugins: Mapping[str, PluginConfig | Mapping[str, Any]],
    *,
    disabled: Collection[str] = (),
) -> Discovery:
    """Load every plugin under ``roots`` (in order); refuse, with a reason, those that fail a check.

    ``plugins`` maps a configured name to its settings (or just its
    ``config:`` mapping): required config keys, custom timeouts and aliases
    are checked against them. A configured or ``disabled`` name found in no
    root is refused. Never raises for what it finds on disk. The result (a
    domain value) lists plugins, refusals and the disabled plugins found, each
    in name order.
    """
    bases = [os.path.abspath(r) for r in ((roots,) if isinstance(roots, str) else roots)]
    walk = _Walk(
        settings={name: _settings(name, value) for name, value in plugins.items()}, off=set(disabled)
    )
    aliases = {n: s.uses for n, s in walk.settings.items() if s.uses is not None}
    problems: dict[str, str | None] = {}
    for base in bases:
        problems[base] = _walk_root(walk, base)
    _missing(walk, bases, problems, aliases)
    for name in sorted(aliases):
        _alias(walk, name, aliases, bases)
    return Discovery(
        plugins=dict(sorted(walk.found.items())),
        refused=tuple(sorted(walk.refused, key=lambda r: r.name)),
        disabled=tuple(sorted(walk.disabled)),
    )


def _settings(name: str, value: PluginConfig | Mapping[str, Any]) -> PluginConfig:
    return value if isinstance(value, PluginConfig) else PluginConfig(name=name, config=dict(value))


def _walk_root(walk: _Walk, base: str) -> str | None:
    """Load every candidate folder of one root; returns the root's problem, if it has one."""
    root = os.path.realpath(base)
    problem = root_problem(base, root)
    entries, scan_problem = scan(root) if os.path.isdir(root) else (set(), None)
    problem = problem or scan_problem
    for folder in sorted(entries):
        link = os.path.join(base, folder)
        if folder in walk.off:
            if folder not in walk.found and folder not in walk.disabled:
                walk.disabled[folder] = (base, root, folder)
            continue
        if problem is not None:
            walk.refuse(folder, link, problem)
            continue
        try:
            plugin = load(base, root, folder)
        except RefusedError as refusal:
            walk.refuse(folder, link, refusal.reason)
            continue
        _found(walk, plugin, folder)
    return problem


def _found(walk: _Walk, plugin: Plugin, folder: str) -> None:
    name = plugin.name
    if name != folder:
        walk.renamed[folder] = (name, plugin.link)
    first = walk.found.get(name)
    if first is not None:
        walk.refuse(
            name,
            plugin.link,
            f"duplicate plugin '{name}': {plugin.link} is not loaded, {first.link} is "
            "(the first plugin root holding a name wins)",
        )
        return
    if name in walk.off:
        walk.disabled.setdefault(name, (plugin.root, os.path.realpath(plugin.root), folder))
        return
    if name == LIFECYCLE_SOURCE:
        walk.refuse(
            name,
            plugin.link,
            f"the name '{name}' is reserved for ductile's own lifecycle events; rename the plugin",
        )
        return
    reason = settings_problem(plugin.manifest, walk.settings_of(name))
    if reason is not None:
        walk.refuse(name, plugin.link, reason)
        return
    walk.found[name] = plugin


def _missing(
    walk: _Walk, bases: Sequence[str], problems: Mapping[str, str | None], aliases: Mapping[str, str]
) -> None:
    """Refuse every configured (or disabled) name no root holds."""
    seen = set(walk.found) | set(walk.disabled) | {r.name for r in walk.refused}
    for name in sorted((set(walk.settings) | walk.off) - seen - set(aliases)):
        renamed = walk.renamed.get(name)
        if renamed is not None:
            reason = (
                f"the folder {renamed[1]} holds the plugin '{renamed[0]}' (its manifest's name): "
                f"configure it as plugins.{renamed[0]}"
            )
        else:
            reason = "; ".join(absence(base, name, problems.get(base)) for base in bases)
        walk.refuse(name, os.path.join(bases[0], name), reason)


def _alias(walk: _Walk, name: str, aliases: Mapping[str, str], bases: Sequence[str]) -> None:
    """Load alias ``name`` (or refuse it, or list it as disabled)."""
    if name in walk.off:
        walk.disabled.setdefault(name, ("", "", name))
        return
    directory = os.path.join(bases[0], name)
    if name in walk.found:
        walk.refuse(
            name,
            directory,
            f"plugins.{name}.uses: the plugin '{name}' at {walk.found.pop(name).link} has this name; "
            "an alias needs a name of its own",
        )
        return
    base_name = chain(name, aliases)[-1]
    shipped = builtin_name(base_name)
    builtins: dict[str, Plugin] = {}
    if shipped is not None:
        try:
            builtins[shipped] = load_builtin(shipped)
        except RefusedError as refusal:
            walk.refuse(name, directory, f"plugins.{name}.uses: {refusal.reason}")
            return
    base = resolve_base(base_name, walk.found, builtins) or _disabled_base(walk, base_name)
    if base is None:
        walk.refuse(name, directory, unknown_base(name, base_name, walk.found, " or ".join(bases)))
        return
    reason = settings_problem(base.manifest, walk.settings_of(name))
    if reason is not None:
        walk.refuse(name, base.link or directory, reason)
        return
    walk.found[name] = as_alias(name, base)


def _disabled_base(walk: _Walk, name: str) -> Plugin | None:
    """A disabled plugin an alias uses: loaded now (its own instance stays disabled)."""
    where = walk.disabled.get(name)
    if where is None or not where[0]:
        return None
    base, root, folder = where
    try:
        plugin = load(base, root, folder)
    except RefusedError:
        return None
    return plugin if plugin.name == name else None


class FilesystemCatalog:
    """The Catalog port over ``config.roots`` (D7, D16), checked again before each spawn,
    with the user each plugin runs as (:mod:`ductile.adapters.runas`)."""

    def __init__(self) -> None:
        self._plugins_dir: str | None = None
        self._config: Config | None = None

    def discover(self, config: Config) -> Discovery:
        self._plugins_dir = config.plugins_dir
        self._config = config
        off = [name for name, pc in config.plugins.items() if not pc.enabled]
        found = discover(config.roots, config.plugins, disabled=off)
        refused = {name: why for name, plugin in found.plugins.items() if (why := self._run_as(plugin))}
        if not refused:
            return found
        extra = (
            Refusal(name=n, directory=found.plugins[n].directory, reason=why) for n, why in refused.items()
        )
        return attrs.evolve(
            found,
            plugins={name: p for name, p in found.plugins.items() if name not in refused},
            refused=tuple(sorted((*found.refused, *extra), key=lambda r: r.name)),
        )

    def verify(self, plugin: Plugin) -> str | None:
        if self._plugins_dir is None:
            return "plugins were never discovered"
        return verify(plugin, self._plugins_dir) or self._run_as(plugin)

    def _run_as(self, plugin: Plugin) -> str | None:
        """Why the user ``plugin`` must run as cannot run it (None: it can, or there is none)."""
        run_as = self._config.run_as(plugin.name) if self._config is not None else None
        if run_as is None:
            return None
        user, setting = run_as
        try:
            who = resolve(user)
        except RunAsError as e:
            return f"{setting}: {e}"
        return problem(who, setting=setting, directory=plugin.directory, executable=plugin.executable)
