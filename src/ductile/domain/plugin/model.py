"""Plugins as values: a manifest, a loaded plugin, a refusal, what discovery found.

Nothing here reads a file or judges one: :mod:`~ductile.domain.plugin.legacy`
and :mod:`~ductile.domain.plugin.spec` read the two manifest formats into a
:class:`Manifest`, and the plugin-directory adapter judges the files.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs

from ductile.domain.protocol import PROTOCOL_V1


class CommandType(enum.StrEnum):
    """What a v2 command does to the world (it decides the API scope a trigger needs)."""

    READ = "read"
    WRITE = "write"


@attrs.frozen(kw_only=True)
class CommandSpec:
    """One command of a v2 manifest, as its author described it (hints kept and shown)."""

    name: str
    type: CommandType
    description: str = ""
    idempotent: bool | None = None
    retry_safe: bool | None = None
    #: A JSON Schema (the compact ``field: type`` form already expanded), or None.
    input_schema: Mapping[str, Any] | None = None
    output_schema: Mapping[str, Any] | None = None
    #: The names-only contract: ``{consume: [paths], emit: [{event, values: [paths]}]}``.
    values: Mapping[str, Any] | None = None


@attrs.frozen(kw_only=True)
class FactOutput:
    """A ``fact_outputs`` rule: a succeeded run of ``command`` records its state updates as a
    fact of ``fact_type``, and the plugin's state becomes that fact (``mirror_object``)."""

    command: str
    fact_type: str
    #: Where the fact comes from: ``state_updates``, the only source there is.
    source: str = "state_updates"
    #: How the state follows the facts: ``mirror_object`` (replaced whole), the only view there is.
    view: str = "mirror_object"


@attrs.frozen(kw_only=True)
class Manifest:
    name: str
    version: str
    #: The protocol the plugin speaks (1 or 2): it decides the request it gets.
    protocol: int
    entrypoint: str
    description: str = ""
    commands: frozenset[str] = frozenset({"poll"})
    required_keys: tuple[str, ...] = ()
    optional_keys: tuple[str, ...] = ()
    #: 1: ductile's first manifest (``name`` equals the folder); 2: the ecosystem's
    #: ``manifest_spec: ductile.plugin`` manifest (command objects, ``fact_outputs``...).
    manifest_format: int = 1
    #: False: never run two jobs of this plugin at once (read by the lanes of D14).
    concurrency_safe: bool = True
    #: The command objects of a v2 manifest, in the order written (empty for format 1).
    command_specs: tuple[CommandSpec, ...] = ()
    fact_outputs: tuple[FactOutput, ...] = ()

    def command_spec(self, name: str) -> CommandSpec | None:
        return next((c for c in self.command_specs if c.name == name), None)

    def fact_rule(self, command: str) -> FactOutput | None:
        """The ``fact_outputs`` rule a succeeded run of ``command`` follows, if any (the first)."""
        return next((f for f in self.fact_outputs if f.command == command), None)


@attrs.frozen(kw_only=True)
class Plugin:
    """A plugin that passed every check and may be spawned.

    An alias (``plugins.<name>.uses``) is a Plugin too: its base's manifest and
    files under a name of its own (``alias``), with its own config, state,
    breaker and schedules.
    """

    manifest: Manifest
    #: The plugin's directory, symlinks resolved.
    directory: str
    #: The entrypoint's absolute path, symlinks resolved, inside ``directory``'s root.
    executable: str
    #: The instance name when this is an alias of the plugin ``manifest.name``.
    alias: str | None = None
    #: The plugin root it was found in, as configured (absolute); "" when not from a folder.
    root: str = ""
    #: ``<root>/<folder>`` before symlinks are resolved; "" when not from a folder.
    link: str = ""
    #: The program that runs ``executable`` (a built-in: the daemon's own Python); None: it runs itself.
    interpreter: str | None = None

    @property
    def name(self) -> str:
        """The name jobs, state, breakers and schedules use: the alias, else the manifest's."""
        return self.alias if self.alias is not None else self.manifest.name

    @property
    def base(self) -> str:
        """The plugin this one runs: its manifest's name (itself, unless an alias)."""
        return self.manifest.name

    @property
    def protocol(self) -> int:
        return self.manifest.protocol

    @property
    def speaks_v1(self) -> bool:
        return self.manifest.protocol == PROTOCOL_V1

    def supports(self, command: str) -> bool:
        return command in self.manifest.commands


@attrs.frozen(kw_only=True)
class Refusal:
    """A plugin that was not loaded, and the human reason why."""

    name: str
    directory: str
    reason: str


@attrs.frozen(kw_only=True)
class Discovery:
    """What a look at the plugin roots found."""

    plugins: Mapping[str, Plugin] = attrs.field(factory=dict)
    refused: tuple[Refusal, ...] = ()
    disabled: tuple[str, ...] = ()
