"""The plugin helper is one stdlib-only file (plugin authors copy it), so it
copies a few of the domain's constants instead of importing them. Each copy is
pinned here to the domain's value: a change on one side fails this test."""

from __future__ import annotations

from ductile import plugin
from ductile.domain import classify, outcome, protocol, retry
from ductile.domain.job import Command


def test_the_protocol_version_is_the_domains() -> None:
    assert plugin.PROTOCOL == protocol.PROTOCOL_VERSION


def test_exit_78_is_the_domains_ex_config() -> None:
    assert plugin.EX_CONFIG == retry.EX_CONFIG


def test_the_commands_are_the_domains() -> None:
    assert tuple(c.value for c in Command) == plugin.COMMANDS


def test_the_log_levels_are_the_domains() -> None:
    assert plugin.LOG_LEVELS == protocol.LOG_LEVELS


def test_the_stdout_limit_is_the_cores() -> None:
    assert plugin.STDOUT_LIMIT == outcome.STDOUT_CAP


def test_the_depth_limit_is_the_cores() -> None:
    assert plugin.MAX_DEPTH == protocol.MAX_DEPTH


def test_the_error_length_is_the_cores() -> None:
    assert plugin.MAX_ERROR_CHARS == classify.MAX_ERROR_CHARS


def test_the_protocols_are_the_domains() -> None:
    assert frozenset(plugin.PROTOCOLS) == protocol.SUPPORTED_PROTOCOLS
    assert plugin.PROTOCOLS[0] == protocol.PROTOCOL_V1
