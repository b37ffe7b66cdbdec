"""The operator's YAML config file, read into :class:`ductile.domain.config.Config`.

The way in, one stage after another; every problem on the way is a
:class:`~ductile.domain.errors.ConfigError` naming the key path
(``plugins.withings.retry.max_attempts``, ``routes[2].to``) and, where the
YAML node has one, the file line. Nothing else escapes for bad input.

1. **Bytes to text**: at most :data:`MAX_CONFIG_BYTES`, UTF-8 (a BOM is
   allowed).
2. **Text to a node tree** with PyYAML's *composer* only (no constructor, so
   no Python objects are ever built from tags) and our own scalar rules,
   YAML-1.2-core style: booleans are ``true``/``false`` only (``NO``, ``yes``,
   ``on`` stay text: the Norway problem), ``2024-01-01`` stays text, numbers
   are plain decimal (``0755``, ``0x1F``, ``1_000``, ``1:30`` stay text),
   ``.inf``/``.nan`` and overflowing floats are refused. A plain scalar is a
   number only where YAML 1.1 and 1.2 agree that it is that number.
3. **Node tree to plain values** (dict / list / str / int / float / bool /
   None) plus a map from key path to line. Duplicate keys, non-text keys,
   unsupported tags, recursive aliases, nesting deeper than
   :data:`MAX_DEPTH` and alias expansion beyond :data:`MAX_VALUES` values
   (the "billion laughs") are refused here. ``<<`` merge keys work.
4. **Plain values to domain values** through ONE cattrs converter: unknown
   keys are refused (with a "did you mean"), types are strict (no ``"5"`` for
   5), durations / intervals / sizes go through the domain's unit parsers,
   ``${VAR}`` is substituted in string values as they are read (so a value
   can never inject structure), and the domain's own checks (schedules,
   windows, cron) run with their errors mapped to key paths.

The rules and their trade-offs are in ``docs/adr/0011-config-yaml-rules.md``.
"""

from __future__ import annotations

import contextvars
import difflib
import functools
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Any, NewType, NoReturn, TypeVar, Union, get_args, get_origin, get_type_hints
from zoneinfo import ZoneInfo, available_timezones

import attrs
import cattrs
import yaml
from cattrs.errors import (
    AttributeValidationNote,
    BaseValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, override
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from ductile.domain.breaker import BreakerPolicy
from ductile.domain.config import (
    DEFAULT_PLUGINS_DIR,
    DEFAULT_STATE_DIR,
    Config,
    Endpoint,
    LogLevel,
    PluginConfig,
    ServiceConfig,
    Timeouts,
    WebhooksConfig,
)
from ductile.domain.errors import ConfigError, ScheduleError, UnitError
from ductile.domain.protocol import EmittedEvent
from ductile.domain.quantities import parse_duration, parse_interval, parse_size
from ductile.domain.retry import RetryPolicy
from ductile.domain.routing import Route
from ductile.domain.schedule import CatchUp, Schedule, Window, cron_fires, validate_cron

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "MAX_CONFIG_BYTES",
    "known_keys",
    "load_config",
    "machine_timezone",
    "parse_config",
    "resolve_config_path",
]

#: The config file looked for in the current directory when neither
#: ``--config`` nor ``$DUCTILE_CONFIG`` names one.
DEFAULT_CONFIG_NAME = "ductile.yaml"
#: A config larger than this is refused before parsing (1 MiB).
MAX_CONFIG_BYTES = 1024 * 1024
#: Mappings and lists nest at most this deep (plugin ``config`` included).
MAX_DEPTH = 64
#: At most this many values after expanding aliases: a "billion laughs"
#: document stops here instead of eating the memory.
MAX_VALUES = 100_000
#: Upper bound of ``max_attempts``, ``threshold`` and ``max_outstanding_polls``.
MAX_COUNT = 1_000_000
#: Integers longer than this are refused (quote them to keep them as text).
MAX_INT_DIGITS = 100
#: The shortest ``schedule.every``: a sub-second schedule is a typo ('1ms' for '1m').
MIN_INTERVAL = timedelta(seconds=1)
#: How many further problems a ConfigError lists after the first one.
MAX_LISTED_PROBLEMS = 10
#: Echoed values are cut to this length in messages.
_SHOWN = 60

_Path = tuple[str | int, ...]
_Pos = tuple[int, int]
_T = TypeVar("_T")


# =========================================================================== public API


def load_config(
    path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    local_tz: tzinfo | None = None,
) -> Config:
    """Read and check the config file at ``path``.

    Relative ``state_dir``/``plugins_dir`` resolve against the file's own
    directory (the path as given, symlinks not followed), never the current
    directory. ``env`` defaults to the process environment and ``local_tz`` to
    :func:`machine_timezone`. Raises :class:`ConfigError` for every problem.
    """
    try:
        file = Path(os.fspath(path)).expanduser().absolute()
        with open(file, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file {os.fspath(path)} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{os.fspath(path)} is a directory, not a config file") from None
    except PermissionError:
        raise ConfigError(f"cannot read config file {os.fspath(path)}: permission denied") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {os.fspath(path)}: {e.strerror or e}") from None
    except (ValueError, TypeError, RuntimeError) as e:  # a NUL byte, a wrong type, '~' without a home
        raise ConfigError(f"{path!r} is not a usable file path ({e})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {file} is larger than {MAX_CONFIG_BYTES // 1024} KiB")
    text = _decode(raw)
    return parse_config(
        text,
        source=str(file),
        base_dir=str(file.parent),
        env=os.environ if env is None else env,
        local_tz=machine_timezone() if local_tz is None else local_tz,
    )


def parse_config(
    text: str,
    *,
    source: str,
    base_dir: str,
    env: Mapping[str, str],
    local_tz: tzinfo,
) -> Config:
    """Check config ``text`` and build the :class:`Config` (for tests and ``config check``).

    ``source`` is recorded in :attr:`Config.source`; ``base_dir`` is what
    relative paths resolve against; ``env`` feeds ``${VAR}``; ``local_tz`` is
    the zone of schedules without a ``timezone``.
    """
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"the config is longer than {MAX_CONFIG_BYTES // 1024} KiB")
    tree, lines = _read_tree(text)
    context = _Context(env=env, local_tz=local_tz, base_dir=os.path.abspath(base_dir), source=source)
    token = _CONTEXT.set(context)
    try:
        return _converter().structure(tree, Config)
    except ConfigError:
        raise
    except Exception as e:  # every structuring problem, as a ConfigError with paths and lines
        raise _config_error(e, lines) from None
    finally:
        _CONTEXT.reset(token)


def resolve_config_path(arg: str | None, env: Mapping[str, str] | None = None) -> Path:
    """Which config file to read: ``--config``, then ``$DUCTILE_CONFIG``, then ``./ductile.yaml``.

    The answer is absolute (``~`` expanded), so it still names the same file
    after the process changes directory.
    """
    env = os.environ if env is None else env
    chosen = arg or env.get("DUCTILE_CONFIG") or DEFAULT_CONFIG_NAME
    return Path(chosen).expanduser().absolute()


def machine_timezone(*, env: Mapping[str, str] | None = None, etc: str | os.PathLike[str] = "/etc") -> tzinfo:
    """The machine's local zone as a DST-aware :class:`ZoneInfo` (never a fixed offset).

    In order: ``$TZ`` (an IANA name, or ``:/path/to/tzfile``); the target of
    the ``/etc/localtime`` symlink (``.../zoneinfo/Europe/Berlin``);
    ``/etc/timezone``; the rules in ``/etc/localtime`` itself (zone key
    ``localtime``); UTC. The symlink comes before ``/etc/timezone`` because
    it is what the C library reads and ``timedatectl`` updates, while
    ``/etc/timezone`` is a Debian leftover that can be stale.
    """
    env = os.environ if env is None else env
    etc_dir = Path(etc)
    tz_var = env.get("TZ", "").strip()
    if tz_var:
        zone = _zone_from_tz_variable(tz_var)
        if zone is not None:
            return zone
    zone = _zone_from_link(etc_dir / "localtime")
    if zone is not None:
        return zone
    zone = _zone_from_timezone_file(etc_dir / "timezone")
    if zone is not None:
        return zone
    zone = _zone_from_tzfile(etc_dir / "localtime", key="localtime")
    if zone is not None:
        return zone
    return _zone_by_key("UTC") or UTC


# =========================================================================== machine zone


def _zone_by_key(key: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(key)
    except Exception:  # not found, malformed key, unreadable file: just not this one
        return None


def _zone_from_tzfile(file: Path, *, key: str) -> ZoneInfo | None:
    try:
        with open(file, "rb") as handle:
            return ZoneInfo.from_file(handle, key=key)
    except Exception:
        return None


def _key_from_zoneinfo_path(target: str) -> str | None:
    marker = "/zoneinfo/"
    if marker not in target:
        return None
    key = target.split(marker, 1)[1]
    for prefix in ("posix/", "right/"):
        key = key.removeprefix(prefix)
    return key or None


def _zone_from_tz_variable(value: str) -> ZoneInfo | None:
    value = value.removeprefix(":")
    if value.startswith("/"):
        key = _key_from_zoneinfo_path(value)
        zone = _zone_by_key(key) if key else None
        return zone or _zone_from_tzfile(Path(value), key=key or value)
    return _zone_by_key(value)


def _zone_from_link(link: Path) -> ZoneInfo | None:
    try:
        target = os.readlink(link)
    except OSError:
        return None
    if not os.path.isabs(target):
        target = os.path.normpath(os.path.join(os.path.dirname(link), target))
    for candidate in (target, os.path.realpath(link)):
        key = _key_from_zoneinfo_path(candidate)
        zone = _zone_by_key(key) if key else None
        if zone is not None:
            return zone
    return None


def _zone_from_timezone_file(file: Path) -> ZoneInfo | None:
    try:
        first = file.read_text(encoding="utf-8").strip().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    return _zone_by_key(first[0].strip()) if first else None


# =========================================================================== bytes and text


def _decode(raw: bytes) -> str:
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(
            f"the file is not valid UTF-8 (byte 0x{raw[e.start]:02x} at line {line}); save it as UTF-8",
            line=line,
        ) from None


# =========================================================================== YAML to plain values

_YAML = "tag:yaml.org,2002:"
_STR_TAG = _YAML + "str"
_INT_TAG = _YAML + "int"
_FLOAT_TAG = _YAML + "float"
_BOOL_TAG = _YAML + "bool"
_NULL_TAG = _YAML + "null"
_MAP_TAG = _YAML + "map"
_SEQ_TAG = _YAML + "seq"
_MERGE_TAG = _YAML + "merge"
#: A plain (unquoted, untagged) scalar; :func:`_plain_value` decides what it is.
_PLAIN_TAG = "tag:ductile:plain"

_NULL_WORDS = frozenset({"", "~", "null", "Null", "NULL"})
_TRUE_WORDS = frozenset({"true", "True", "TRUE"})
_FALSE_WORDS = frozenset({"false", "False", "FALSE"})
_YAML11_BOOL_WORDS = frozenset({"yes", "no", "on", "off", "y", "n"})
_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
#: Floats that YAML 1.1 and 1.2 both read as the same number: a dot, a signed exponent.
_FLOAT = re.compile(r"[-+]?[0-9]+\.[0-9]*(?:[eE][-+][0-9]+)?|\.[0-9]+(?:[eE][-+][0-9]+)?")
_INF_NAN = re.compile(r"[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)")


class _TooDeepError(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class _Loader(Reader, Scanner, Parser, Composer, BaseResolver):
    """PyYAML's reader, scanner, parser and composer, and no constructor.

    Scalars are not resolved by PyYAML's YAML 1.1 rules: a plain scalar gets
    :data:`_PLAIN_TAG` and :func:`_plain_value` applies ours.
    """

    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        BaseResolver.__init__(self)
        self._depth = 0

    def resolve(self, kind: type[Node], value: str | None, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode:
            return _PLAIN_TAG if implicit[0] else _STR_TAG
        return _SEQ_TAG if kind is SequenceNode else _MAP_TAG

    def fetch_flow_collection_start(self, token_class: Any) -> None:
        # Deep flow nesting ("[[[[...") makes PyYAML's scanner quadratic: stop it early.
        if self.flow_level >= MAX_DEPTH:
            raise _TooDeepError(int(self.get_mark().line) + 1)
        super().fetch_flow_collection_start(token_class)

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        # The composer recurses once per level: stop before Python's stack does.
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise _TooDeepError(int(event.start_mark.line) + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _line_of(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _pos_of(node: Node) -> _Pos:
    return int(node.start_mark.line) + 1, int(node.start_mark.column)


def _read_tree(text: str) -> tuple[Any, dict[_Path, _Pos]]:
    """The document as plain values, and the (line, column) of every key path."""
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as e:
        raise _reader_error(e, text) from None
    try:
        root = loader.get_single_node()
    except _TooDeepError as e:
        raise ConfigError(f"the config nests more than {MAX_DEPTH} levels deep", line=e.line) from None
    except yaml.reader.ReaderError as e:
        raise _reader_error(e, text) from None
    except yaml.MarkedYAMLError as e:
        raise _syntax_error(e) from None
    except yaml.YAMLError as e:  # pragma: no cover - every PyYAML error we know of is marked
        raise ConfigError(f"YAML error: {e}") from None
    finally:
        loader.dispose()
    lines: dict[_Path, _Pos] = {}
    if root is None:
        return None, lines
    lines[()] = _pos_of(root)
    return _Walker(lines).walk(root, (), 0), lines


def _reader_error(e: yaml.reader.ReaderError, text: str) -> ConfigError:
    position = max(0, min(int(e.position), len(text)))
    line = text.count("\n", 0, position) + 1
    char = e.character
    code = f"U+{char if isinstance(char, int) else ord(str(char)[:1] or chr(0)):04X}"
    return ConfigError(
        f"character {code} is not allowed in a YAML file (control characters other than tab and "
        "newline, and lone surrogates, cannot appear in a config)",
        line=line,
    )


def _syntax_error(e: yaml.MarkedYAMLError) -> ConfigError:
    mark = e.problem_mark or e.context_mark
    line = int(mark.line) + 1 if mark is not None else None
    problem = (e.problem or e.context or "malformed YAML").strip()
    message = f"YAML syntax error: {problem}"
    if e.context and problem.startswith("but "):  # "expected a single document ..., but found another"
        message = f"YAML syntax error: {e.context.strip()}, {problem}"
    elif e.context and e.problem and e.context_mark is not None:
        message += f" ({e.context} at line {int(e.context_mark.line) + 1})"
    if "\\t" in problem or "\t" in problem:
        message += "; YAML does not allow tabs for indentation, use spaces"
    elif any(word in f"{problem} {e.context or ''}" for word in ("alias", "anchor")):
        message += (
            '; a value that starts with * or & must be quoted, e.g. cron: "*/5 * * * *"'
            " (* and & mark YAML aliases and anchors)"
        )
    return ConfigError(message, line=line)


def _tag_name(tag: str) -> str:
    return "!!" + tag.removeprefix(_YAML) if tag.startswith(_YAML) else tag


def _plain_value(text: str) -> tuple[bool, Any]:
    """A plain scalar's value by our rules; ``(False, reason)`` when it is refused."""
    if text in _NULL_WORDS:
        return True, None
    if text in _TRUE_WORDS:
        return True, True
    if text in _FALSE_WORDS:
        return True, False
    if _INT.fullmatch(text):
        if len(text.lstrip("+-")) > MAX_INT_DIGITS:
            return False, f"a number with more than {MAX_INT_DIGITS} digits; quote it if it is text"
        return True, int(text)
    if _FLOAT.fullmatch(text):
        value = float(text)
        if not math.isfinite(value):
            return False, f"{text} is too large for a number; quote it if it is text"
        return True, value
    if _INF_NAN.fullmatch(text):
        return False, f"{text} (infinity / not-a-number) cannot be sent as JSON; quote it if it is text"
    return True, text


def _tagged_value(tag: str, text: str) -> tuple[bool, Any]:
    """An explicitly tagged scalar (``!!str``, ``!!int``, ...)."""
    if tag == _STR_TAG:
        return True, text
    ok, value = _plain_value(text.strip())
    kinds: dict[str, Callable[[Any], bool]] = {
        _INT_TAG: lambda v: isinstance(v, int) and not isinstance(v, bool),
        _FLOAT_TAG: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        _BOOL_TAG: lambda v: isinstance(v, bool),
        _NULL_TAG: lambda v: v is None,
    }
    check = kinds.get(tag)
    if check is None:
        return False, (
            f"the YAML tag {_tag_name(tag)} is not supported; write plain values "
            "(text, numbers, true/false, null, lists and mappings)"
        )
    if not ok:
        return False, value
    if not check(value):
        return False, f"{text!r} is not a valid {_tag_name(tag)} value"
    if tag == _FLOAT_TAG:
        value = float(value)
    return True, value


class _Walker:
    """Turns the node tree into plain values, recording the line of every path."""

    def __init__(self, lines: dict[_Path, _Pos]) -> None:
        self.lines = lines
        self.remaining = MAX_VALUES
        self.active: set[int] = set()

    def fail(self, message: str, path: _Path, node: Node) -> NoReturn:
        raise ConfigError(message, path=_format_path(path), line=_line_of(node))

    def walk(self, node: Node, path: _Path, depth: int) -> Any:
        self.remaining -= 1
        if self.remaining < 0:
            self.fail(
                f"the config expands to more than {MAX_VALUES:,} values; "
                "is an alias (*name) repeating a large block many times?",
                path,
                node,
            )
        if depth > MAX_DEPTH:
            self.fail(f"the config nests more than {MAX_DEPTH} levels deep", path, node)
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if id(node) in self.active:
            self.fail("an alias (*name) refers to a block that contains it; that would never end", path, node)
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return self.sequence(node, path, depth)
            if isinstance(node, MappingNode):
                return self.mapping(node, path, depth)
            self.fail(f"unexpected YAML node {type(node).__name__}", path, node)  # pragma: no cover
        finally:
            self.active.discard(id(node))

    def scalar(self, node: ScalarNode, path: _Path) -> Any:
        text = str(node.value)
        if node.tag == _PLAIN_TAG:
            ok, value = _plain_value(text)
        else:
            ok, value = _tagged_value(str(node.tag), text)
        if not ok:
            self.fail(str(value), path, node)
        return value

    def sequence(self, node: SequenceNode, path: _Path, depth: int) -> list[Any]:
        if node.tag != _SEQ_TAG:
            self.fail(f"the YAML tag {_tag_name(str(node.tag))} is not supported on a list", path, node)
        items: list[Any] = []
        for index, item in enumerate(node.value):
            item_path = (*path, index)
            self.lines.setdefault(item_path, _pos_of(item))
            items.append(self.walk(item, item_path, depth + 1))
        return items

    def key(self, node: Node, path: _Path) -> str:
        if not isinstance(node, ScalarNode):
            self.fail("a key must be text, not a list or a mapping", path, node)
        value = self.scalar(node, path)
        if not isinstance(value, str):
            shown = _shorten(str(node.value)) or "(empty)"
            self.fail(
                f"key {shown} is {_describe(value)}, but keys must be text; put it in quotes: '{shown}'",
                path,
                node,
            )
        return value

    @staticmethod
    def is_merge(node: Node) -> bool:
        return isinstance(node, ScalarNode) and (
            (node.tag == _PLAIN_TAG and node.value == "<<") or node.tag == _MERGE_TAG
        )

    def merge_sources(self, node: Node, path: _Path) -> list[MappingNode]:
        if isinstance(node, MappingNode):
            return [node]
        if isinstance(node, SequenceNode) and all(isinstance(n, MappingNode) for n in node.value):
            return [n for n in node.value if isinstance(n, MappingNode)]
        self.fail("'<<' (merge) takes a mapping or a list of mappings, e.g. <<: *defaults", path, node)

    def mapping(self, node: MappingNode, path: _Path, depth: int) -> dict[str, Any]:
        if node.tag != _MAP_TAG:
            self.fail(f"the YAML tag {_tag_name(str(node.tag))} is not supported on a mapping", path, node)
        first_line: dict[str, int] = {}
        sources: list[MappingNode] | None = None
        entries: list[tuple[str, _Pos, Node]] = []
        for key_node, value_node in node.value:
            if self.is_merge(key_node):
                if sources is not None:
                    self.fail("more than one '<<' merge key in one mapping", path, key_node)
                sources = self.merge_sources(value_node, path)
                continue
            key = self.key(key_node, path)
            pos = _pos_of(key_node)
            if key in first_line:
                self.fail(
                    f"duplicate key '{_shorten(key)}' (first at line {first_line[key]}); "
                    "YAML would silently keep only the last one",
                    (*path, key),
                    key_node,
                )
            first_line[key] = pos[0]
            entries.append((key, pos, value_node))
        result: dict[str, Any] = {}
        # Merged mappings first (earlier ones win), then this mapping's own keys win over all.
        for source in reversed(sources or []):
            merged = self.walk(source, path, depth)
            result.update(merged)
        for key, pos, value_node in entries:
            key_path = (*path, key)
            self.lines[key_path] = pos
            result[key] = self.walk(value_node, key_path, depth + 1)
        return result


# =========================================================================== messages and paths

_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _format_path(path: _Path) -> str:
    out = ""
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
        elif _SIMPLE_KEY.fullmatch(step):
            out += f".{step}" if out else step
        else:
            quoted = step.replace("\\", "\\\\").replace('"', '\\"')
            out += f'["{_shorten(quoted)}"]'
    return out


def _shorten(text: str, limit: int = _SHOWN) -> str:
    text = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(value: object) -> str:
    if value is None:
        return "empty (null)"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, int | float):
        return f"a number ({_shorten(repr(value))})"
    if isinstance(value, str):
        return f"the text '{_shorten(value)}'"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__  # pragma: no cover - the tree holds nothing else


def _kind(value: object) -> str:
    """Like :func:`_describe`, without echoing the value (for secrets)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return _describe(value) if not isinstance(value, str) else "text"


class _Problem(Exception):
    """A problem found by a hook; ``subpath`` is relative to where the hook was called."""

    def __init__(self, message: str, *subpath: str | int) -> None:
        super().__init__(message)
        self.message = message
        self.subpath: _Path = subpath


def _nearest(path: _Path, lines: Mapping[_Path, _Pos]) -> _Pos | None:
    for end in range(len(path), -1, -1):
        pos = lines.get(path[:end])
        if pos is not None:
            return pos
    return None


def _config_error(exc: BaseException, lines: Mapping[_Path, _Pos]) -> ConfigError:
    """All problems found, in file order: the first one leads, the others follow as "also" lines."""
    found: list[tuple[_Path, str]] = []
    _collect(exc, (), found)
    if not found:  # pragma: no cover - an exception group always holds something
        found.append(((), f"unexpected {type(exc).__name__}: {exc} (a bug in ductile; please report it)"))
    ranked = sorted(
        ((_nearest(path, lines), path, message) for path, message in found),
        key=lambda item: (item[0] or (1 << 30, 0), _format_path(item[1])),
    )
    pos, path, message = ranked[0]
    line = pos[0] if pos is not None else None
    message = _shorten_message(message)
    rest = ranked[1:]
    if rest:
        shown = [
            f"  also {_format_path(p) or '<config>'}{f' (line {n[0]})' if n is not None else ''}: "
            f"{_shorten_message(m)}"
            for n, p, m in rest[:MAX_LISTED_PROBLEMS]
        ]
        if len(rest) > MAX_LISTED_PROBLEMS:
            shown.append(f"  ... and {len(rest) - MAX_LISTED_PROBLEMS} more")
        message = "\n".join([message, *shown])
    return ConfigError(message, path=_format_path(path), line=line)


def _shorten_message(message: str, limit: int = 400) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


def _collect(exc: BaseException, path: _Path, out: list[tuple[_Path, str]]) -> None:
    if isinstance(exc, BaseValidationError):
        for sub in exc.exceptions:
            _collect(sub, path + _note_step(sub, exc.cl), out)
    elif isinstance(exc, ForbiddenExtraKeysError):
        allowed = _allowed_keys(exc.cl)
        extra = f" (and keys starting with '{EXTENSION_PREFIX}', ignored)" if exc.cl is _ConfigDoc else ""
        for key in sorted(str(k) for k in exc.extra_fields):
            out.append(((*path, key), _unknown_key(key, allowed) + extra))
    elif isinstance(exc, _Problem):
        out.append((path + exc.subpath, exc.message))
    elif isinstance(exc, KeyError) and path and exc.args == (path[-1],):
        out.append((path, f"required key '{path[-1]}' is missing"))
    elif isinstance(exc, ConfigError):  # pragma: no cover - hooks raise _Problem
        out.append((path, exc.detail))
    else:
        out.append((path, f"unexpected {type(exc).__name__}: {exc} (a bug in ductile; please report it)"))


def _note_step(exc: BaseException, cl: Any) -> _Path:
    for note in reversed(getattr(exc, "__notes__", [])):
        if isinstance(note, AttributeValidationNote):
            return (_RENAMED.get(cl, {}).get(note.name, note.name),)
        if isinstance(note, IterableValidationNote):
            return (note.index,)
    return ()


def _unknown_key(key: str, allowed: list[str]) -> str:
    shown = _shorten(key)
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6) if len(key) <= 100 else []
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown key '{shown}'{hint}; allowed here: {', '.join(allowed)}"


# =========================================================================== ${VAR}

_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _substitute(text: str, env: Mapping[str, str]) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}``; ``$$`` is a literal ``$``.

    One pass, no recursion: a variable's value is never scanned again, so it
    can hold ``${...}`` or YAML syntax and stays plain text. A ``$`` not
    followed by ``{`` or ``$`` is kept as it is.
    """
    if "$" not in text:
        return text
    out: list[str] = []
    pos = 0
    while True:
        dollar = text.find("$", pos)
        if dollar < 0:
            out.append(text[pos:])
            return "".join(out)
        out.append(text[pos:dollar])
        following = text[dollar + 1 : dollar + 2]
        if following == "$":
            out.append("$")
            pos = dollar + 2
        elif following == "{":
            close = text.find("}", dollar + 2)
            if close < 0:
                raise _Problem(
                    f"'${{' without a closing '}}' in '{_shorten(text)}'; write $$ for a literal $"
                )
            inner = text[dollar + 2 : close]
            name, sep, default = inner.partition(":-")
            if not _VAR_NAME.fullmatch(name):
                raise _Problem(
                    f"'${{{_shorten(inner)}}}' is not a variable reference: names are letters, digits "
                    "and '_' (e.g. ${API_TOKEN}), optionally with a default (${PORT:-8081}); "
                    "write $$ for a literal $"
                )
            value = env.get(name)
            if sep:
                value = value or default
            elif value is None:
                raise _Problem(
                    f"environment variable {name} is not set (set it, or give a default: ${{{name}:-...}})"
                )
            out.append(value)
            pos = close + 1
        else:
            out.append("$")
            pos = dollar + 1


# =========================================================================== context


@attrs.frozen
class _Context:
    """What the hooks need beyond the values: set for the length of one parse."""

    env: Mapping[str, str]
    local_tz: tzinfo
    base_dir: str
    source: str


_CONTEXT: contextvars.ContextVar[_Context] = contextvars.ContextVar("ductile_config_context")


def _context() -> _Context:
    return _CONTEXT.get()


# =========================================================================== value hooks

Interval = NewType("Interval", timedelta)
Jitter = NewType("Jitter", timedelta)
Size = NewType("Size", int)
Count = NewType("Count", int)
ClockTime = NewType("ClockTime", time)
Cron = NewType("Cron", str)
Listen = NewType("Listen", tuple[str, int])
DirPath = NewType("DirPath", str)
PluginName = NewType("PluginName", str)
EventType = NewType("EventType", str)
ScheduledCommand = NewType("ScheduledCommand", str)
JsonObject = NewType("JsonObject", dict[str, Any])
PluginTable = NewType("PluginTable", dict[str, PluginConfig])

_PLUGIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_URL_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")
_HOST_NAME = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
_CLOCK = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")
_ZERO_DURATION = re.compile(r"0+(?:ms|s|m|h|d|w)?")
_SCHEDULED_COMMANDS = ("poll", "handle", "health")
_CRON_CHECK_FROM = datetime(2000, 1, 1, tzinfo=UTC)
#: Top-level keys with this prefix are ignored: a place to keep YAML anchors.
EXTENSION_PREFIX = "x-"
#: Reserved by the health endpoint (D20) on the webhook listener.
HEALTH_PATH = "/healthz"


def _text(value: object) -> str:
    """A string value, ``${VAR}`` substituted."""
    if not isinstance(value, str):
        raise _Problem(f"expected text, got {_describe(value)}; put it in quotes if it is meant as text")
    return _substitute(value, _context().env)


def _from_env(value: object) -> str | None:
    """The substituted text of a ``${VAR}`` value where a number or boolean is expected."""
    if isinstance(value, str) and "${" in value:
        return _text(value).strip()
    return None


def _name_text(value: object, what: str, limit: int = 200) -> str:
    text = _text(value)
    if not text.strip():
        raise _Problem(f"{what} must not be empty")
    if text != text.strip():
        raise _Problem(f"{what} '{_shorten(text)}' must not start or end with spaces")
    if not text.isprintable():
        raise _Problem(f"{what} '{_shorten(text)}' contains control characters")
    if len(text) > limit:
        raise _Problem(f"{what} is longer than {limit} characters")
    return text


def _string_hook(value: object, _: Any) -> str:
    return _text(value)


def _bool_hook(value: object, _: Any) -> bool:
    if isinstance(value, bool):
        return value
    env_text = _from_env(value)
    if env_text is not None:
        if env_text in _TRUE_WORDS:
            return True
        if env_text in _FALSE_WORDS:
            return False
        raise _Problem(f"expected true or false, got '{_shorten(env_text)}' from the environment")
    hint = ""
    if isinstance(value, str) and value.strip().lower() in _YAML11_BOOL_WORDS:
        hint = " (YAML 1.1 words like yes/no/on/off are plain text here: write true or false)"
    raise _Problem(f"expected true or false, got {_describe(value)}{hint}")


def _count_hook(value: object, _: Any) -> int:
    env_text = _from_env(value)
    if env_text is not None:
        if not (env_text.isascii() and env_text.isdigit() and len(env_text) <= 18):
            raise _Problem(f"expected a whole number, got '{_shorten(env_text)}' from the environment")
        number = int(env_text)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        hint = ""
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            hint = " (remove the quotes)"
        raise _Problem(f"expected a whole number, got {_describe(value)}{hint}")
    if number < 1:
        raise _Problem(f"must be at least 1, got {number}")
    if number > MAX_COUNT:
        raise _Problem(f"must be at most {MAX_COUNT:,}, got {number}")
    return number


def _unit_text(value: object, what: str, example: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # the parsers explain that a unit is missing
    if isinstance(value, str):
        return _text(value)
    raise _Problem(f"expected {what} like {example}, got {_describe(value)}")


def _parsed(parse: Callable[[str], _T], text: str) -> _T:
    try:
        return parse(text)
    except UnitError as e:
        raise _Problem(str(e)) from None


def _duration_hook(value: object, _: Any) -> timedelta:
    return _parsed(parse_duration, _unit_text(value, "a duration", "'30s', '5m' or '1h30m'"))


def _interval_hook(value: object, _: Any) -> timedelta:
    text = _unit_text(value, "an interval", "'6h', '30m' or 'daily'")
    interval = _parsed(parse_interval, text)
    if interval < MIN_INTERVAL:
        raise _Problem(f"'every' must be at least 1s, not '{_shorten(text)}' (did you mean minutes, 'm'?)")
    return interval


def _jitter_hook(value: object, _: Any) -> timedelta:
    text = _unit_text(value, "a duration", "'30s', '5m' or '1h30m'")
    if _ZERO_DURATION.fullmatch(text.strip()):
        return timedelta(0)
    return _parsed(parse_duration, text)


def _size_hook(value: object, _: Any) -> int:
    return _parsed(parse_size, _unit_text(value, "a size", "'64KB' or '1MB'"))


def _enum_hook(cls: type[LogLevel] | type[CatchUp]) -> Callable[[object, Any], Any]:
    choices = [str(member.value) for member in cls]

    def hook(value: object, _: Any) -> Any:
        if not isinstance(value, str):
            raise _Problem(f"expected one of {', '.join(choices)}, got {_describe(value)}")
        text = _text(value).strip().lower()
        for member in cls:
            if member.value == text:
                return member
        raise _Problem(f"expected one of {', '.join(choices)}, got '{_shorten(text)}'")

    return hook


@functools.cache
def _zone_names() -> list[str]:
    try:
        return sorted(available_timezones())
    except Exception:  # pragma: no cover - no tz database at all
        return []


def _zone_hook(value: object, _: Any) -> tzinfo:
    name = _text(value).strip()
    if not name:
        raise _Problem("must not be empty; leave 'timezone' out to use the machine's zone")
    if len(name) <= 200:
        zone = _zone_by_key(name)
        if zone is not None:
            return zone
    close = difflib.get_close_matches(name, _zone_names(), n=1) if len(name) <= 64 else []
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise _Problem(
        f"unknown timezone '{_shorten(name)}'{hint}; use an IANA name like 'Europe/Berlin', "
        "'America/New_York' or 'UTC'"
    )


def _clock_hook(value: object, _: Any) -> time:
    if not isinstance(value, str):
        raise _Problem(f"expected a time of day like '06:00' (24-hour HH:MM), got {_describe(value)}")
    text = _text(value).strip()
    match = _CLOCK.fullmatch(text)
    if match is None:
        raise _Problem(
            f"expected a time of day like '06:00' or '22:30' (24-hour HH:MM), got '{_shorten(text)}'"
        )
    return time(int(match.group(1)), int(match.group(2)))


def _cron_hook(value: object, _: Any) -> str:
    text = _text(value)
    if text.strip().startswith("@"):
        raise _Problem(
            f"cron nicknames like '{_shorten(text.strip())}' are not supported; write 5 fields "
            "(e.g. '0 0 * * *'), or use 'every: daily'"
        )
    if len(text) > 200:
        raise _Problem("a cron expression longer than 200 characters cannot be right")
    try:
        normalized = validate_cron(text)
    except ScheduleError as e:
        raise _Problem(str(e)) from None
    try:
        next(cron_fires(normalized, _CRON_CHECK_FROM, UTC))
    except Exception:  # croniter gives up on expressions no date matches ('0 0 31 2 *')
        raise _Problem(f"cron expression '{_shorten(text)}' never fires: no date matches it") from None
    return normalized


def _listen_hook(value: object, _: Any) -> tuple[str, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        raise _Problem(f"write host:port, e.g. '127.0.0.1:{value}'")
    text = _text(value).strip()
    host, colon, port_text = text.rpartition(":")
    if not colon or not host:
        raise _Problem(f"expected host:port like '127.0.0.1:8081', got '{_shorten(text)}'")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _Problem(f"'{_shorten(host)}' is not an IPv6 address") from None
    elif ":" in host:
        raise _Problem("write an IPv6 address in brackets, e.g. '[::1]:8081'")
    elif not _HOST_NAME.fullmatch(host) or len(host) > 253:
        raise _Problem(f"'{_shorten(host)}' is not a host name or IP address")
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5 and int(port_text) <= 65535):
        raise _Problem(f"'{_shorten(port_text)}' is not a port number (0-65535)")
    return host, int(port_text)


def _dir_hook(value: object, _: Any) -> str:
    text = _text(value)
    if not text.strip():
        raise _Problem("must not be empty")
    if "\x00" in text:
        raise _Problem("a path cannot contain a NUL character")
    return text


def _check_plugin_name(name: str) -> str:
    if not _PLUGIN_NAME.fullmatch(name) or len(name) > 255:
        raise _Problem(
            f"'{_shorten(name)}' is not a valid plugin name: use letters, digits, '.', '_' and '-', "
            "not starting with '.'"
        )
    return name


def _plugin_name_hook(value: object, _: Any) -> str:
    if not isinstance(value, str):
        raise _Problem(f"expected a plugin name, got {_describe(value)}")
    return _check_plugin_name(_text(value))


def _event_type_hook(value: object, _: Any) -> str:
    return _name_text(value, "an event type")


def _command_hook(value: object, _: Any) -> str:
    text = _text(value).strip()
    if text not in _SCHEDULED_COMMANDS:
        raise _Problem(
            f"a schedule runs one of {', '.join(_SCHEDULED_COMMANDS)}, not '{_shorten(text)}' "
            "(use 'emit' to fire an event instead)"
        )
    return text


def _header_hook(value: object, _: Any) -> str:
    text = _text(value).strip()
    if not _HEADER_NAME.fullmatch(text) or len(text) > 100:
        raise _Problem(f"'{_shorten(text)}' is not an HTTP header name")
    return text


def _endpoint_path_hook(value: object, _: Any) -> str:
    text = _text(value)
    if not text.startswith("/"):
        raise _Problem(f"an endpoint path must start with '/', got '{_shorten(text)}'")
    if not _URL_PATH.fullmatch(text) or len(text) > 1024:
        raise _Problem(
            f"'{_shorten(text)}' is not a URL path (letters, digits and -._~!$&'()*+,;=:@%/ only; "
            "no spaces, '?' or '#')"
        )
    return text


def _secret_hook(value: object, _: Any) -> str:
    if not isinstance(value, str):  # never echo what might be the secret
        raise _Problem(f"a secret must be text (put it in quotes), got {_kind(value)}")
    secret = _substitute(value, _context().env)
    if not secret:
        after = " after substituting environment variables" if "$" in value else ""
        raise _Problem(f"the secret is empty{after}; every endpoint needs a non-empty secret")
    return secret


def _json_object_hook(value: object, _: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Problem(f"expected a mapping (key: value pairs), got {_describe(value)}")
    result: dict[str, Any] = _json_value(value, (), _context().env)
    return result


def _json_value(value: Any, path: _Path, env: Mapping[str, str]) -> Any:
    """A JSON-ready copy of a plugin's config (strings substituted)."""
    if isinstance(value, str):
        try:
            return _substitute(value, env)
        except _Problem as p:
            raise _Problem(p.message, *path) from None
    if isinstance(value, dict):
        return {key: _json_value(item, (*path, key), env) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_value(item, (*path, index), env) for index, item in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):  # pragma: no cover - refused earlier
        raise _Problem("infinity and not-a-number cannot be sent as JSON", *path)
    if value is None or isinstance(value, bool | int | float):
        return value
    raise _Problem(f"{_describe(value)} cannot be sent to a plugin as JSON", *path)  # pragma: no cover


def _section(value: object) -> dict[str, Any]:
    """A mapping section: empty (null) is the same as leaving it out."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Problem(f"expected a mapping (key: value pairs), got {_describe(value)}")
    return value


# =========================================================================== document shapes
#
# Where the file's shape differs from the domain value, a private "doc" class
# mirrors the YAML exactly (its fields ARE the allowed keys); a builder turns it
# into the domain value. Every doc field is optional and None means "not
# given": the defaults live in the domain classes only.


@attrs.frozen(kw_only=True)
class _ServiceDoc:
    state_dir: DirPath | None = None
    tick_interval: timedelta | None = None
    dedupe_ttl: timedelta | None = None
    job_log_retention: timedelta | None = None
    log_level: LogLevel | None = None


@attrs.frozen(kw_only=True)
class _WindowDoc:
    start: ClockTime
    end: ClockTime


@attrs.frozen(kw_only=True)
class _ScheduleDoc:
    every: Interval | None = None
    cron: Cron | None = None
    jitter: Jitter | None = None
    preferred_window: Window | None = None
    timezone: tzinfo | None = None
    catch_up: CatchUp | None = None
    command: ScheduledCommand | None = None
    emit: EmittedEvent | None = None


@attrs.frozen(kw_only=True)
class _PluginDoc:
    enabled: bool | None = None
    schedule: Schedule | None = None
    config: JsonObject | None = None
    retry: RetryPolicy | None = None
    timeouts: Timeouts | None = None
    circuit_breaker: BreakerPolicy | None = None
    max_outstanding_polls: Count | None = None


@attrs.frozen(kw_only=True)
class _WebhooksDoc:
    listen: Listen | None = None
    endpoints: tuple[Endpoint, ...] | None = None


@attrs.frozen(kw_only=True)
class _ConfigDoc:
    service: ServiceConfig | None = None
    plugins_dir: DirPath | None = None
    plugins: PluginTable | None = None
    routes: tuple[Route, ...] | None = None
    webhooks: WebhooksConfig | None = None


#: Domain classes read as they are, with per-field hooks (and YAML names).
_OVERRIDES: dict[type, dict[str, Any]] = {
    RetryPolicy: {"max_attempts": override(struct_hook=_count_hook)},
    BreakerPolicy: {"threshold": override(struct_hook=_count_hook)},
    Timeouts: {},
    Route: {
        "source": override(rename="from", struct_hook=_plugin_name_hook),
        "event_type": override(struct_hook=_event_type_hook),
        "target": override(rename="to", struct_hook=_plugin_name_hook),
        "command": override(omit=True),
    },
    Endpoint: {
        "path": override(struct_hook=_endpoint_path_hook),
        "plugin": override(struct_hook=_plugin_name_hook),
        "secret": override(struct_hook=_secret_hook),
        "signature_header": override(struct_hook=_header_hook),
        "max_body_size": override(struct_hook=_size_hook),
        "event_type": override(struct_hook=_event_type_hook),
        "dedupe_header": override(struct_hook=_header_hook),
    },
    EmittedEvent: {
        "type": override(struct_hook=_event_type_hook),
        "payload": override(struct_hook=_json_object_hook),
        # A fixed dedupe key on a recurring timer would swallow every run after the first.
        "dedupe_key": override(omit=True),
    },
}
#: Attribute name -> YAML key, for messages.
_RENAMED: dict[Any, dict[str, str]] = {Route: {"source": "from", "target": "to"}}


def _allowed_keys(cl: Any) -> list[str]:
    omitted = {name for name, o in _OVERRIDES.get(cl, {}).items() if o.omit}
    renamed = _RENAMED.get(cl, {})
    if not attrs.has(cl):  # pragma: no cover - only attrs classes forbid extra keys
        return []
    return [renamed.get(a.name, a.name) for a in attrs.fields(cl) if a.init and a.name not in omitted]


def _given(doc: Any) -> dict[str, Any]:
    """The fields of a doc that the file gave (not None)."""
    return {a.name: getattr(doc, a.name) for a in attrs.fields(type(doc)) if getattr(doc, a.name) is not None}


def _resolve_dir(text: str) -> str:
    """``~`` expanded, relative to the config file's directory, normalized."""
    context = _context()
    if text == "~" or text.startswith("~/"):
        home = context.env.get("HOME") or os.path.expanduser("~")
        text = home + text[1:]
    else:
        text = os.path.expanduser(text)
    return os.path.normpath(os.path.join(context.base_dir, text))


def _build_service(doc: _ServiceDoc) -> ServiceConfig:
    given = _given(doc)
    given["state_dir"] = _resolve_dir(doc.state_dir or DEFAULT_STATE_DIR)
    return ServiceConfig(**given)


def _build_window(doc: _WindowDoc) -> Window:
    try:
        return Window(doc.start, doc.end)
    except ScheduleError as e:
        raise _Problem(str(e), "end") from None


def _build_schedule(doc: _ScheduleDoc) -> Schedule:
    if doc.every is None and doc.cron is None:
        raise _Problem("a schedule needs 'every' (e.g. every: 6h) or 'cron' (e.g. cron: \"30 7 * * 1-5\")")
    if doc.every is not None and doc.cron is not None:
        raise _Problem("give either 'every' or 'cron', not both", "cron")
    if doc.emit is not None and doc.command is not None:
        raise _Problem("give either 'command' (run the plugin) or 'emit' (fire an event), not both", "emit")
    given = _given(doc)
    given["tz"] = given.pop("timezone", None) or _context().local_tz
    window = given.pop("preferred_window", None)
    if window is not None:
        given["window"] = window
    try:
        return Schedule(**given)
    except ScheduleError as e:
        raise _Problem(str(e), *(("jitter",) if doc.jitter is not None else ())) from None


def _build_plugin(name: str, doc: _PluginDoc) -> PluginConfig:
    return PluginConfig(name=name, **_given(doc))


def _build_webhooks(doc: _WebhooksDoc) -> WebhooksConfig:
    given: dict[str, Any] = {}
    if doc.listen is not None:
        given["host"], given["port"] = doc.listen
    endpoints = doc.endpoints or ()
    seen: dict[str, int] = {}
    for index, endpoint in enumerate(endpoints):
        if endpoint.path == HEALTH_PATH:
            raise _Problem(
                f"{HEALTH_PATH} is the health endpoint; choose another path", "endpoints", index, "path"
            )
        if endpoint.path in seen:
            raise _Problem(
                f"path {_shorten(endpoint.path)} is already used by endpoints[{seen[endpoint.path]}]",
                "endpoints",
                index,
                "path",
            )
        seen[endpoint.path] = index
    return WebhooksConfig(endpoints=endpoints, **given)


#: Domain values read through a doc class (whose fields are the allowed keys) and a builder.
_BUILT_FROM: dict[type, tuple[type, Callable[[Any], Any]]] = {
    ServiceConfig: (_ServiceDoc, _build_service),
    Window: (_WindowDoc, _build_window),
    Schedule: (_ScheduleDoc, _build_schedule),
    WebhooksConfig: (_WebhooksDoc, _build_webhooks),
}


def known_keys() -> list[str]:
    """Every key path the config file accepts, in schema order (for the docs and their test).

    Dotted paths with ``<name>`` for a plugin's name and ``[]`` for a list
    item: ``plugins.<name>.retry.max_attempts``, ``webhooks.endpoints[].path``.
    A mapping or list is listed itself before its keys; the free-form mappings
    (``plugins.<name>.config``, ``...emit.payload``) are listed without their
    contents. Computed from the same doc classes, overrides and renames the
    converter reads with, so it cannot drift from what the reader accepts.
    Top-level ``x-`` keys (ignored) are not listed.
    """
    out: list[str] = []
    _walk_keys(_ConfigDoc, "", out)
    return out


def _walk_keys(cl: Any, prefix: str, out: list[str]) -> None:
    hints = get_type_hints(cl)
    omitted = {name for name, o in _OVERRIDES.get(cl, {}).items() if o.omit}
    renamed = _RENAMED.get(cl, {})
    for a in attrs.fields(cl):
        if not a.init or a.name in omitted:
            continue
        path = f"{prefix}.{renamed.get(a.name, a.name)}" if prefix else renamed.get(a.name, a.name)
        out.append(path)
        t = hints[a.name]
        if _is_optional(t):
            t = next(arg for arg in get_args(t) if arg is not type(None))
        if _is_tuple_of(t):
            t, path = get_args(t)[0], path + "[]"
        if t is PluginTable:
            out.append(f"{path}.<name>")
            _walk_keys(_PluginDoc, f"{path}.<name>", out)
        elif t in _BUILT_FROM:
            _walk_keys(_BUILT_FROM[t][0], path, out)
        elif attrs.has(t):
            _walk_keys(t, path, out)


def _without_extensions(value: object) -> object:
    """The document without its top-level ``x-...`` keys (anchor storage, ignored)."""
    if not isinstance(value, dict):
        return value
    return {key: item for key, item in value.items() if not key.startswith(EXTENSION_PREFIX)}


def _build_config(doc: _ConfigDoc) -> Config:
    routes = doc.routes or ()
    seen: dict[Route, int] = {}
    for index, route in enumerate(routes):
        if route in seen:
            raise _Problem(f"the same route as routes[{seen[route]}]", "routes", index)
        seen[route] = index
    service = doc.service if doc.service is not None else _build_service(_ServiceDoc())
    return Config(
        service=service,
        plugins_dir=_resolve_dir(doc.plugins_dir or DEFAULT_PLUGINS_DIR),
        plugins=doc.plugins or {},
        routes=routes,
        webhooks=doc.webhooks,
        source=_context().source,
    )


# =========================================================================== the converter


def _is_optional(t: Any) -> bool:
    args = get_args(t)
    return get_origin(t) in (Union, type(int | None)) and len(args) == 2 and type(None) in args


def _is_tuple_of(t: Any) -> bool:
    args = get_args(t)
    return get_origin(t) is tuple and len(args) == 2 and args[1] is Ellipsis


@functools.cache
def _converter() -> cattrs.Converter:
    """The one converter: plain values in, domain values out."""
    conv = cattrs.Converter(detailed_validation=True, forbid_extra_keys=True)

    def optional_factory(t: Any) -> Callable[[object, Any], Any]:
        inner = next(a for a in get_args(t) if a is not type(None))
        return lambda value, _: None if value is None else conv.structure(value, inner)

    def tuple_factory(t: Any) -> Callable[[object, Any], tuple[Any, ...]]:
        item_type = get_args(t)[0]

        def hook(value: object, _: Any) -> tuple[Any, ...]:
            if not isinstance(value, list):
                raise _Problem(f"expected a list, got {_describe(value)}")
            items: list[Any] = []
            errors: list[Exception] = []
            for index, item in enumerate(value):
                try:
                    items.append(conv.structure(item, item_type))
                except Exception as e:
                    e.add_note(IterableValidationNote(f"item {index}", index, item_type))
                    errors.append(e)
            if errors:
                raise IterableValidationError(f"while reading a list of {item_type.__name__}", errors, t)
            return tuple(items)

        return hook

    def mapping_factory(cl: Any) -> Callable[[object, Any], Any]:
        generated = make_dict_structure_fn(cl, conv, **_OVERRIDES.get(cl, {}))

        allowed = set(_allowed_keys(cl))

        def hook(value: object, _: Any) -> Any:
            # An empty value means "not given" for a known key; an unknown key
            # stays in, empty or not, so the unknown-key check still sees it.
            given = {
                key: item for key, item in _section(value).items() if item is not None or key not in allowed
            }
            return generated(given, cl)

        return hook

    def built_from(doc: type[Any], build: Callable[[Any], _T]) -> Callable[[object, Any], _T]:
        return lambda value, _: build(conv.structure(value, doc))

    def plugins_hook(value: object, _: Any) -> dict[str, PluginConfig]:
        result: dict[str, PluginConfig] = {}
        errors: list[Exception] = []
        for name, body in _section(value).items():
            try:
                _check_plugin_name(name)
                result[name] = _build_plugin(name, conv.structure(body, _PluginDoc))
            except Exception as e:
                e.add_note(IterableValidationNote(f"plugin {name!r}", name, _PluginDoc))
                errors.append(e)
        if errors:
            raise IterableValidationError("while reading plugins", errors, PluginTable)
        return result

    conv.register_structure_hook_factory(attrs.has, mapping_factory)
    conv.register_structure_hook_factory(_is_tuple_of, tuple_factory)
    conv.register_structure_hook_factory(_is_optional, optional_factory)
    for cls, hook in (
        (str, _string_hook),
        (bool, _bool_hook),
        (int, _count_hook),
        (timedelta, _duration_hook),
        (tzinfo, _zone_hook),
        (LogLevel, _enum_hook(LogLevel)),
        (CatchUp, _enum_hook(CatchUp)),
        (Interval, _interval_hook),
        (Jitter, _jitter_hook),
        (Size, _size_hook),
        (Count, _count_hook),
        (ClockTime, _clock_hook),
        (Cron, _cron_hook),
        (Listen, _listen_hook),
        (DirPath, _dir_hook),
        (PluginName, _plugin_name_hook),
        (EventType, _event_type_hook),
        (ScheduledCommand, _command_hook),
        (JsonObject, _json_object_hook),
        (PluginTable, plugins_hook),
        *((cls, built_from(doc, build)) for cls, (doc, build) in _BUILT_FROM.items()),
        (Config, lambda value, _: _build_config(conv.structure(_without_extensions(value), _ConfigDoc))),
    ):
        conv.register_structure_hook(cls, hook)
    return conv
