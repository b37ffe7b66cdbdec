"""Manifest v2 (``manifest_spec: ductile.plugin``) beside format 1: every field, every refusal.

Every refusal carries the key path of the value at fault (discovery turns it
into a line of the file), and unknown keys get a "did you mean" at every level.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ductile.domain.errors import ManifestError
from ductile.domain.plugin import (
    CommandSpec,
    CommandType,
    FactOutput,
    Manifest,
    parse_manifest,
)
from ductile.domain.plugin.alias import chain, find_cycle


def v2(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "manifest_spec": "ductile.plugin",
        "manifest_version": 1,
        "name": "feed_watch",
        "version": "0.2.0",
        "protocol": 2,
        "entrypoint": "run.py",
        "description": "Watches a feed.",
        "concurrency_safe": False,
        "commands": [
            {
                "name": "poll",
                "type": "write",
                "description": "Fetch the feed.",
                "idempotent": True,
                "retry_safe": True,
                "input_schema": {"url": "string", "limit": "integer"},
                "output_schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
                "values": {"emit": [{"event": "feed_watch.item", "values": ["payload.url"]}]},
            },
            {"name": "health", "type": "read"},
            {"name": "sync-all", "type": "write", "values": {"consume": [], "emit": []}},
        ],
        "fact_outputs": [
            {
                "when": {"command": "poll"},
                "from": "state_updates",
                "fact_type": "feed_watch.snapshot",
                "compatibility_view": "mirror_object",
            }
        ],
        "config_keys": {"required": ["feed_url"], "optional": ["user_agent"]},
    }
    raw.update(changes)
    return raw


def refused(raw: object, directory_name: str = "folder") -> ManifestError:
    with pytest.raises(ManifestError) as info:
        parse_manifest(raw, directory_name=directory_name)
    return info.value


def test_every_field_is_read() -> None:
    manifest = parse_manifest(v2(), directory_name="some-other-folder")
    assert manifest == Manifest(
        name="feed_watch",
        version="0.2.0",
        protocol=2,
        entrypoint="run.py",
        description="Watches a feed.",
        commands=frozenset({"poll", "health", "sync-all"}),
        required_keys=("feed_url",),
        optional_keys=("user_agent",),
        manifest_format=2,
        concurrency_safe=False,
        command_specs=(
            CommandSpec(
                name="poll",
                type=CommandType.WRITE,
                description="Fetch the feed.",
                idempotent=True,
                retry_safe=True,
                input_schema={
                    "type": "object",
                    "properties": {"url": {"type": "string"}, "limit": {"type": "integer"}},
                },
                output_schema={"type": "object", "properties": {"n": {"type": "integer"}}},
                values={"consume": [], "emit": [{"event": "feed_watch.item", "values": ["payload.url"]}]},
            ),
            CommandSpec(name="health", type=CommandType.READ),
            CommandSpec(name="sync-all", type=CommandType.WRITE, values={"consume": [], "emit": []}),
        ),
        fact_outputs=(FactOutput(command="poll", fact_type="feed_watch.snapshot"),),
    )
    assert manifest.fact_rule("poll") == FactOutput(command="poll", fact_type="feed_watch.snapshot")
    assert manifest.fact_rule("health") is None
    assert manifest.command_spec("sync-all") is not None


def test_the_minimal_v2_manifest() -> None:
    raw = {
        "manifest_spec": "ductile.plugin",
        "manifest_version": 1,
        "name": "tiny",
        "version": 1,
        "protocol": 2,
        "entrypoint": "run.sh",
        "commands": [{"name": "poll", "type": "read"}],
    }
    manifest = parse_manifest(raw, directory_name="tiny")
    assert manifest.concurrency_safe is True
    assert manifest.fact_outputs == ()
    assert manifest.version == "1"


def test_format_1_keeps_its_rules_and_may_say_concurrency_safe() -> None:
    raw = {
        "name": "old",
        "version": "1",
        "protocol": 1,
        "entrypoint": "run",
        "commands": ["poll"],
        "concurrency_safe": False,
    }
    manifest = parse_manifest(raw, directory_name="old")
    assert (manifest.manifest_format, manifest.protocol, manifest.concurrency_safe) == (1, 1, False)


def test_an_empty_schema_and_empty_lists_are_accepted() -> None:
    commands = [{"name": "health", "type": "read", "input_schema": {}, "values": {"consume": [], "emit": []}}]
    manifest = parse_manifest(v2(commands=commands, fact_outputs=None), directory_name="x")
    assert manifest.command_specs[0].input_schema == {}


def test_a_full_json_schema_is_kept_as_written() -> None:
    full = {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False}
    commands = [{"name": "handle", "type": "write", "input_schema": copy.deepcopy(full)}]
    manifest = parse_manifest(v2(commands=commands, fact_outputs=None), directory_name="x")
    assert manifest.command_specs[0].input_schema == full


@pytest.mark.parametrize(
    ("changes", "path", "needle"),
    [
        ({"manifest_spec": "ductile.plugin.v2"}, ("manifest_spec",), "must be ductile.plugin"),
        ({"manifest_version": 2}, ("manifest_version",), "must be 1"),
        ({"manifest_version": "1"}, ("manifest_version",), "must be 1"),
        ({"protocol": 1}, ("protocol",), "must be 2"),
        ({"protocol": None}, ("protocol",), "'protocol' is missing"),
        ({"name": None}, ("name",), "'name' is missing"),
        ({"name": ".hidden"}, ("name",), "is not a valid plugin name"),
        ({"name": "a/b"}, ("name",), "is not a valid plugin name"),
        ({"entrypoint": "../x"}, ("entrypoint",), "must not contain '..'"),
        ({"concurrency_safe": "no"}, ("concurrency_safe",), "must be true or false"),
        ({"commands": []}, ("commands",), "is empty"),
        ({"commands": None}, ("commands",), "is missing"),
        ({"commands": ["poll", "health"]}, ("commands", 0), "commands are objects in a v2 manifest"),
        ({"commands": [{"name": "poll"}]}, ("commands", 0, "type"), "needs 'type': read or write"),
        ({"commands": [{"name": "poll", "type": "rw"}]}, ("commands", 0, "type"), "read or write"),
        ({"commands": [{"name": "9lives", "type": "read"}]}, ("commands", 0, "name"), "start with a letter"),
        ({"commands": [{"name": "a b", "type": "read"}]}, ("commands", 0, "name"), "start with a letter"),
        (
            {"commands": [{"name": "poll", "type": "read"}, {"name": "poll", "type": "write"}]},
            ("commands", 1, "name"),
            "listed twice",
        ),
        (
            {"commands": [{"name": "poll", "type": "read", "idempotent": "yes"}]},
            ("commands", 0, "idempotent"),
            "true or false",
        ),
        (
            {"commands": [{"name": "poll", "type": "read", "input_schema": ["a"]}]},
            ("commands", 0, "input_schema"),
            "must be a mapping",
        ),
        (
            {"commands": [{"name": "poll", "type": "read", "values": {"emit": [{"values": []}]}}]},
            ("commands", 0, "values", "emit", 0, "event"),
            "needs 'event'",
        ),
        ({"fact_outputs": {"when": "poll"}}, ("fact_outputs",), "must be a list"),
        (
            {"fact_outputs": [{"when": {"command": "sync"}, "fact_type": "t"}]},
            ("fact_outputs", 0, "when", "command"),
            "must name one of this manifest's commands",
        ),
        (
            {"fact_outputs": [{"when": {"command": "poll"}, "fact_type": "t", "from": "result"}]},
            ("fact_outputs", 0, "from"),
            "must be state_updates",
        ),
        (
            {
                "fact_outputs": [
                    {"when": {"command": "poll"}, "fact_type": "t", "compatibility_view": "merge"}
                ]
            },
            ("fact_outputs", 0, "compatibility_view"),
            "must be mirror_object",
        ),
        (
            {"fact_outputs": [{"when": {"command": "poll"}}]},
            ("fact_outputs", 0, "fact_type"),
            "needs 'fact_type'",
        ),
        ({"config_keys": {"needed": ["a"]}}, ("config_keys", "needed"), "allowed here: required, optional"),
    ],
)
def test_refusals_name_the_key_path(changes: dict[str, Any], path: tuple[Any, ...], needle: str) -> None:
    error = refused(v2(**changes))
    assert error.path == path
    assert needle in error.detail
    assert str(error).startswith(".".join(str(p) for p in path if isinstance(p, str))[:8])


@pytest.mark.parametrize(
    ("changes", "path", "hint"),
    [
        ({"descripton": "x"}, ("descripton",), "did you mean 'description'?"),
        ({"fact_output": []}, ("fact_output",), "did you mean 'fact_outputs'?"),
        ({"commands": [{"name": "poll", "typ": "read"}]}, ("commands", 0, "typ"), "did you mean 'type'?"),
        (
            {"commands": [{"name": "poll", "type": "read", "values": {"emits": []}}]},
            ("commands", 0, "values", "emits"),
            "did you mean 'emit'?",
        ),
        (
            {"fact_outputs": [{"when": {"comand": "poll"}, "fact_type": "t"}]},
            ("fact_outputs", 0, "when", "comand"),
            "did you mean 'command'?",
        ),
        (
            {"fact_outputs": [{"when": {"command": "poll"}, "fact_typ": "t"}]},
            ("fact_outputs", 0, "fact_typ"),
            "did you mean 'fact_type'?",
        ),
    ],
)
def test_unknown_keys_are_refused_at_every_level_with_a_did_you_mean(
    changes: dict[str, Any], path: tuple[Any, ...], hint: str
) -> None:
    error = refused(v2(**changes))
    assert error.path == path
    assert error.detail.startswith(f"unknown key '{path[-1]}' ({hint})")
    assert "allowed here:" in error.detail


def test_the_format_is_chosen_by_manifest_spec_alone() -> None:
    # A format-1 manifest with v2 keys but no manifest_spec: refused for the unknown key.
    raw = {
        "name": "x",
        "version": "1",
        "protocol": 1,
        "entrypoint": "r",
        "commands": ["poll"],
        "fact_outputs": [],
    }
    assert refused(raw, "x").path == ("fact_outputs",)


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=6))
yaml_like = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None)
@given(
    key=st.sampled_from(
        [
            "name",
            "version",
            "protocol",
            "entrypoint",
            "concurrency_safe",
            "commands",
            "fact_outputs",
            "config_keys",
        ]
    ),
    value=yaml_like,
)
def test_any_value_of_any_key_gives_a_manifest_or_a_manifest_error(key: str, value: object) -> None:
    try:
        parse_manifest(v2(**{key: value}), directory_name="x")
        message = "accepted"
    except ManifestError as e:
        message = str(e)
    assert message


# --------------------------------------------------------------------------- aliases


@pytest.mark.parametrize(
    ("uses", "cycle"),
    [
        ({}, None),
        ({"a": "base"}, None),
        ({"a": "b", "b": "base"}, None),
        ({"a": "a"}, ["a", "a"]),
        ({"a": "b", "b": "a"}, ["a", "b", "a"]),
        ({"x": "a", "a": "b", "b": "c", "c": "a"}, ["a", "b", "c", "a"]),
    ],
)
def test_alias_cycles_of_any_length_are_found(uses: dict[str, str], cycle: list[str] | None) -> None:
    assert find_cycle(uses) == cycle


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from("abcdef"), st.sampled_from("abcdefgh"), max_size=6))
def test_a_chain_without_a_cycle_ends_at_a_name_that_is_no_alias(uses: dict[str, str]) -> None:
    if find_cycle(uses) is not None:
        return
    for name in uses:
        names = chain(name, uses)
        assert names[-1] not in uses
        assert len(names) == len(set(names))


# --------------------------------------------------------------------------- shapes the ecosystem uses


ECOSYSTEM_SHAPES = """
manifest_spec: ductile.plugin
manifest_version: 1
name: pdf-convert
version: 0.2.0
protocol: 2
entrypoint: run.py
concurrency_safe: true
description: "Converts a PDF (≤ 50 pages) to Markdown — one document per event."
commands:
  - name: handle
    type: write
    description: "Convert one document."
    idempotent: true
    retry_safe: true
    input_schema:
      type: object
      properties:
        source_path: {type: string, description: "Absolute path."}
        pages: {type: [integer, "null"]}
      additionalProperties: false
    output_schema:
      type: object
      properties:
        status: {type: string, enum: [ok, error]}
        logs: {type: array, items: {type: object}}
      required: [status, logs]
    values:
      consume: [payload.source_path, payload.pages]
      emit: []
  - name: summarize
    type: read
    values:
      consume: []
      emit:
        - event: pdf.summary_ready
          values: [payload.path]
  - name: health
    type: read
    input_schema: {}
fact_outputs:
  - when:
      command: summarize
    from: state_updates
    fact_type: pdf-convert.snapshot
    compatibility_view: mirror_object
config_keys:
  required: []
  optional:
    - output_dir
"""


def test_the_shapes_the_ecosystems_manifests_use_are_all_accepted() -> None:
    import yaml

    manifest = parse_manifest(yaml.safe_load(ECOSYSTEM_SHAPES), directory_name="pdf-convert-folder")
    assert manifest.name == "pdf-convert"
    assert manifest.commands == frozenset({"handle", "summarize", "health"})
    handle = manifest.command_spec("handle")
    assert handle is not None
    assert handle.input_schema is not None
    assert handle.input_schema["properties"]["pages"] == {"type": ["integer", "null"]}  # kept as written
    assert manifest.fact_rule("summarize") == FactOutput(
        command="summarize", fact_type="pdf-convert.snapshot"
    )
    assert manifest.required_keys == ()
