"""The Catalog port over a dict of manifests, with the filesystem's rules.

:class:`DictCatalog` stands in for
:class:`~ductile.adapters.plugin_dir.FilesystemCatalog` wherever a plugins
directory on disk is beside the point (the engine's tests, embedders, the
simulation's :class:`~ductile.app.sim.catalog.SimCatalog`). It judges names
the way discovery on disk does (ADR 0012):

- a manifest in the dict is a plugin "on disk"; a plugin on disk that the
  config does not name is loaded with the default settings;
- a name the config names without a plugin is refused, the reason naming
  its directory;
- a disabled plugin is listed as disabled (neither loaded nor refused);
- a plugin whose manifest requires config keys the config does not set is
  refused, the reason naming every missing key (and one whose ``timeouts``
  name a command its manifest lacks);
- an alias (``plugins.<name>.uses``) runs the manifest its chain ends at,
  under its own name; an unknown base refuses it;
- ``refusals`` stands for a plugin on disk that fails a check at discovery
  (a world-writable directory, an entrypoint that is not executable...);
- :meth:`DictCatalog.verify`, the check before a spawn, answers
  ``verify_reasons`` and refuses a plugin that went away since it was loaded.

A plugin's directory is ``<config.plugins_dir>/<name>`` and its executable
the manifest's entrypoint inside it; a subclass may place them elsewhere, and
may make up a manifest for a name the dict lacks (:meth:`DictCatalog.manifest`).
``tests/contracts/test_catalog_contract.py`` runs this fake and the
filesystem's catalog through the same behaviours.
"""

from __future__ import annotations

from collections.abc import Mapping

from ductile.domain.config import Config
from ductile.domain.plugin import Discovery, Manifest, Plugin, Refusal, settings_problem
from ductile.domain.plugin.alias import as_alias, chain, resolve_base, unknown_base

__all__ = ["DictCatalog"]


class DictCatalog:
    """The Catalog port over a dict of manifests (see the module's docstring for its rules)."""

    def __init__(
        self,
        *manifests: Manifest,
        refusals: Mapping[str, str] | None = None,
        verify_reasons: Mapping[str, str] | None = None,
    ) -> None:
        #: The plugins "on disk", by name.
        self.manifests: dict[str, Manifest] = {m.name: m for m in manifests}
        #: Plugins on disk that fail a check at discovery: name -> reason.
        self.refusals: dict[str, str] = dict(refusals or {})
        #: Plugins that fail the check before a spawn: name -> reason.
        self.verify_reasons: dict[str, str] = dict(verify_reasons or {})
        #: How many times :meth:`discover` ran (a reload that never began did not call it).
        self.discover_calls = 0

    def add(self, manifest: Manifest) -> None:
        """Put a plugin on "disk" (or replace its manifest): the next discovery sees it."""
        self.manifests[manifest.name] = manifest

    def remove(self, name: str) -> None:
        """Take a plugin off "disk"."""
        del self.manifests[name]

    # ----------------------------------------------------------------- where plugins are
    def manifest(self, name: str) -> Manifest | None:
        """The manifest of the plugin named ``name``, or None when there is no such plugin."""
        return self.manifests.get(name)

    def directory(self, config: Config, name: str) -> str:
        return f"{config.plugins_dir.rstrip('/')}/{name}"

    def executable(self, config: Config, manifest: Manifest) -> str:
        return f"{self.directory(config, manifest.name)}/{manifest.entrypoint}"

    # ----------------------------------------------------------------- the port
    def discover(self, config: Config) -> Discovery:
        self.discover_calls += 1
        plugins: dict[str, Plugin] = {}
        refused: list[Refusal] = []
        disabled: list[str] = []
        aliases = {name: pc.uses for name, pc in config.plugins.items() if pc.uses is not None}
        for name in sorted(set(config.plugins) | set(self.manifests) | set(self.refusals)):
            if name in aliases:
                continue
            manifest = self.manifest(name)
            directory = self.directory(config, name)
            reason = self._refusal(config, name, manifest)
            if reason is not None:
                refused.append(Refusal(name=name, directory=directory, reason=reason))
            elif not config.plugin(name).enabled:
                disabled.append(name)
            elif manifest is not None:
                executable = self.executable(config, manifest)
                plugins[name] = Plugin(manifest=manifest, directory=directory, executable=executable)
        for name in sorted(aliases):
            reason = self._alias(config, name, aliases, plugins)
            if reason is not None:
                refused.append(Refusal(name=name, directory=self.directory(config, name), reason=reason))
            elif not config.plugin(name).enabled:
                disabled.append(name)
        by_name = dict(sorted(plugins.items()))
        return Discovery(
            plugins=by_name,
            refused=tuple(sorted(refused, key=lambda r: r.name)),
            disabled=tuple(sorted(disabled)),
        )

    def _alias(
        self, config: Config, name: str, aliases: Mapping[str, str], plugins: dict[str, Plugin]
    ) -> str | None:
        """Add alias ``name`` to ``plugins``; the reason it is refused, if it is."""
        if not config.plugin(name).enabled:
            return None
        base_name = chain(name, aliases)[-1]
        base = resolve_base(base_name, plugins)
        if base is None:
            manifest = self.manifest(base_name)  # a disabled base still has its files
            if manifest is None:
                return unknown_base(name, base_name, plugins, config.plugins_dir)
            executable = self.executable(config, manifest)
            directory = self.directory(config, base_name)
            base = Plugin(manifest=manifest, directory=directory, executable=executable)
        reason = settings_problem(base.manifest, config.plugin(name))
        if reason is None:
            plugins[name] = as_alias(name, base)
        return reason

    def verify(self, plugin: Plugin) -> str | None:
        """An alias is checked as its base: they share the files."""
        reason = self.verify_reasons.get(plugin.base)
        if reason is None and self.manifest(plugin.base) is None:
            return f"plugin directory {plugin.directory} does not exist"
        return reason

    def _refusal(self, config: Config, name: str, manifest: Manifest | None) -> str | None:
        """Why ``name`` is refused, or None (loaded or disabled). Absence comes first, as on disk:
        a disabled name without a plugin is refused; a disabled plugin is never judged further."""
        enabled = config.plugin(name).enabled
        if name in self.refusals:
            return self.refusals[name] if enabled else None
        if manifest is None:
            return f"no plugin directory {self.directory(config, name)}"
        if not enabled:
            return None
        return settings_problem(manifest, config.plugin(name))
