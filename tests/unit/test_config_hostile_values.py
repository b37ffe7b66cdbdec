"""Values that used to pass ``config check`` and then break the daemon (issue 19, items 8 and 13).

A lone surrogate escape (``"\\ud83d"``) in a timer's ``emit.payload`` made every
scheduler tick fail; in a plugin's ``config``, every job of that plugin. They
are refused when the config is read now, naming the key path and the line; an
escaped surrogate *pair* is read as the character it encodes (as JSON reads
it). A whitespace-only endpoint secret is refused like an empty one.
"""

from __future__ import annotations

import json
from zoneinfo import ZoneInfo

import pytest

from ductile.adapters.config import parse_config
from ductile.domain.config import Config
from ductile.domain.errors import ConfigError

LOCAL = ZoneInfo("UTC")


def parse(text: str, env: dict[str, str] | None = None) -> Config:
    return parse_config(text, source="test.yaml", base_dir="/srv", env=env or {}, local_tz=LOCAL)


def refused(text: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, env)
    return info.value


@pytest.mark.parametrize(
    ("text", "path", "line"),
    [
        (
            "plugins:\n  p:\n    schedule:\n      every: 1m\n"
            '      emit: {type: t, payload: {a: "\\ud83d"}}\n',
            "plugins.p.schedule.emit.payload.a",
            5,
        ),
        ('plugins:\n  p:\n    config:\n      token: "x\\udc80y"\n', "plugins.p.config.token", 4),
        ('plugins:\n  p:\n    config:\n      list: [ok, "\\ude00"]\n', "plugins.p.config.list[1]", 4),
        ('plugins:\n  p:\n    config:\n      "\\ud83d": 1\n', "plugins.p.config", 4),
        ('routes:\n  - {from: a, event_type: "\\ud800", to: b}\n', "routes[0].event_type", 2),
    ],
)
def test_a_lone_surrogate_escape_is_refused_with_its_key_path_and_line(
    text: str, path: str, line: int
) -> None:
    err = refused(text)
    assert err.path == path, str(err)
    assert err.line == line, str(err)
    assert "lone surrogate" in str(err)
    str(err).encode("utf-8")  # the message itself can be printed and logged


def test_an_escaped_surrogate_pair_is_the_character_it_encodes() -> None:
    config = parse('plugins:\n  p:\n    config: {smile: "\\ud83d\\ude00", plain: "\\U0001F600"}\n')
    settings = config.plugins["p"].config
    assert settings == {"smile": "\U0001f600", "plain": "\U0001f600"}
    json.dumps(settings, ensure_ascii=False).encode("utf-8")


def test_an_environment_value_that_is_not_utf8_is_refused_naming_the_variable_and_key() -> None:
    # os.environ keeps undecodable bytes as lone surrogates (surrogateescape)
    err = refused("plugins:\n  p:\n    config:\n      token: ${TOKEN}\n", {"TOKEN": "abc\udcff"})
    assert err.path == "plugins.p.config.token"
    assert err.line == 4
    assert "TOKEN is not valid UTF-8" in str(err)


@pytest.mark.parametrize(("written", "env"), [("'   '", {}), ('"\\t "', {}), ("'${S}'", {"S": "  \t "})])
def test_a_whitespace_only_secret_is_refused(written: str, env: dict[str, str]) -> None:
    err = refused(f"webhooks:\n  endpoints:\n    - {{path: /a, plugin: p, secret: {written}}}\n", env)
    assert err.path == "webhooks.endpoints[0].secret"
    assert "only whitespace" in str(err)


@pytest.mark.parametrize(
    ("written", "path"),
    [("/hook/pA", "/hook/pA"), ("/hook/p%41", "/hook/pA"), ("/hook/%70%41", "/hook/pA"), ("/a%2Fb", "/a/b")],
)
def test_an_endpoint_path_is_read_decoded_as_requests_are_matched(written: str, path: str) -> None:
    """Item 12: '/hook/q%41' was reachable only as '/hook/q%2541'."""
    config = parse(f"webhooks:\n  endpoints:\n    - {{path: '{written}', plugin: p, secret: s}}\n")
    assert config.webhooks is not None
    assert config.webhooks.endpoints[0].path == path


@pytest.mark.parametrize(
    "written", ["/hook/%2541", "/hook/a%20b", "/hook/%0a", "/hook/%zz", "/hook/%C3%A9", "/%ff"]
)
def test_an_endpoint_path_that_decodes_to_what_a_path_cannot_hold_is_refused(written: str) -> None:
    err = refused(f"webhooks:\n  endpoints:\n    - {{path: '{written}', plugin: p, secret: s}}\n")
    assert err.path == "webhooks.endpoints[0].path"
    assert "decodes to a path" in str(err)


def test_two_spellings_of_one_endpoint_path_are_one_path() -> None:
    err = refused(
        "webhooks:\n  endpoints:\n    - {path: /hook/pA, plugin: p, secret: s}\n"
        "    - {path: '/hook/p%41', plugin: q, secret: t}\n"
    )
    assert err.path == "webhooks.endpoints[1].path"
    assert "already used by endpoints[0]" in str(err)
