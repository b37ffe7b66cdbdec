"""``service.plugin_user`` and ``plugins.<name>.user``: read, checked, and which one applies (ADR 0041)."""

from __future__ import annotations

from datetime import UTC

import pytest

from ductile.adapters.config import parse_config
from ductile.domain.config import Config
from ductile.domain.errors import ConfigError


def parse(text: str) -> Config:
    return parse_config(
        text,
        source="/etc/ductile/ductile.yaml",
        base_dir="/etc/ductile",
        env={"PLUGIN_USER": "ductile-plugins"},
        local_tz=UTC,
    )


def test_neither_set_runs_plugins_as_the_daemons_user() -> None:
    assert parse("plugins: {p: {}}").run_as("p") is None


def test_the_service_default_and_the_plugins_own_setting() -> None:
    config = parse(
        "service: {plugin_user: nobody}\nplugins: {p: {}, q: {user: 0}, r: {user: '${PLUGIN_USER}'}}"
    )
    assert config.run_as("p") == ("nobody", "service.plugin_user")
    assert config.run_as("q") == ("0", "plugins.q.user")  # a uid, kept as its digits
    assert config.run_as("r") == ("ductile-plugins", "plugins.r.user")
    assert config.run_as("on-disk-only") == ("nobody", "service.plugin_user")


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("service: {plugin_user: 'no body'}", "service.plugin_user"),
        ("service: {plugin_user: ''}", "service.plugin_user"),
        ("service: {plugin_user: -1}", "service.plugin_user"),
        ("service: {plugin_user: [nobody]}", "service.plugin_user"),
        ("plugins: {p: {user: 'a:b'}}", "plugins.p.user"),
        ("plugins: {p: {user: true}}", "plugins.p.user"),
    ],
)
def test_a_bad_user_is_a_config_error_naming_the_key(text: str, path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    assert path in str(caught.value)
