"""Where plugins come from: the filesystem for the daemon, a dict for the simulation."""

from __future__ import annotations

from typing import Protocol

from ductile.domain.config import Config
from ductile.domain.plugin import Discovery, Plugin


class Catalog(Protocol):
    def discover(self, config: Config) -> Discovery:
        """Load every plugin the config and the plugins directory name; refuse with reasons."""
        ...

    def verify(self, plugin: Plugin) -> str | None:
        """The trust check repeated right before a spawn: None, or why not."""
        ...


class FilesystemCatalog:
    """Plugins from ``config.plugins_dir`` (D7, D16), checked again before each spawn."""

    def __init__(self) -> None:
        self._plugins_dir: str | None = None

    def discover(self, config: Config) -> Discovery:
        from ductile.adapters import plugin_dir

        self._plugins_dir = config.plugins_dir
        configs = {name: dict(pc.config) for name, pc in config.plugins.items() if pc.enabled}
        disabled = [name for name, pc in config.plugins.items() if not pc.enabled]
        return plugin_dir.discover(config.plugins_dir, configs, disabled=disabled)

    def verify(self, plugin: Plugin) -> str | None:
        from ductile.adapters import plugin_dir

        if self._plugins_dir is None:
            return "plugins were never discovered"
        return plugin_dir.verify(plugin, self._plugins_dir)
