"""Catalog: where the plugins come from, and the trust check repeated before each spawn.

The daemon's catalog reads a plugins directory
(:class:`~ductile.adapters.plugin_dir.FilesystemCatalog`); tests, embedders and
the simulation use one over a dict (:class:`~ductile.fakes.catalog.DictCatalog`).
Both follow the same rules, held together by ``tests/contracts/test_catalog_contract.py``.
"""

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
