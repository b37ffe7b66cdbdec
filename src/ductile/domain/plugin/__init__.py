"""Plugins as values: manifests in two formats, loaded plugins, aliases, refusals (D7, D16).

The filesystem checks (exists, executable, symlinks, permissions) belong to
the plugin-directory adapter; this package holds what can be decided from a
manifest's content and the operator's config alone:

* :mod:`.model` — the values (:class:`Manifest`, :class:`Plugin`...);
* :mod:`.legacy` and :mod:`.spec` — the two manifest formats, chosen by
  :func:`parse_manifest`: a manifest with ``manifest_spec`` is the
  ecosystem's v2 manifest, any other is ductile's first one;
* :mod:`.checks` — the checks both formats share;
* :mod:`.alias` — ``uses:``, a plugin under a second name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ductile.domain.errors import ManifestError
from ductile.domain.plugin.legacy import KNOWN_COMMANDS, parse_legacy
from ductile.domain.plugin.model import (
    CommandSpec,
    CommandType,
    Discovery,
    FactOutput,
    Manifest,
    Plugin,
    Refusal,
)
from ductile.domain.plugin.spec import parse_spec

if TYPE_CHECKING:
    from ductile.domain.config import PluginConfig

__all__ = [
    "KNOWN_COMMANDS",
    "CommandSpec",
    "CommandType",
    "Discovery",
    "FactOutput",
    "Manifest",
    "Plugin",
    "Refusal",
    "missing_config_keys",
    "parse_manifest",
    "settings_problem",
]


def parse_manifest(raw: object, *, directory_name: str) -> Manifest:
    """Validate a manifest's content. Raises :class:`ManifestError` with a human reason and
    the key path at fault.

    ``directory_name`` is the plugin folder's name, which a format-1 manifest's
    ``name`` must equal (a v2 manifest names itself).
    """
    if not isinstance(raw, dict):
        raise ManifestError("manifest.yaml must be a mapping of keys to values")
    if "manifest_spec" in raw:
        return parse_spec(raw)
    return parse_legacy(raw, directory_name=directory_name)


def missing_config_keys(manifest: Manifest, config: Mapping[str, Any]) -> list[str]:
    """Required keys the operator did not set (a null value counts as unset)."""
    return [k for k in manifest.required_keys if config.get(k) is None]


def settings_problem(manifest: Manifest, settings: PluginConfig) -> str | None:
    """Why the operator's settings do not fit this manifest (a reason to refuse the plugin), or None:
    required config keys left out, or a ``timeouts`` entry for a command the manifest lacks."""
    missing = missing_config_keys(manifest, settings.config)
    if missing:
        return (
            f"missing required config key(s): {', '.join(missing)} "
            f"(set them under plugins.{settings.name}.config)"
        )
    unknown = sorted(set(settings.timeouts.custom) - manifest.commands)
    if unknown:
        commands = ", ".join(sorted(manifest.commands))
        return (
            f"plugins.{settings.name}.timeouts names {', '.join(unknown)}, which its manifest does not "
            f"have (its commands: {commands})"
        )
    return None
