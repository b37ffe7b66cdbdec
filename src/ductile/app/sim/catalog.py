"""The Catalog port without a filesystem: every configured plugin, simulated."""

from __future__ import annotations

from collections.abc import Mapping

from ductile.app.sim.behaviour import Behaviour, behaviour_key
from ductile.domain.config import Config
from ductile.domain.job import Command
from ductile.domain.plugin import Manifest
from ductile.fakes.catalog import DictCatalog

#: The root of the simulated plugins' directories and the scheme of their executables.
SIM_ROOT = "/sim"

SIM_SCHEME = "sim://"

#: The commands of a simulated plugin's manifest (plus ``init`` when a behaviour names it).
SIM_COMMANDS = frozenset({Command.POLL.value, Command.HANDLE.value, Command.HEALTH.value})


def sim_manifest(name: str, *, init: bool = False) -> Manifest:
    commands = SIM_COMMANDS | ({Command.INIT.value} if init else set())
    return Manifest(
        name=name,
        version="0.0.0+sim",
        protocol=1,
        entrypoint="sim",
        description="a simulated plugin",
        commands=frozenset(commands),
    )


class SimCatalog(DictCatalog):
    """The Catalog port without a filesystem: every plugin the config names.

    A :class:`~ductile.fakes.catalog.DictCatalog` (the filesystem's rules:
    a disabled plugin is listed as disabled, a name in ``refusals`` is refused
    with that reason, missing required config keys refuse a plugin) in which
    no configured plugin is ever missing: each gets the manifest in
    ``manifests`` (read from a real plugins directory by ``ductile
    simulate``) or :func:`sim_manifest` (commands poll, handle, health, and
    init when a ``<name>.init`` behaviour exists), the directory
    ``/sim/<name>`` and the executable ``sim://<name>``.
    """

    def __init__(
        self,
        behaviours: Mapping[str, Behaviour] | None = None,
        *,
        manifests: Mapping[str, Manifest] | None = None,
        refusals: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(refusals=refusals)
        self.behaviours = dict(behaviours or {})
        self.manifests = dict(manifests or {})
        #: The simulated manifests made so far, by (name, init): the dispatcher verifies the
        #: plugin before every run, and a Manifest is a frozen value, so one of each is enough.
        self._made: dict[tuple[str, bool], Manifest] = {}

    def manifest(self, name: str) -> Manifest:
        found = self.manifests.get(name)
        if found is not None:
            return found
        key = (name, behaviour_key(name, Command.INIT) in self.behaviours)
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = sim_manifest(name, init=key[1])
        return made

    def directory(self, config: Config, name: str) -> str:
        return f"{SIM_ROOT}/{name}"

    def executable(self, config: Config, manifest: Manifest) -> str:
        return SIM_SCHEME + manifest.name
