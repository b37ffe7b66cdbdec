"""YAML text to plain values, with the line of every key path (ADR 0011).

PyYAML's reader, scanner, parser and composer only (no constructor, so no
Python object is ever built from a tag), and our own scalar rules, YAML-1.2
core style: booleans are ``true``/``false`` only (``NO``, ``yes``, ``on``
stay text: the Norway problem), ``2024-01-01`` stays text, numbers are plain
decimal (``0755``, ``0x1F``, ``1_000``, ``1:30`` stay text), ``.inf``/``.nan``
and overflowing floats are refused. A plain scalar is a number only where
YAML 1.1 and 1.2 agree that it is that number.

The result (a :class:`Tree`) is dict / list / str / int / float / bool /
None plus a map from key path to (line, column). Every string is valid
Unicode: an escaped surrogate pair (``"\ud83d\ude00"``) is joined into its
character, a lone one (``"\ud83d"``) is refused, naming the key path (it would
pass the check and then fail every JSON encode: every tick of a schedule,
every job of a plugin). Duplicate keys, non-text
keys, unsupported tags, recursive aliases, nesting deeper than
:data:`MAX_DEPTH` and alias expansion beyond :data:`MAX_VALUES` values (the
"billion laughs") are refused here. ``<<`` merge keys work.

The config reader and plugin discovery (``manifest.yaml``) both read YAML
here, so a plugin author and an operator meet the same rules.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import attrs
import yaml
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from ductile.adapters.config.messages import KeyPath, Position, describe, format_path, shorten
from ductile.domain.errors import ConfigError
from ductile.domain.jsonvalue import has_surrogate, join_pairs

#: Mappings and lists nest at most this deep (plugin ``config`` included).
MAX_DEPTH = 64
#: At most this many values after expanding aliases: a "billion laughs"
#: document stops here instead of eating the memory.
MAX_VALUES = 100_000
#: Integers longer than this are refused (quote them to keep them as text).
MAX_INT_DIGITS = 100


def decode(raw: bytes) -> str:
    """A YAML file's bytes as text: UTF-8, a byte-order mark allowed (UTF-16 is not)."""
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(
            f"the file is not valid UTF-8 (byte 0x{raw[e.start]:02x} at line {line}); save it as UTF-8",
            line=line,
        ) from None


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
TRUE_WORDS = frozenset({"true", "True", "TRUE"})
FALSE_WORDS = frozenset({"false", "False", "FALSE"})
YAML11_BOOL_WORDS = frozenset({"yes", "no", "on", "off", "y", "n"})
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


def _pos_of(node: Node) -> Position:
    return int(node.start_mark.line) + 1, int(node.start_mark.column)


@attrs.frozen
class Tree:
    """One YAML document as plain values, and where each of its key paths was written."""

    #: dict / list / str / int / float / bool / None.
    value: Any
    #: The (line, column) of every key path (``()`` is the document itself).
    lines: Mapping[KeyPath, Position]
    #: The text as written of every plain scalar read as a number: ``1.10`` for the
    #: float 1.1, for a document whose schema wants text there (a manifest's version).
    written: Mapping[KeyPath, str]


def read_tree(text: str, *, document: str = "config") -> Tree:
    """The document as plain values, with its lines; :class:`ConfigError` for what our rules refuse.

    ``document`` names the file in messages ("the config nests more than 64
    levels deep", "the manifest ...").
    """
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as e:
        raise _reader_error(e, text, document) from None
    try:
        root = loader.get_single_node()
    except _TooDeepError as e:
        raise ConfigError(f"the {document} nests more than {MAX_DEPTH} levels deep", line=e.line) from None
    except yaml.reader.ReaderError as e:
        raise _reader_error(e, text, document) from None
    except yaml.MarkedYAMLError as e:
        raise _syntax_error(e) from None
    except yaml.YAMLError as e:  # pragma: no cover - every PyYAML error we know of is marked
        raise ConfigError(f"YAML error: {e}") from None
    finally:
        loader.dispose()
    if root is None:
        return Tree(value=None, lines={}, written={})
    walker = _Walker(document)
    walker.lines[()] = _pos_of(root)
    value = walker.walk(root, (), 0)
    return Tree(value=value, lines=walker.lines, written=walker.written)


def _reader_error(e: yaml.reader.ReaderError, text: str, document: str) -> ConfigError:
    position = max(0, min(int(e.position), len(text)))
    line = text.count("\n", 0, position) + 1
    char = e.character
    code = f"U+{char if isinstance(char, int) else ord(str(char)[:1] or chr(0)):04X}"
    return ConfigError(
        f"character {code} is not allowed in a YAML file (control characters other than tab and "
        f"newline, and lone surrogates, cannot appear in a {document})",
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
    if text in TRUE_WORDS:
        return True, True
    if text in FALSE_WORDS:
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
    """Turns the node tree into plain values, noting the line of every path and how numbers were written."""

    def __init__(self, document: str) -> None:
        self.document = document
        self.lines: dict[KeyPath, Position] = {}
        self.written: dict[KeyPath, str] = {}
        self.remaining = MAX_VALUES
        self.active: set[int] = set()

    def fail(self, message: str, path: KeyPath, node: Node) -> NoReturn:
        raise ConfigError(message, path=format_path(path), line=_line_of(node))

    def walk(self, node: Node, path: KeyPath, depth: int) -> Any:
        self.remaining -= 1
        if self.remaining < 0:
            self.fail(
                f"the {self.document} expands to more than {MAX_VALUES:,} values; "
                "is an alias (*name) repeating a large block many times?",
                path,
                node,
            )
        if depth > MAX_DEPTH:
            self.fail(f"the {self.document} nests more than {MAX_DEPTH} levels deep", path, node)
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

    def scalar(self, node: ScalarNode, path: KeyPath) -> Any:
        text = str(node.value)
        if has_surrogate(text):  # only a double-quoted "\ud83d" escape can put one here
            joined = join_pairs(text)
            if joined is None:
                self.fail(
                    f"'{shorten(text)}' holds a lone surrogate escape (like \\ud83d), which is not a "
                    "character and cannot be sent as JSON; write the character itself, or an escape "
                    "of the whole code point (\\U0001F600)",
                    path,
                    node,
                )
            text = joined
        if node.tag == _PLAIN_TAG:
            ok, value = _plain_value(text)
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.written[path] = text
        else:
            ok, value = _tagged_value(str(node.tag), text)
        if not ok:
            self.fail(str(value), path, node)
        return value

    def sequence(self, node: SequenceNode, path: KeyPath, depth: int) -> list[Any]:
        if node.tag != _SEQ_TAG:
            self.fail(f"the YAML tag {_tag_name(str(node.tag))} is not supported on a list", path, node)
        items: list[Any] = []
        for index, item in enumerate(node.value):
            item_path = (*path, index)
            self.lines.setdefault(item_path, _pos_of(item))
            items.append(self.walk(item, item_path, depth + 1))
        return items

    def key(self, node: Node, path: KeyPath) -> str:
        if not isinstance(node, ScalarNode):
            self.fail("a key must be text, not a list or a mapping", path, node)
        value = self.scalar(node, path)
        if not isinstance(value, str):
            shown = shorten(str(node.value)) or "(empty)"
            self.fail(
                f"key {shown} is {describe(value)}, but keys must be text; put it in quotes: '{shown}'",
                path,
                node,
            )
        return value

    @staticmethod
    def is_merge(node: Node) -> bool:
        return isinstance(node, ScalarNode) and (
            (node.tag == _PLAIN_TAG and node.value == "<<") or node.tag == _MERGE_TAG
        )

    def merge_sources(self, node: Node, path: KeyPath) -> list[MappingNode]:
        if isinstance(node, MappingNode):
            return [node]
        if isinstance(node, SequenceNode) and all(isinstance(n, MappingNode) for n in node.value):
            return [n for n in node.value if isinstance(n, MappingNode)]
        self.fail("'<<' (merge) takes a mapping or a list of mappings, e.g. <<: *defaults", path, node)

    def mapping(self, node: MappingNode, path: KeyPath, depth: int) -> dict[str, Any]:
        if node.tag != _MAP_TAG:
            self.fail(f"the YAML tag {_tag_name(str(node.tag))} is not supported on a mapping", path, node)
        first_line: dict[str, int] = {}
        sources: list[MappingNode] | None = None
        entries: list[tuple[str, Position, Node]] = []
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
                    f"duplicate key '{shorten(key)}' (first at line {first_line[key]}); "
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
