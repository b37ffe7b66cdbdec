"""The bound structured logger: context bound once, the JSON line as D18 says."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from ductile.adapters.logs import JsonFormatter
from ductile.log import LOGGER_NAME, Log


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(LOGGER_NAME)
    before = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield stream
    finally:
        logger.handlers[:], level, logger.propagate = before
        logger.setLevel(level)


def _read(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_bound_context_reaches_the_top_level_and_fields_follow(lines: io.StringIO) -> None:
    log = Log("dispatcher").bind(plugin="feeds", job_id="j-1")
    log.info("poll succeeded", duration_seconds=0.5)
    (line,) = _read(lines)
    assert line["component"] == "dispatcher"
    assert line["plugin"] == "feeds"
    assert line["job_id"] == "j-1"
    assert line["message"] == "poll succeeded"
    assert line["duration_seconds"] == 0.5
    assert line["level"] == "info"


def test_bind_returns_a_new_logger_and_leaves_the_old_one_alone(lines: io.StringIO) -> None:
    base = Log("router")
    bound = base.bind(plugin="a")
    base.warning("plain")
    bound.warning("bound")
    first, second = _read(lines)
    assert "plugin" not in first
    assert second["plugin"] == "a"
    assert base.context == {"component": "router"}


def test_a_call_field_overrides_the_bound_one_for_that_line_only(lines: io.StringIO) -> None:
    log = Log("router", plugin="a")
    log.info("x", plugin="b")
    log.info("y")
    first, second = _read(lines)
    assert (first["plugin"], second["plugin"]) == ("b", "a")


def test_exception_carries_the_traceback(lines: io.StringIO) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        Log("daemon").exception("tick failed")
    (line,) = _read(lines)
    assert line["level"] == "error"
    assert "RuntimeError: boom" in str(line["traceback"])


def test_nothing_is_logged_below_the_level(lines: io.StringIO) -> None:
    log = Log("scheduler")
    log.debug("quiet")
    assert not log.enabled_for(logging.DEBUG)
    assert lines.getvalue() == ""


def test_a_line_quoting_a_lone_surrogate_is_still_written_as_utf8_json() -> None:
    """Issue 19, item 8: a refused reload quoting a lone surrogate lost its log line to an
    encoding error (only logging's own traceback reached stderr)."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", write_through=True)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    errors: list[BaseException] = []
    handler.handleError = lambda record: errors.append(RuntimeError("logging error"))  # type: ignore[method-assign]
    logger = logging.getLogger("ductile.test-surrogates")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        Log("reload", logger=logger).error(
            "reload refused: unknown key '\ud83d'", value="x\udcff", name="ünï"
        )
    finally:
        logger.removeHandler(handler)
    assert errors == []
    (line,) = [json.loads(text) for text in raw.getvalue().decode("utf-8").splitlines()]
    assert line["message"] == "reload refused: unknown key '\ud83d'"
    assert line["value"] == "x\udcff"
    assert line["name"] == "ünï"


def test_a_text_line_quoting_a_lone_surrogate_is_written_with_it_escaped() -> None:
    """The same for the readable lines on a terminal (``--log-format text``)."""
    from ductile.adapters.logs import TextFormatter

    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", write_through=True)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    errors: list[logging.LogRecord] = []
    handler.handleError = errors.append  # type: ignore[method-assign]
    logger = logging.getLogger("ductile.test-surrogates-text")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        Log("reload", logger=logger).error("reload refused: unknown key '\ud83d' (ünï)")
    finally:
        logger.removeHandler(handler)
    assert errors == []
    text = raw.getvalue().decode("utf-8")
    assert "unknown key '\\ud83d' (ünï)" in text
