"""Manifest format 2: the ecosystem's ``manifest_spec: ductile.plugin`` manifest.

The format of the upstream plugin collection (``docs/plugins.md``, "Manifest
v2"): ``manifest_spec`` (exactly ``ductile.plugin``), ``manifest_version``
(exactly 1), ``name`` (the plugin's identity, which may differ from its
folder's name), ``version``, ``protocol: 2``, ``entrypoint``,
``description``, ``concurrency_safe``, ``commands`` (objects, custom names
allowed), ``fact_outputs`` and ``config_keys``. Unknown keys are refused at
every level with a "did you mean", each refusal naming the key path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ductile.domain.errors import ManifestError
from ductile.domain.plugin import checks
from ductile.domain.plugin.model import CommandSpec, CommandType, FactOutput, Manifest
from ductile.domain.protocol import PROTOCOL_V2

SPEC = "ductile.plugin"
SPEC_VERSION = 1
KEYS = (
    "manifest_spec",
    "manifest_version",
    "name",
    "version",
    "protocol",
    "entrypoint",
    "description",
    "concurrency_safe",
    "commands",
    "fact_outputs",
    "config_keys",
)
COMMAND_KEYS = (
    "name",
    "type",
    "description",
    "idempotent",
    "retry_safe",
    "input_schema",
    "output_schema",
    "values",
)
FACT_KEYS = ("when", "from", "fact_type", "compatibility_view")
VALUES_KEYS = ("consume", "emit")
EMIT_KEYS = ("event", "values")
#: The JSON types a compact schema (``field: type``) may name.
JSON_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
#: Keys that make a mapping a JSON Schema rather than a compact ``field: type`` map.
_SCHEMA_WORDS = frozenset({"properties", "$schema", "$ref", "additionalProperties", "required", "items"})


def parse_spec(raw: Mapping[object, object]) -> Manifest:
    checks.unknown_keys(raw, KEYS)
    _exactly(raw, "manifest_spec", SPEC)
    _exactly(raw, "manifest_version", SPEC_VERSION)
    name = checks.plugin_name(raw.get("name"))
    version = checks.version(raw.get("version"))
    _exactly(raw, "protocol", PROTOCOL_V2)
    entrypoint = checks.entrypoint(raw.get("entrypoint"))
    description = checks.text(raw.get("description"), "manifest 'description'", "description")
    safe = checks.flag(raw.get("concurrency_safe"), "'concurrency_safe'", True, "concurrency_safe")
    commands = _commands(raw.get("commands"))
    facts = _fact_outputs(raw.get("fact_outputs"), {c.name for c in commands})
    required_keys, optional_keys = checks.config_keys(raw.get("config_keys"))
    return Manifest(
        name=name,
        version=version,
        protocol=PROTOCOL_V2,
        entrypoint=entrypoint,
        description=description,
        commands=frozenset(c.name for c in commands),
        required_keys=required_keys,
        optional_keys=optional_keys,
        manifest_format=2,
        concurrency_safe=bool(safe),
        command_specs=commands,
        fact_outputs=facts,
    )


def _exactly(raw: Mapping[object, object], key: str, expected: object) -> None:
    value = raw.get(key)
    if value is None:
        raise ManifestError(f"manifest '{key}' is missing (it must be {expected})", key)
    if type(value) is not type(expected) or value != expected:
        raise ManifestError(f"manifest '{key}' must be {expected}, not {value!r}"[:300], key)


# --------------------------------------------------------------------------- commands


def _commands(raw: object) -> tuple[CommandSpec, ...]:
    if raw is None:
        raise ManifestError("manifest 'commands' is missing (a list of {name, type} objects)", "commands")
    if not isinstance(raw, list):
        raise ManifestError("'commands' must be a list of {name, type} objects", "commands")
    if not raw:
        raise ManifestError("manifest 'commands' is empty", "commands")
    commands: list[CommandSpec] = []
    for index, item in enumerate(raw):
        command = _command(item, index)
        if any(c.name == command.name for c in commands):
            raise ManifestError(f"command '{command.name}' is listed twice", "commands", index, "name")
        commands.append(command)
    return tuple(commands)


def _command(raw: object, index: int) -> CommandSpec:
    where = ("commands", index)
    if isinstance(raw, str):
        raise ManifestError(
            f"commands are objects in a v2 manifest: write '- name: {raw[:40]}' "
            "and its 'type' (read or write)",
            *where,
        )
    fields = checks.mapping(raw, "a command", *where)
    checks.unknown_keys(fields, COMMAND_KEYS, *where)
    name = fields.get("name")
    if not isinstance(name, str) or not checks.COMMAND_NAME.fullmatch(name) or len(name) > 100:
        raise ManifestError(
            "a command's 'name' must start with a letter and hold only letters, digits, '_' and '-'",
            *where,
            "name",
        )
    kind = fields.get("type")
    if kind not in ("read", "write"):
        raise ManifestError(f"command '{name}' needs 'type': read or write", *where, "type")
    return CommandSpec(
        name=name,
        type=CommandType(kind),
        description=checks.text(
            fields.get("description"), "a command's 'description'", *where, "description"
        ),
        idempotent=checks.flag(fields.get("idempotent"), "'idempotent'", None, *where, "idempotent"),
        retry_safe=checks.flag(fields.get("retry_safe"), "'retry_safe'", None, *where, "retry_safe"),
        input_schema=schema(fields.get("input_schema"), *where, "input_schema"),
        output_schema=schema(fields.get("output_schema"), *where, "output_schema"),
        values=_values(fields.get("values"), *where, "values"),
    )


def schema(raw: object, *where: str | int) -> Mapping[str, Any] | None:
    """A JSON Schema as written, or the compact ``field: type`` map expanded into one.

    A mapping with a JSON Schema keyword (``properties``, ``required``,
    ``items``...) or a ``type`` of ``object`` is a schema; a mapping whose
    values all name JSON types is the compact form.
    """
    if raw is None:
        return None
    fields = checks.mapping(raw, "a schema", *where)
    compact = (
        bool(fields)
        and not (_SCHEMA_WORDS & {str(k) for k in fields})
        and fields.get("type") not in ("object", "array")
        and all(isinstance(v, str) and v in JSON_TYPES for v in fields.values())
    )
    if compact:
        return {"type": "object", "properties": {str(k): {"type": v} for k, v in fields.items()}}
    return {str(k): v for k, v in fields.items()}


def _values(raw: object, *where: str | int) -> Mapping[str, Any] | None:
    """The names-only contract ``{consume: [paths], emit: [{event, values: [paths]}]}``, kept as written."""
    if raw is None:
        return None
    fields = checks.mapping(raw, "'values'", *where)
    checks.unknown_keys(fields, VALUES_KEYS, *where)
    consume = checks.names(fields.get("consume"), "values.consume", *where, "consume")
    emits = fields.get("emit") or []
    if not isinstance(emits, list):
        raise ManifestError("'values.emit' must be a list of {event, values}", *where, "emit")
    emitted: list[dict[str, Any]] = []
    for index, item in enumerate(emits):
        at = (*where, "emit", index)
        entry = checks.mapping(item, "an emitted event", *at)
        checks.unknown_keys(entry, EMIT_KEYS, *at)
        event = entry.get("event")
        if not isinstance(event, str) or not event:
            raise ManifestError("an emitted event needs 'event': its type", *at, "event")
        emitted.append(
            {"event": event, "values": list(checks.names(entry.get("values"), "values", *at, "values"))}
        )
    return {"consume": list(consume), "emit": emitted}


# --------------------------------------------------------------------------- fact_outputs


def _fact_outputs(raw: object, commands: set[str]) -> tuple[FactOutput, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ManifestError("'fact_outputs' must be a list of rules", "fact_outputs")
    return tuple(_fact_output(item, index, commands) for index, item in enumerate(raw))


def _fact_output(raw: object, index: int, commands: set[str]) -> FactOutput:
    where = ("fact_outputs", index)
    fields = checks.mapping(raw, "a fact_outputs rule", *where)
    checks.unknown_keys(fields, FACT_KEYS, *where)
    when = checks.mapping(fields.get("when"), "'when'", *where, "when")
    checks.unknown_keys(when, ("command",), *where, "when")
    command = when.get("command")
    if not isinstance(command, str) or command not in commands:
        known = ", ".join(sorted(commands))
        raise ManifestError(
            f"'when.command' must name one of this manifest's commands ({known})", *where, "when", "command"
        )
    source = fields.get("from", "state_updates")
    if source != "state_updates":
        raise ManifestError("'from' must be state_updates (the only source of facts)", *where, "from")
    fact_type = fields.get("fact_type")
    if not isinstance(fact_type, str) or not fact_type.strip():
        raise ManifestError("a fact_outputs rule needs 'fact_type'", *where, "fact_type")
    view = fields.get("compatibility_view", "mirror_object")
    if view != "mirror_object":
        raise ManifestError(
            "'compatibility_view' must be mirror_object (the only view there is)",
            *where,
            "compatibility_view",
        )
    return FactOutput(command=command, fact_type=fact_type)
