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
    {
        "name",
        "version",
        "protocol",
        "entrypoint",
        "description",
        "commands",
        "config_keys",
        "concurrency_safe",
    }
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
    #: False: two runs of this plugin must never overlap, whatever ``parallelism`` says (D14 [A2]).
    concurrency_safe: bool = True


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


def parse_manifest(raw: object, *, directory_name: str) -> Manifest:
    """Validate a manifest's content. Raises :class:`ManifestError` with a human reason.

    One check per key, always in this order, so a manifest with several
    problems is always refused for the same first one.
    """
    fields = _known_mapping(raw)
    name = _name(fields.get("name"), directory_name)
    version = _version(fields.get("version"))
    protocol = _protocol(fields.get("protocol"))
    entrypoint = _entrypoint(fields.get("entrypoint"))
    description = _description(fields.get("description"))
    commands = _commands(fields.get("commands"))
    required_keys, optional_keys = _config_keys(fields.get("config_keys"))
    concurrency_safe = _flag(fields.get("concurrency_safe"), "concurrency_safe", default=True)
    return Manifest(
        name=name,
        version=version,
        protocol=protocol,
        entrypoint=entrypoint,
        description=description,
        commands=commands,
        required_keys=required_keys,
        optional_keys=optional_keys,
        concurrency_safe=concurrency_safe,
    )


def _flag(raw: object, key: str, *, default: bool) -> bool:
    if raw is None:
        return default
    if not isinstance(raw, bool):
        raise ManifestError(f"manifest '{key}' must be true or false")
    return raw


def _known_mapping(raw: object) -> Mapping[Any, object]:
    if not isinstance(raw, dict):
        raise ManifestError("manifest.yaml must be a mapping of keys to values")
    unknown = sorted(str(k) for k in raw if k not in _MANIFEST_KEYS)
    if unknown:
        raise ManifestError(f"manifest has unknown keys: {', '.join(unknown)}")
    return raw


def _name(name: object, directory_name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ManifestError("manifest 'name' is missing")
    if name != directory_name:
        raise ManifestError(f"manifest name '{name}' does not match its directory '{directory_name}'")
    return name


def _version(version: object) -> str:
    if isinstance(version, int | float) and not isinstance(version, bool):
        version = str(version)
    if not isinstance(version, str) or not version:
        raise ManifestError("manifest 'version' is missing")
    return version


def _protocol(protocol: object) -> int:
    if isinstance(protocol, bool) or not isinstance(protocol, int):
        raise ManifestError("manifest 'protocol' must be a number (1)")
    if protocol not in SUPPORTED_PROTOCOLS:
        supported = ", ".join(str(p) for p in sorted(SUPPORTED_PROTOCOLS))
        raise ManifestError(f"protocol {protocol} is not supported (this core speaks {supported})")
    return protocol


def _entrypoint(entrypoint: object) -> str:
    if not isinstance(entrypoint, str) or not entrypoint.strip():
        raise ManifestError("manifest 'entrypoint' is missing")
    if entrypoint.startswith("/"):
        raise ManifestError(f"entrypoint '{entrypoint}' must be relative to the plugin directory")
    if ".." in entrypoint.replace("\\", "/").split("/"):
        raise ManifestError(f"entrypoint '{entrypoint}' must not contain '..'")
    if "\x00" in entrypoint:
        raise ManifestError("entrypoint contains a NUL byte")
    return entrypoint


def _description(description: object) -> str:
    description = description or ""
    if not isinstance(description, str):
        raise ManifestError("manifest 'description' must be text")
    return description


def _commands(raw: object) -> frozenset[str]:
    if raw is None:
        raise ManifestError("manifest 'commands' is missing (e.g. [poll, handle, health])")
    commands = _str_list(raw, "commands")
    bad = sorted(set(commands) - KNOWN_COMMANDS)
    if bad:
        known = ", ".join(sorted(KNOWN_COMMANDS))
        raise ManifestError(f"unknown command(s) {', '.join(bad)}; known: {known}")
    if not commands:
        raise ManifestError("manifest 'commands' is empty")
    return frozenset(commands)


def _config_keys(raw: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The required and the optional config keys."""
    keys = raw or {}
    if not isinstance(keys, dict) or set(keys) - {"required", "optional"}:
        raise ManifestError("'config_keys' must be a mapping with 'required' and/or 'optional' lists")
    return (
        _str_list(keys.get("required"), "config_keys.required"),
        _str_list(keys.get("optional"), "config_keys.optional"),
    )


def _str_list(raw: object, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
        raise ManifestError(f"'{where}' must be a list of names")
    return tuple(raw)


def missing_config_keys(manifest: Manifest, config: Mapping[str, Any]) -> list[str]:
    """Required keys the operator did not set (a null value counts as unset)."""
    return [k for k in manifest.required_keys if config.get(k) is None]


@attrs.frozen(kw_only=True)
class Discovery:
    """What a look at the plugins directory found."""

    plugins: Mapping[str, Plugin] = attrs.field(factory=dict)
    refused: tuple[Refusal, ...] = ()
    disabled: tuple[str, ...] = ()
