"""The one cattrs converter: plain values in, a :class:`~ductile.domain.config.Config` out.

Hooks by type (:mod:`~ductile.adapters.config.hooks`), the document classes
and their builders (:mod:`~ductile.adapters.config.schema`), and the walk
over cattrs' exception tree that turns every problem into a key path and a
message (:func:`structure_config`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, get_args

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    BaseValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn

from ductile.adapters.config.hooks import (
    PARSE_CONTEXT,
    VALUE_HOOKS,
    ParseContext,
    PluginTable,
    check_instance_name,
    section,
)
from ductile.adapters.config.messages import KeyPath, Position, Problem, config_error, describe, unknown_key
from ductile.adapters.config.plugin_hooks import PLUGIN_HOOKS
from ductile.adapters.config.schema import (
    BUILT_FROM,
    EXTENSION_PREFIX,
    OVERRIDES,
    RENAMED,
    ConfigDoc,
    PluginDoc,
    allowed_keys,
    build_config,
    build_plugin,
    is_optional,
    is_tuple_of,
    without_extensions,
)
from ductile.domain.config import Config, PluginConfig
from ductile.domain.errors import ConfigError

_T = TypeVar("_T")


def structure_config(tree: Any, lines: Mapping[KeyPath, Position], context: ParseContext) -> Config:
    """The plain values as a :class:`Config`; every problem found, as one :class:`ConfigError`."""
    token = PARSE_CONTEXT.set(context)
    try:
        return converter().structure(tree, Config)
    except ConfigError:
        raise
    except Exception as e:  # every structuring problem, as a ConfigError with paths and lines
        raise _structuring_error(e, lines) from None
    finally:
        PARSE_CONTEXT.reset(token)


def _structuring_error(exc: BaseException, lines: Mapping[KeyPath, Position]) -> ConfigError:
    found: list[tuple[KeyPath, str]] = []
    _collect(exc, (), found)
    if not found:  # pragma: no cover - an exception group always holds something
        found.append(((), f"unexpected {type(exc).__name__}: {exc} (a bug in ductile; please report it)"))
    return config_error(found, lines)


#: A cattrs structure hook: a plain value and the type asked for in, a checked value out.
StructureHook = Callable[[object, Any], Any]


@functools.cache
def converter() -> cattrs.Converter:
    """The one converter: plain values in, domain values out."""
    conv = cattrs.Converter(detailed_validation=True, forbid_extra_keys=True)
    conv.register_structure_hook_factory(attrs.has, _mapping_factory)
    conv.register_structure_hook_factory(is_tuple_of, _tuple_factory)
    conv.register_structure_hook_factory(is_optional, _optional_factory)
    for cls, hook in (*VALUE_HOOKS, *PLUGIN_HOOKS):
        conv.register_structure_hook(cls, hook)
    conv.register_structure_hook(PluginTable, functools.partial(_structure_plugins, conv))
    for cls, (doc, build) in BUILT_FROM.items():
        conv.register_structure_hook(cls, _built_from(conv, doc, build))
    conv.register_structure_hook(
        Config, lambda value, _: build_config(conv.structure(without_extensions(value), ConfigDoc))
    )
    return conv


def _optional_factory(t: Any, conv: cattrs.Converter) -> StructureHook:
    """``X | None``: null stays None, anything else is read as ``X``."""
    inner = next(a for a in get_args(t) if a is not type(None))
    return lambda value, _: None if value is None else conv.structure(value, inner)


def _tuple_factory(t: Any, conv: cattrs.Converter) -> StructureHook:
    """``tuple[X, ...]`` from a YAML list, every item's problem reported with its index."""
    item_type = get_args(t)[0]

    def hook(value: object, _: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise Problem(f"expected a list, got {describe(value)}")
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


def _mapping_factory(cl: Any, conv: cattrs.Converter) -> StructureHook:
    """An attrs class from a YAML mapping, with its :data:`OVERRIDES` (hooks, YAML names)."""
    generated = make_dict_structure_fn(cl, conv, **OVERRIDES.get(cl, {}))
    allowed = set(allowed_keys(cl))

    def hook(value: object, _: Any) -> Any:
        # An empty value means "not given" for a known key; an unknown key
        # stays in, empty or not, so the unknown-key check still sees it.
        given = {key: item for key, item in section(value).items() if item is not None or key not in allowed}
        return generated(given, cl)

    return hook


def _built_from(
    conv: cattrs.Converter, doc: type[Any], build: Callable[[Any], _T]
) -> Callable[[object, Any], _T]:
    """A domain value read through its doc class (whose fields are the keys), then built."""
    return lambda value, _: build(conv.structure(value, doc))


def _structure_plugins(conv: cattrs.Converter, value: object, _: Any) -> dict[str, PluginConfig]:
    """The ``plugins`` table: every plugin's problems reported under its name."""
    result: dict[str, PluginConfig] = {}
    errors: list[Exception] = []
    for name, body in section(value).items():
        try:
            check_instance_name(name)
            result[name] = build_plugin(name, conv.structure(body, PluginDoc))
        except Exception as e:
            e.add_note(IterableValidationNote(f"plugin {name!r}", name, PluginDoc))
            errors.append(e)
    if errors:
        raise IterableValidationError("while reading plugins", errors, PluginTable)
    return result


def _collect(exc: BaseException, path: KeyPath, out: list[tuple[KeyPath, str]]) -> None:
    if isinstance(exc, BaseValidationError):
        for sub in exc.exceptions:
            _collect(sub, path + _note_step(sub, exc.cl), out)
    elif isinstance(exc, ForbiddenExtraKeysError):
        allowed = allowed_keys(exc.cl)
        extra = f" (and keys starting with '{EXTENSION_PREFIX}', ignored)" if exc.cl is ConfigDoc else ""
        for key in sorted(str(k) for k in exc.extra_fields):
            out.append(((*path, key), unknown_key(key, allowed) + extra))
    elif isinstance(exc, Problem):
        out.append((path + exc.subpath, exc.message))
    elif isinstance(exc, KeyError) and path and exc.args == (path[-1],):
        out.append((path, f"required key '{path[-1]}' is missing"))
    elif isinstance(exc, ConfigError):  # pragma: no cover - hooks raise Problem
        out.append((path, exc.detail))
    else:
        out.append((path, f"unexpected {type(exc).__name__}: {exc} (a bug in ductile; please report it)"))


def _note_step(exc: BaseException, cl: Any) -> KeyPath:
    for note in reversed(getattr(exc, "__notes__", [])):
        if isinstance(note, AttributeValidationNote):
            return (RENAMED.get(cl, {}).get(note.name, note.name),)
        if isinstance(note, IterableValidationNote):
            return (note.index,)
    return ()
