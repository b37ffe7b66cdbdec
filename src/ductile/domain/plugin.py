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
from ductile.domain.suggest import did_you_mean

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
    problem = unknown_keys(raw, _MANIFEST_KEYS)
    if problem is not None:
        raise ManifestError(problem)
    return raw


def unknown_keys(
    raw: Mapping[Any, object], allowed: frozenset[str], *, where: str = "manifest"
) -> str | None:
    """The message for the keys of ``raw`` that are not ``allowed`` (None when all are), each
    with a "did you mean" and the allowed keys listed: ``manifest has an unknown key 'comands'
    (did you mean 'commands'?); allowed: ...``. One place, so a new manifest version only
    passes its own ``allowed``."""
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if not unknown:
        return None
    named = ", ".join(f"'{key}'{did_you_mean(key, allowed)}" for key in unknown)
    noun = "an unknown key" if len(unknown) == 1 else "unknown keys"
    return f"{where} has {noun} {named}; allowed: {', '.join(sorted(allowed))}"


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
        named = ", ".join(f"{c}{did_you_mean(c, KNOWN_COMMANDS)}" for c in bad)
        raise ManifestError(f"unknown command(s) {named}; known: {known}")
    if not commands:
        raise ManifestError("manifest 'commands' is empty")
    return frozenset(commands)


def _config_keys(raw: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The required and the optional config keys."""
    keys = raw or {}
    if not isinstance(keys, dict):
        raise ManifestError("'config_keys' must be a mapping with 'required' and/or 'optional' lists")
    problem = unknown_keys(keys, frozenset({"required", "optional"}), where="'config_keys'")
    if problem is not None:
        raise ManifestError(problem)
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
