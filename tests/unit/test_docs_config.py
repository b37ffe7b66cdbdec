"""docs/config.md against the config reader, both ways.

The doc's key tables (between ``<!-- config-keys -->`` and
``<!-- /config-keys -->``) have five columns: Key | Type | Default | Example |
Meaning. The key is a dotted path in backticks (``<name>`` for a plugin's
name, ``[]`` for a list item), as :func:`known_keys` spells it. The Default
is a YAML value in backticks (checked: writing it equals leaving the key
out), or prose containing "required" (checked: leaving the key out is an
error), or other prose (checked: leaving the key out is fine). The Example is
a YAML value in backticks (checked: accepted in place, and not the default).

:func:`known_keys` itself is checked against the converter: for every mapping
it lists, an unknown key there is refused with "allowed here: <exactly its
children>".
"""

from __future__ import annotations

import json
import re
from datetime import UTC
from functools import cache
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml

from ductile.adapters.config import known_keys, parse_config
from ductile.domain.config import Config
from ductile.domain.errors import ConfigError

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"
#: The environment the doc's examples may use.
ENV = {
    "HOOK_SECRET": "s3cret",
    "API_TOKEN": "t0ken",
    "WITHINGS_CLIENT_SECRET": "w1things",
    "GITHUB_WEBHOOK_SECRET": "g1thub",
    "PGPASSWORD": "pg-secret",
    "PHONE_TOKEN": "a-phone-token-of-32-characters!!",
}
#: The name a ``<name>`` step stands for in the documents built here.
PLUGIN = "p"
#: Containers needing one of several keys: the first one's example is added
#: unless the key under test is one of them.
_KINDS = ("every", "cron", "at", "after")
ONE_OF = {
    "plugins.<name>.schedule": _KINDS,
    "plugins.<name>.schedules[]": _KINDS,
    "api.tokens[]": ("token", "token_sha256"),
}
#: The command a ``<command>`` step (a custom timeout) stands for.
COMMAND = "sync"
UNKNOWN = "zz_not_a_key"


@attrs.frozen
class Row:
    key: str
    type: str
    default: str
    example: str
    line: int


@attrs.frozen
class Raw:
    """A YAML value written as it is in the doc."""

    text: str


_ONE_CODE = re.compile(r"`([^`]+)`")


def _only_code(cell: str) -> str | None:
    """The value of a cell that is exactly one code span, else None."""
    match = _ONE_CODE.fullmatch(cell.strip())
    return match.group(1) if match else None


@cache
def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


@cache
def doc_rows() -> tuple[Row, ...]:
    lines = doc_text().splitlines()
    start = lines.index("<!-- config-keys -->")
    end = lines.index("<!-- /config-keys -->")
    rows: list[Row] = []
    for number, line in enumerate(lines[start:end], start=start + 1):
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 5, f"docs/config.md line {number}: expected 5 cells, found {len(cells)}: {line}"
        key = _only_code(cells[0])
        assert key is not None, f"docs/config.md line {number}: the first cell must be one `key.path`"
        rows.append(Row(key=key, type=cells[1], default=cells[2], example=cells[3], line=number))
    return tuple(rows)


def row_of(key: str) -> Row:
    return next(r for r in doc_rows() if r.key == key)


# =========================================================================== building documents


def _steps(key: str) -> list[str]:
    steps: list[str] = []
    for part in key.split("."):
        if part.endswith("[]"):
            steps += [part[:-2], "[]"]
        else:
            steps.append(part)
    return steps


def _join(path: str, step: str) -> str:
    if step == "[]":
        return path + "[]"
    return f"{path}.{step}" if path else step


def _parent(key: str) -> str:
    steps = _steps(key)[:-1]
    path = ""
    for step in steps:
        path = _join(path, step)
    return path


def _base(container: str, key: str) -> dict[str, Any]:
    """The smallest valid content of ``container`` for testing ``key``: its required keys."""
    base: dict[str, Any] = {}
    for row in doc_rows():
        if _parent(row.key) == container and row.default == "required":
            example = _only_code(row.example)
            assert example is not None, f"line {row.line}: a required key needs an example value"
            base[_steps(row.key)[-1]] = Raw(example)
    alternatives = ONE_OF.get(container)
    if alternatives and not any(key.startswith(f"{container}.{a}") for a in alternatives):
        example = _only_code(row_of(f"{container}.{alternatives[0]}").example)
        assert example is not None
        base[alternatives[0]] = Raw(example)
    return base


def document(key: str, value: Raw | None) -> dict[str, Any]:
    """A minimal config with ``key`` set to ``value`` (None: left out) and its parents' required keys."""
    steps = _steps(key)
    root: dict[str, Any] = {}
    node, path, i = root, "", 0
    while True:
        step = steps[i]
        name = {"<name>": PLUGIN, "<command>": COMMAND}.get(step, step)
        here = _join(path, step)
        if i == len(steps) - 1:
            if value is None:
                node.pop(name, None)
            else:
                node[name] = value
            return root
        if steps[i + 1] == "[]":
            item = _base(here + "[]", key)
            node[name] = [item]
            node, path, i = item, here + "[]", i + 2
        else:
            child = node.get(name)
            if not isinstance(child, dict):
                child = _base(here, key)
                node[name] = child
            node, path, i = child, here, i + 1


def flow(value: Any) -> str:
    """YAML flow text; :class:`Raw` values verbatim."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    return json.dumps(value)


def parse(text: str) -> Config:
    return parse_config(
        text, source="/etc/ductile/ductile.yaml", base_dir="/etc/ductile", env=ENV, local_tz=UTC
    )


def parse_doc(doc: dict[str, Any]) -> Config:
    return parse(flow(doc))


# =========================================================================== the key set


def test_the_doc_lists_every_accepted_key_and_no_other() -> None:
    documented = [r.key for r in doc_rows()]
    duplicates = sorted({k for k in documented if documented.count(k) > 1})
    assert not duplicates, f"docs/config.md lists these keys more than once: {duplicates}"
    code = known_keys()
    missing = [k for k in code if k not in documented]
    extra = [k for k in documented if k not in code]
    assert not missing, f"keys the config reader accepts but docs/config.md does not list: {missing}"
    assert not extra, f"keys docs/config.md lists but the config reader refuses: {extra}"


def test_known_keys_are_dotted_paths_with_placeholders() -> None:
    keys = known_keys()
    assert len(keys) == len(set(keys))
    for key in keys:
        assert re.fullmatch(r"[a-z_]+(\[\])?(\.(<name>|<command>|[a-z_][a-z0-9_]*(\[\])?))*", key), key
        if "." in key:
            assert _parent(key) in keys or _parent(key).removesuffix("[]") in keys, f"{key} has no parent"
    assert "plugins.<name>.retry.max_attempts" in keys
    assert "webhooks.endpoints[].path" in keys
    assert "routes[].from" in keys
    assert "routes[].to" in keys


def _children(container: str) -> list[str]:
    """The keys directly under ``container`` in :func:`known_keys`, in order."""
    return [_steps(k)[-1] for k in known_keys() if _parent(k) == container]


def _containers() -> list[str]:
    paths = {_parent(k) for k in known_keys()}
    return [p for p in ["", *known_keys(), *(k + "[]" for k in known_keys())] if p in paths]


@pytest.mark.parametrize(
    "container",
    # A table of names (``plugins``) or of commands (``timeouts``, whose other keys are custom commands).
    [c for c in _containers() if _children(c) != ["<name>"] and "<command>" not in _children(c)],
)
def test_known_keys_match_what_the_converter_allows(container: str) -> None:
    key = _join(container, UNKNOWN) if container else UNKNOWN
    with pytest.raises(ConfigError) as caught:
        parse_doc(document(key, Raw("1")))
    message = str(caught.value)
    found = [line for line in message.splitlines() if f"unknown key '{UNKNOWN}'" in line]
    assert found, f"no unknown-key error for {key}: {message}"
    allowed = re.search(r"allowed here: (.*?)(?: \(and keys starting with|$)", found[0])
    assert allowed is not None, message
    assert allowed.group(1).split(", ") == _children(container)


# =========================================================================== defaults


def _rows_with(kind: str) -> list[Row]:
    rows = doc_rows()
    if kind == "value":
        return [r for r in rows if _only_code(r.default) is not None]
    if kind == "required":
        return [r for r in rows if "required" in r.default]
    if kind == "optional":
        return [r for r in rows if "required" not in r.default]
    return [r for r in rows if _only_code(r.example) is not None]


def _ids(rows: list[Row]) -> list[str]:
    return [r.key for r in rows]


def test_the_doc_gives_simple_defaults_as_values() -> None:
    # A guard against the checks below silently covering nothing.
    assert len(_rows_with("value")) >= 25
    for key in ("service.tick_interval", "plugins.<name>.retry.max_attempts", "webhooks.listen"):
        assert _only_code(row_of(key).default) is not None, key


@pytest.mark.parametrize("row", _rows_with("value"), ids=_ids(_rows_with("value")))
def test_a_documented_default_is_the_codes_default(row: Row) -> None:
    default = _only_code(row.default)
    assert default is not None
    written = parse_doc(document(row.key, Raw(default)))
    left_out = parse_doc(document(row.key, None))
    assert written == left_out, (
        f"docs/config.md line {row.line}: {row.key} documents default `{default}`, "
        f"but writing it gives a different config than leaving it out"
    )


@pytest.mark.parametrize("row", _rows_with("required"), ids=_ids(_rows_with("required")))
def test_a_key_documented_as_required_cannot_be_left_out(row: Row) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_doc(document(row.key, None))
    if row.default == "required":
        assert f"required key '{_steps(row.key)[-1]}' is missing" in str(caught.value)


@pytest.mark.parametrize("row", _rows_with("optional"), ids=_ids(_rows_with("optional")))
def test_a_key_not_documented_as_required_can_be_left_out(row: Row) -> None:
    parse_doc(document(row.key, None))


# =========================================================================== examples


@pytest.mark.parametrize("row", _rows_with("example"), ids=_ids(_rows_with("example")))
def test_a_documented_example_is_accepted_and_is_not_the_default(row: Row) -> None:
    example = _only_code(row.example)
    assert example is not None
    try:
        config = parse_doc(document(row.key, Raw(example)))
    except ConfigError as e:
        pytest.fail(f"docs/config.md line {row.line}: the example of {row.key}, `{example}`, is refused: {e}")
    if "required" not in row.default:
        assert config != parse_doc(document(row.key, None)), (
            f"docs/config.md line {row.line}: the example of {row.key} is the same as leaving it out"
        )


def test_every_key_has_an_example_value() -> None:
    lacking = [r.key for r in doc_rows() if _only_code(r.example) is None]
    assert not lacking, f"keys without an example value in docs/config.md: {lacking}"


def _example_config() -> str:
    text = doc_text()
    marker = text.index("<!-- example-config -->")
    match = re.compile(r"```yaml\n(.*?)```", re.S).search(text, marker)
    assert match is not None, "no ```yaml block after <!-- example-config -->"
    return match.group(1)


def test_the_complete_example_is_valid() -> None:
    config = parse(_example_config())
    assert config.service.state_dir == "/etc/ductile/state"
    assert config.plugin("withings").retry.max_attempts == 8  # the x- anchor, through an alias
    assert config.plugin("withings").config["client_secret"] == ENV["WITHINGS_CLIENT_SECRET"]
    assert config.webhooks is not None
    assert config.webhooks.endpoints[0].max_body_size == 1_048_576


def test_the_complete_example_uses_every_key() -> None:
    tree = yaml.safe_load(_example_config())
    keys = known_keys()
    lists = {k for k in keys if any(other.startswith(k + "[].") for other in keys)}
    used: set[str] = set()

    def has_fields(path: str) -> bool:
        return any(k.startswith(path + ".") for k in keys)

    def fields(mapping: dict[str, Any], path: str) -> None:
        for name, value in mapping.items():
            if not path and name.startswith("x-"):
                continue
            custom = path.endswith(".timeouts") and name not in ("poll", "handle", "health", "init")
            child = _join(path, "<name>" if path == "plugins" else "<command>" if custom else name)
            used.add(child)
            walk(value, child)

    def walk(value: Any, path: str) -> None:
        if isinstance(value, list) and path in lists:
            for item in value:
                fields(item, path + "[]")
        elif isinstance(value, dict) and has_fields(path):
            fields(value, path)

    fields(tree, "")
    unused = sorted(set(keys) - used)
    unknown = sorted(used - set(keys))
    assert not unused, f"keys the complete example does not use: {unused}"
    assert not unknown, f"keys in the complete example that are not accepted: {unknown}"


# =========================================================================== prose facts


def test_the_doc_states_the_binary_size_rule_and_the_substitution_forms() -> None:
    text = doc_text()
    assert "`MB` = `MiB` = 1,048,576" in text
    config = parse_doc(document("webhooks.endpoints[].max_body_size", Raw("1MB")))
    assert config.webhooks is not None
    assert config.webhooks.endpoints[0].max_body_size == 1_048_576
    for form in ("`${VAR}`", "`${VAR:-default}`", "`$$`"):
        assert f"| {form} |" in text, form
    settings = parse(
        '{"plugins": {"p": {"config": {"a": "${NOPE:-x}", "b": "$$5", "c": "5$", "d": "${API_TOKEN}"}}}}'
    )
    assert settings.plugin("p").config == {"a": "x", "b": "$5", "c": "5$", "d": ENV["API_TOKEN"]}


def test_the_documented_error_format_is_the_readers() -> None:
    with pytest.raises(ConfigError) as caught:
        parse("plugins:\n  withings:\n    retry:\n      max_attemps: 5\n")
    first = str(caught.value).splitlines()[0]
    assert first.startswith("plugins.withings.retry.max_attemps (line 4): unknown key 'max_attemps'")
    assert first in doc_text()
