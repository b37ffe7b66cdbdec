"""Manifest format 1: ductile's first manifest (D7), read as it always was.

``name`` (equal to the folder's name), ``version``, ``protocol: 1``,
``entrypoint``, ``description``, ``commands`` (a list of ``poll``, ``handle``,
``health``, ``init``), ``config_keys``; and ``concurrency_safe``, which both
formats accept. One check per key, always in this order, so a manifest with
several problems is always refused for the same first one.
"""

from __future__ import annotations

from collections.abc import Mapping

from ductile.domain.errors import ManifestError
from ductile.domain.job import Command
from ductile.domain.plugin import checks
from ductile.domain.plugin.model import Manifest
from ductile.domain.protocol import PROTOCOL_V1, PROTOCOL_V2
from ductile.domain.suggest import did_you_mean

KNOWN_COMMANDS = frozenset(c.value for c in Command)
KEYS = (
    "name",
    "version",
    "protocol",
    "entrypoint",
    "description",
    "commands",
    "config_keys",
    "concurrency_safe",
)


def parse_legacy(raw: Mapping[object, object], *, directory_name: str) -> Manifest:
    checks.unknown_keys(raw, KEYS)
    name = _name(raw.get("name"), directory_name)
    version = checks.version(raw.get("version"))
    protocol = _protocol(raw.get("protocol"))
    entrypoint = checks.entrypoint(raw.get("entrypoint"))
    description = checks.text(raw.get("description"), "manifest 'description'", "description")
    commands = _commands(raw.get("commands"))
    required_keys, optional_keys = checks.config_keys(raw.get("config_keys"))
    safe = checks.flag(raw.get("concurrency_safe"), "'concurrency_safe'", True, "concurrency_safe")
    return Manifest(
        name=name,
        version=version,
        protocol=protocol,
        entrypoint=entrypoint,
        description=description,
        commands=commands,
        required_keys=required_keys,
        optional_keys=optional_keys,
        manifest_format=1,
        concurrency_safe=bool(safe),
    )


def _name(name: object, directory_name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ManifestError("manifest 'name' is missing", "name")
    if name != directory_name:
        raise ManifestError(f"manifest name '{name}' does not match its directory '{directory_name}'", "name")
    return name


def _protocol(protocol: object) -> int:
    if isinstance(protocol, bool) or not isinstance(protocol, int):
        raise ManifestError("manifest 'protocol' must be a number (1)", "protocol")
    if protocol == PROTOCOL_V2:
        raise ManifestError(
            "protocol 2 needs the v2 manifest: start it with 'manifest_spec: ductile.plugin' and "
            "'manifest_version: 1', and write commands as objects (see docs/plugins.md)",
            "protocol",
        )
    if protocol != PROTOCOL_V1:
        raise ManifestError(f"protocol {protocol} is not supported (this core speaks 1 and 2)", "protocol")
    return protocol


def _commands(raw: object) -> frozenset[str]:
    if raw is None:
        raise ManifestError("manifest 'commands' is missing (e.g. [poll, handle, health])", "commands")
    commands = checks.names(raw, "commands", "commands")
    bad = sorted(set(commands) - KNOWN_COMMANDS)
    if bad:
        known = ", ".join(sorted(KNOWN_COMMANDS))
        named = ", ".join(f"{c}{did_you_mean(c, KNOWN_COMMANDS)}" for c in bad)
        raise ManifestError(
            f"unknown command(s) {named}; known: {known} (custom commands need the v2 manifest)",
            "commands",
        )
    if not commands:
        raise ManifestError("manifest 'commands' is empty", "commands")
    return frozenset(commands)
