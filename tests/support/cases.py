"""The implementations the contract suites run against, each with the hooks its behaviours need.

A contract test is written once against a *case*: the port's implementation
plus the few moves a behaviour needs that the port itself does not offer
("put a plugin on disk", "let time pass", "make this plugin fail its trust
check"). Each implementation gets a case class here; the fixtures in
``tests/contracts/conftest.py`` build one per implementation.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from ductile.adapters.plugin_dir import FilesystemCatalog
from ductile.domain.config import Config, PluginConfig, ServiceConfig
from ductile.domain.plugin import Manifest
from ductile.fakes.catalog import DictCatalog
from ductile.ports.catalog import Catalog
from tests.support.plugins import plugin_folder, shell_plugin

# --------------------------------------------------------------------------- catalog


class CatalogCase:
    """A Catalog, and how to change the plugins it finds.

    Every plugin a case puts in place has version 1.0.0, protocol 1 and the
    entrypoint ``run``; it loads unless a hook says otherwise.
    """

    name: str
    catalog: Catalog
    #: What the config's ``plugins_dir`` says.
    plugins_dir: str

    def config(self, *plugins: PluginConfig) -> Config:
        return Config(
            service=ServiceConfig(state_dir="/var/lib/ductile"),
            plugins_dir=self.plugins_dir,
            plugins={p.name: p for p in plugins},
        )

    def add(
        self, name: str, *, commands: Iterable[str] = ("poll", "handle"), required: Iterable[str] = ()
    ) -> None:
        """Put a sound plugin in place: the next discovery loads it."""
        raise NotImplementedError

    def remove(self, name: str) -> None:
        """Take the plugin away."""
        raise NotImplementedError

    def fail_discovery(self, name: str) -> None:
        """Leave the plugin in place but failing a check at discovery."""
        raise NotImplementedError

    def fail_trust(self, name: str) -> None:
        """Make the loaded plugin fail the trust check before a spawn."""
        raise NotImplementedError

    def mend_trust(self, name: str) -> None:
        """Undo :meth:`fail_trust`."""
        raise NotImplementedError

    def directory(self, name: str) -> str:
        """Where the loaded plugin's directory is."""
        raise NotImplementedError

    def executable(self, name: str) -> str:
        """The loaded plugin's executable."""
        return f"{self.directory(name)}/run"


class DictCatalogCase(CatalogCase):
    """The dictionary fake: manifests in a dict, hooks that write its refusal tables."""

    def __init__(self) -> None:
        self.name = "dict"
        self.plugins_dir = "/srv/ductile/plugins"
        self.fake = DictCatalog()
        self.catalog = self.fake

    def add(
        self, name: str, *, commands: Iterable[str] = ("poll", "handle"), required: Iterable[str] = ()
    ) -> None:
        self.fake.add(
            Manifest(
                name=name,
                version="1.0.0",
                protocol=1,
                entrypoint="run",
                commands=frozenset(commands),
                required_keys=tuple(required),
            )
        )

    def remove(self, name: str) -> None:
        self.fake.remove(name)

    def fail_discovery(self, name: str) -> None:
        self.fake.refusals[name] = "entrypoint run is not executable"

    def fail_trust(self, name: str) -> None:
        self.fake.verify_reasons[name] = "entrypoint run is world-writable"

    def mend_trust(self, name: str) -> None:
        del self.fake.verify_reasons[name]

    def directory(self, name: str) -> str:
        return f"{self.plugins_dir}/{name}"


class FilesystemCatalogCase(CatalogCase):
    """The daemon's catalog on a real plugins directory; the hooks change files and modes."""

    SCRIPT = shell_plugin("""cat >/dev/null\necho '{"status": "ok"}'""")

    def __init__(self, root: Path) -> None:
        self.name = "filesystem"
        self.root = root / "plugins"
        self.root.mkdir(mode=0o755)
        self.root.chmod(0o755)
        self.plugins_dir = str(self.root)
        self.catalog = FilesystemCatalog()

    def add(
        self, name: str, *, commands: Iterable[str] = ("poll", "handle"), required: Iterable[str] = ()
    ) -> None:
        plugin_folder(self.root, name, self.SCRIPT, commands=commands, required=required)

    def remove(self, name: str) -> None:
        shutil.rmtree(self.root / name)

    def fail_discovery(self, name: str) -> None:
        (self.root / name / "run").chmod(0o644)

    def fail_trust(self, name: str) -> None:
        (self.root / name / "run").chmod(0o757)

    def mend_trust(self, name: str) -> None:
        (self.root / name / "run").chmod(0o755)

    def directory(self, name: str) -> str:
        return os.path.realpath(self.root / name)
