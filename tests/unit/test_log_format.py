"""The daemon's two log formats: JSON lines (D18) and readable lines for a terminal."""

from __future__ import annotations

import io
import json
import logging

import pytest

from ductile.adapters.logs import JsonFormatter, TextFormatter, configure_logging, pick_format
from ductile.log import Log


def _record(logger_stream: io.StringIO, formatter: logging.Formatter) -> str:
    logger = logging.getLogger("ductile.test-format")
    handler = logging.StreamHandler(logger_stream)
    handler.setFormatter(formatter)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    Log("dispatcher", logger=logger).bind(plugin="counter", job_id="j-1").info(
        "poll succeeded\nsecond line", duration_seconds=0.25, note="two words"
    )
    return logger_stream.getvalue()


def test_a_text_line_has_time_level_component_plugin_message_and_every_field() -> None:
    line = _record(io.StringIO(), TextFormatter())
    first, second = line.rstrip("\n").split("\n")
    assert " INFO  dispatcher counter  poll succeeded" in first
    assert first.endswith('job_id=j-1 duration_seconds=0.25 note="two words"')
    assert second == "    second line"
    with pytest.raises(ValueError):
        json.loads(first)


def test_a_json_line_keeps_the_d18_keys() -> None:
    doc = json.loads(_record(io.StringIO(), JsonFormatter()))
    assert doc["level"] == "info"
    assert (doc["component"], doc["plugin"], doc["job_id"]) == ("dispatcher", "counter", "j-1")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_is_text_on_a_terminal_and_json_elsewhere() -> None:
    assert pick_format("auto", _Tty()) == "text"
    assert pick_format("auto", io.StringIO()) == "json"
    assert pick_format("json", _Tty()) == "json"
    assert pick_format("text", io.StringIO()) == "text"


def test_configure_logging_installs_the_chosen_formatter() -> None:
    root = logging.getLogger("ductile")
    saved = (list(root.handlers), root.level, root.propagate)
    try:
        handler = configure_logging("info", _Tty(), log_format="auto")
        assert isinstance(handler.formatter, TextFormatter)
        handler = configure_logging("info", _Tty(), log_format="json")
        assert isinstance(handler.formatter, JsonFormatter)
    finally:
        root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]
