"""Plugins as values: the manifest (D7) and the verdict of loading one (D16).

The filesystem checks (exists, executable, symlinks, permissions) belong to
the plugin-directory adapter; this module holds what can be decided from the
manifest's content and the operator's config alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ductile.domain.errors import ManifestError
from ductile.domain.job import Command
from ductile.domain.protocol import SUPPORTED_PROTOCOLS

KNOWN_COMMANDS = frozenset(c.value for c in Command)
_MANIFEST_KEYS = frozenset(
    {"name", "version", "protocol", "entrypoint", "description", "commands", "config_keys"}
)


@attrs.frozen(kw_only=True)
class Manifest:
    name: str
    version: str
    protocol: int
    entrypoint: str
    description: str = ""
    commands: frozenset[str] = frozenset({"poll"})
    required_keys: tuple[str, ...] = ()
    optional_keys: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class Plugin:
    """A plugin that passed every check and may be spawned."""

    manifest: Manifest
    #: The plugin's directory, symlinks resolved.
    directory: str
    #: The entrypoint's absolute path, symlinks resolved, inside ``directory``'s root.
    executable: str

    @property
    def name(self) -> str:
        return self.manifest.name

    def supports(self, command: str) -> bool:
        return command in self.manifest.commands


@attrs.frozen(kw_only=True)
class Refusal:
    """A plugin that was not loaded, and the human reason why."""

    name: str
    directory: str
    reason: str


def _str_list(raw: object, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
        raise ManifestError(f"'{where}' must be a list of names")
    return tuple(raw)


def parse_manifest(raw: object, *, directory_name: str) -> Manifest:
    """Validate a manifest's content. Raises :class:`ManifestError` with a human reason."""
    if not isinstance(raw, dict):
        raise ManifestError("manifest.yaml must be a mapping of keys to values")
    unknown = sorted(str(k) for k in raw if k not in _MANIFEST_KEYS)
    if unknown:
        raise ManifestError(f"manifest has unknown keys: {', '.join(unknown)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ManifestError("manifest 'name' is missing")
    if name != directory_name:
        raise ManifestError(f"manifest name '{name}' does not match its directory '{directory_name}'")
    version = raw.get("version")
    if isinstance(version, int | float) and not isinstance(version, bool):
        version = str(version)
    if not isinstance(version, str) or not version:
        raise ManifestError("manifest 'version' is missing")
    protocol = raw.get("protocol")
    if isinstance(protocol, bool) or not isinstance(protocol, int):
        raise ManifestError("manifest 'protocol' must be a number (1)")
    if protocol not in SUPPORTED_PROTOCOLS:
        supported = ", ".join(str(p) for p in sorted(SUPPORTED_PROTOCOLS))
        raise ManifestError(f"protocol {protocol} is not supported (this core speaks {supported})")
    entrypoint = raw.get("entrypoint")
    if not isinstance(entrypoint, str) or not entrypoint.strip():
        raise ManifestError("manifest 'entrypoint' is missing")
    if entrypoint.startswith("/"):
        raise ManifestError(f"entrypoint '{entrypoint}' must be relative to the plugin directory")
    if ".." in entrypoint.replace("\\", "/").split("/"):
        raise ManifestError(f"entrypoint '{entrypoint}' must not contain '..'")
    if "\x00" in entrypoint:
        raise ManifestError("entrypoint contains a NUL byte")
    description = raw.get("description") or ""
    if not isinstance(description, str):
        raise ManifestError("manifest 'description' must be text")
    commands_raw = raw.get("commands")
    if commands_raw is None:
        raise ManifestError("manifest 'commands' is missing (e.g. [poll, handle, health])")
    commands = _str_list(commands_raw, "commands")
    bad = sorted(set(commands) - KNOWN_COMMANDS)
    if bad:
        known = ", ".join(sorted(KNOWN_COMMANDS))
        raise ManifestError(f"unknown command(s) {', '.join(bad)}; known: {known}")
    if not commands:
        raise ManifestError("manifest 'commands' is empty")
    keys = raw.get("config_keys") or {}
    if not isinstance(keys, dict) or set(keys) - {"required", "optional"}:
        raise ManifestError("'config_keys' must be a mapping with 'required' and/or 'optional' lists")
    return Manifest(
        name=name,
        version=version,
        protocol=protocol,
        entrypoint=entrypoint,
        description=description,
        commands=frozenset(commands),
        required_keys=_str_list(keys.get("required"), "config_keys.required"),
        optional_keys=_str_list(keys.get("optional"), "config_keys.optional"),
    )


def missing_config_keys(manifest: Manifest, config: Mapping[str, Any]) -> list[str]:
    """Required keys the operator did not set (a null value counts as unset)."""
    return [k for k in manifest.required_keys if config.get(k) is None]


@attrs.frozen(kw_only=True)
class Discovery:
    """What a look at the plugins directory found."""

    plugins: Mapping[str, Plugin] = attrs.field(factory=dict)
    refused: tuple[Refusal, ...] = ()
    disabled: tuple[str, ...] = ()
