"""The plugin manifest (D7, D16): every refusal reason, and required config keys."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ductile.domain.errors import DuctileError, ManifestError
from ductile.domain.plugin import KNOWN_COMMANDS, Manifest, Plugin, missing_config_keys, parse_manifest


def good(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "withings",
        "version": "1.0.0",
        "protocol": 1,
        "entrypoint": "run.py",
        "description": "Fetch health data",
        "commands": ["poll", "handle", "health"],
        "config_keys": {"required": ["client_id"], "optional": ["access_token"]},
    }
    for key, value in changes.items():
        if value is _DROP:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw


_DROP = object()


def refusal(raw: object, directory_name: str = "withings") -> str:
    with pytest.raises(ManifestError) as info:
        parse_manifest(raw, directory_name=directory_name)
    assert isinstance(info.value, DuctileError)
    assert isinstance(info.value, ValueError)
    return str(info.value)


def test_full_manifest() -> None:
    assert parse_manifest(good(), directory_name="withings") == Manifest(
        name="withings",
        version="1.0.0",
        protocol=1,
        entrypoint="run.py",
        description="Fetch health data",
        commands=frozenset({"poll", "handle", "health"}),
        required_keys=("client_id",),
        optional_keys=("access_token",),
    )


def test_minimal_manifest_defaults() -> None:
    raw = good(description=_DROP, config_keys=_DROP, commands=["poll"])
    m = parse_manifest(raw, directory_name="withings")
    assert m.description == ""
    assert m.required_keys == ()
    assert m.optional_keys == ()
    assert m.commands == frozenset({"poll"})


@pytest.mark.parametrize(("version", "text"), [(1, "1"), (2.5, "2.5"), ("0.1.0-beta", "0.1.0-beta")])
def test_numeric_versions_become_text(version: object, text: str) -> None:
    assert parse_manifest(good(version=version), directory_name="withings").version == text


@pytest.mark.parametrize(
    "entrypoint", ["run.py", "bin/run", "./run.sh", "a..b/run", "..run", "run..", "sub dir/run"]
)
def test_acceptable_entrypoints(entrypoint: str) -> None:
    assert parse_manifest(good(entrypoint=entrypoint), directory_name="withings").entrypoint == entrypoint


def test_null_description_and_config_keys_are_absent() -> None:
    m = parse_manifest(good(description=None, config_keys=None), directory_name="withings")
    assert m.description == ""
    assert m.required_keys == ()


@pytest.mark.parametrize("raw", [None, [], ["name"], "name: withings", 42])
def test_not_a_mapping(raw: object) -> None:
    assert refusal(raw) == "manifest.yaml must be a mapping of keys to values"


def test_unknown_keys_are_named() -> None:
    assert refusal(good(zeta=1, alpha=2)) == (
        "zeta: unknown key 'zeta' (and 1 more: alpha); allowed here: name, version, protocol, entrypoint, "
        "description, commands, config_keys, concurrency_safe"
    )


def test_an_unknown_key_gets_a_did_you_mean_and_its_path() -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(good(comands=["poll"], commands=_DROP), directory_name="withings")
    assert info.value.path == ("comands",)
    assert info.value.detail.startswith("unknown key 'comands' (did you mean 'commands'?); allowed here: ")
    assert "(did you mean 'required'?)" in refusal(good(config_keys={"requird": ["a"]}))
    assert "pol (did you mean 'poll'?)" in refusal(good(commands=["pol"]))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": _DROP}, "manifest 'name' is missing"),
        ({"name": ""}, "manifest 'name' is missing"),
        ({"name": 5}, "manifest 'name' is missing"),
        ({"name": "other"}, "manifest name 'other' does not match its directory 'withings'"),
        ({"name": "Withings"}, "manifest name 'Withings' does not match its directory 'withings'"),
        ({"version": _DROP}, "manifest 'version' is missing"),
        ({"version": ""}, "manifest 'version' is missing"),
        ({"version": True}, "manifest 'version' is missing"),
        ({"version": ["1"]}, "manifest 'version' is missing"),
        ({"protocol": _DROP}, "manifest 'protocol' must be a number (1)"),
        ({"protocol": "1"}, "manifest 'protocol' must be a number (1)"),
        ({"protocol": True}, "manifest 'protocol' must be a number (1)"),
        ({"protocol": 1.0}, "manifest 'protocol' must be a number (1)"),
        ({"protocol": 2}, "protocol 2 needs the v2 manifest: start it with 'manifest_spec: ductile.plugin'"),
        ({"protocol": 0}, "protocol 0 is not supported (this core speaks 1 and 2)"),
        ({"entrypoint": _DROP}, "manifest 'entrypoint' is missing"),
        ({"entrypoint": ""}, "manifest 'entrypoint' is missing"),
        ({"entrypoint": "   "}, "manifest 'entrypoint' is missing"),
        ({"entrypoint": 7}, "manifest 'entrypoint' is missing"),
        (
            {"entrypoint": "/usr/bin/python"},
            "entrypoint '/usr/bin/python' must be relative to the plugin directory",
        ),
        ({"entrypoint": "../other/run.py"}, "entrypoint '../other/run.py' must not contain '..'"),
        ({"entrypoint": "bin/../../run.py"}, "entrypoint 'bin/../../run.py' must not contain '..'"),
        ({"entrypoint": ".."}, "entrypoint '..' must not contain '..'"),
        ({"entrypoint": "bin\\..\\run.py"}, "must not contain '..'"),
        ({"entrypoint": "run\x00.py"}, "entrypoint contains a NUL byte"),
        ({"description": 5}, "manifest 'description' must be text"),
        ({"description": ["a"]}, "manifest 'description' must be text"),
        ({"commands": _DROP}, "manifest 'commands' is missing (e.g. [poll, handle, health])"),
        ({"commands": None}, "manifest 'commands' is missing (e.g. [poll, handle, health])"),
        ({"commands": "poll"}, "'commands' must be a list of names"),
        ({"commands": ["poll", 3]}, "'commands' must be a list of names"),
        ({"commands": ["poll", ""]}, "'commands' must be a list of names"),
        ({"commands": {"poll": True}}, "'commands' must be a list of names"),
        (
            {"commands": ["poll", "stream", "exec"]},
            "unknown command(s) exec, stream; known: handle, health, init, poll",
        ),
        ({"commands": []}, "manifest 'commands' is empty"),
        (
            {"config_keys": ["client_id"]},
            "'config_keys' must be a mapping with 'required' and/or 'optional' lists",
        ),
        ({"config_keys": "client_id"}, "'config_keys' must be a mapping"),
        (
            {"config_keys": {"needed": ["a"]}},
            "config_keys.needed: unknown key 'needed'; allowed here: required, optional",
        ),
        ({"config_keys": {"required": "client_id"}}, "'config_keys.required' must be a list of names"),
        ({"config_keys": {"required": [None]}}, "'config_keys.required' must be a list of names"),
        ({"config_keys": {"optional": [1]}}, "'config_keys.optional' must be a list of names"),
    ],
)
def test_refusals(changes: dict[str, Any], message: str) -> None:
    assert message in refusal(good(**changes))


def test_directory_name_is_compared_exactly() -> None:
    assert "does not match its directory 'withings '" in refusal(good(), directory_name="withings ")


def test_known_commands() -> None:
    assert frozenset({"poll", "handle", "health", "init"}) == KNOWN_COMMANDS


def test_plugin_supports_only_its_commands() -> None:
    plugin = Plugin(
        manifest=parse_manifest(good(), directory_name="withings"),
        directory="/srv/plugins/withings",
        executable="/srv/plugins/withings/run.py",
    )
    assert plugin.name == "withings"
    assert plugin.supports("poll")
    assert plugin.supports("health")
    assert not plugin.supports("init")


def manifest_or_error(raw: object) -> Manifest | ManifestError:
    try:
        return parse_manifest(raw, directory_name="withings")
    except ManifestError as e:
        return e


json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)
)
yaml_like = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=5,
)


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        yaml_like,
        st.fixed_dictionaries(
            {},
            optional={
                "name": st.one_of(st.just("withings"), yaml_like),
                "version": yaml_like,
                "protocol": st.one_of(st.just(1), yaml_like),
                "entrypoint": st.one_of(st.sampled_from(["run.py", "../x", "/abs"]), yaml_like),
                "description": yaml_like,
                "commands": st.one_of(
                    st.lists(st.sampled_from(["poll", "handle", "x"]), max_size=3), yaml_like
                ),
                "config_keys": yaml_like,
            },
        ),
    )
)
def test_any_content_gives_manifest_or_manifest_error(raw: object) -> None:
    m = manifest_or_error(raw)
    if isinstance(m, ManifestError):
        assert str(m), "a refusal needs a reason"
        return
    assert m.name == "withings"
    assert m.protocol == 1
    assert m.commands
    assert m.commands <= KNOWN_COMMANDS
    assert ".." not in m.entrypoint.split("/")
    assert not m.entrypoint.startswith("/")


# --- required config keys ----------------------------------------------------------------


def manifest_requiring(*keys: str) -> Manifest:
    return Manifest(
        name="p", version="1", protocol=1, entrypoint="run", required_keys=keys, optional_keys=("opt",)
    )


def test_missing_config_keys_in_manifest_order() -> None:
    m = manifest_requiring("client_id", "client_secret", "region")
    assert missing_config_keys(m, {"region": "eu"}) == ["client_id", "client_secret"]
    assert missing_config_keys(m, {"client_id": "a", "client_secret": "b", "region": "eu"}) == []


def test_null_counts_as_unset_but_falsy_values_are_set() -> None:
    m = manifest_requiring("a", "b", "c", "d")
    assert missing_config_keys(m, {"a": None, "b": "", "c": 0, "d": False}) == ["a"]


def test_optional_keys_are_never_missing() -> None:
    assert missing_config_keys(manifest_requiring(), {}) == []


@settings(max_examples=200, deadline=None)
@given(
    required=st.lists(st.sampled_from("abcdef"), unique=True),
    config=st.dictionaries(st.sampled_from("abcdefgh"), st.none() | st.integers()),
)
def test_missing_config_keys_property(required: list[str], config: dict[str, int | None]) -> None:
    missing = missing_config_keys(manifest_requiring(*required), config)
    assert missing == [k for k in required if config.get(k) is None]
