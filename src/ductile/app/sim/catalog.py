"""The Catalog port without a filesystem: every configured plugin, simulated."""

from __future__ import annotations

from collections.abc import Mapping

from ductile.app.sim.behaviour import Behaviour, behaviour_key
from ductile.domain.config import Config
from ductile.domain.job import Command
from ductile.domain.plugin import Discovery, Manifest, Plugin, Refusal, missing_config_keys

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


class SimCatalog:
    """The Catalog port without a filesystem: every plugin the config names.

    Each gets the manifest in ``manifests`` (read from a real plugins
    directory by ``ductile simulate``) or :func:`sim_manifest` (commands poll,
    handle, health, and init when a ``<name>.init`` behaviour exists), the
    directory ``/sim/<name>`` and the executable ``sim://<name>``. A name in
    ``refusals`` is refused with that reason; a disabled plugin is listed as
    disabled; missing required config keys refuse a plugin, as on disk.
    """

    def __init__(
        self,
        behaviours: Mapping[str, Behaviour] | None = None,
        *,
        manifests: Mapping[str, Manifest] | None = None,
        refusals: Mapping[str, str] | None = None,
    ) -> None:
        self.behaviours = dict(behaviours or {})
        self.manifests = dict(manifests or {})
        self.refusals = dict(refusals or {})

    def manifest(self, name: str) -> Manifest:
        found = self.manifests.get(name)
        if found is not None:
            return found
        return sim_manifest(name, init=behaviour_key(name, Command.INIT) in self.behaviours)

    def discover(self, config: Config) -> Discovery:
        plugins: dict[str, Plugin] = {}
        refused: list[Refusal] = []
        disabled: list[str] = []
        for name in sorted(set(config.plugins) | set(self.manifests) | set(self.refusals)):
            directory = f"{SIM_ROOT}/{name}"
            if not config.plugin(name).enabled:
                disabled.append(name)
                continue
            if name in self.refusals:
                refused.append(Refusal(name=name, directory=directory, reason=self.refusals[name]))
                continue
            manifest = self.manifest(name)
            missing = missing_config_keys(manifest, config.plugin(name).config)
            if missing:
                reason = f"missing required config keys: {', '.join(missing)}"
                refused.append(Refusal(name=name, directory=directory, reason=reason))
                continue
            plugins[name] = Plugin(manifest=manifest, directory=directory, executable=SIM_SCHEME + name)
        return Discovery(plugins=plugins, refused=tuple(refused), disabled=tuple(disabled))

    def verify(self, plugin: Plugin) -> str | None:
        return None
