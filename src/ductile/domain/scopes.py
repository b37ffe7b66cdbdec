"""API token scopes: what a token may do, decided by pure functions.

A scope is ``<area>:<access>`` with an optional plugin narrowing:
``plugin:rw``, ``jobs:ro``, ``plugin:rw:feeds``; ``*`` grants everything.
``rw`` implies ``ro``. A narrowed scope (``plugin:ro:feeds``) grants its
access for that plugin only; an unnarrowed one for every plugin.

:func:`parse_scope` reads the config's text (an error says what is wrong);
:func:`allows` answers whether a set of granted scopes covers one
:class:`Need` (what a route asks for). Nothing here knows of HTTP.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable

import attrs

from ductile.domain.errors import DuctileError


class ScopeError(DuctileError):
    """A scope's text is not one of the forms ductile knows."""


class Area(enum.StrEnum):
    PLUGIN = "plugin"
    JOBS = "jobs"
    EVENTS = "events"
    SYSTEM = "system"
    METRICS = "metrics"


class Access(enum.StrEnum):
    RO = "ro"
    RW = "rw"


#: The accesses each area has (``events`` and ``metrics`` are read-only; ``system`` write-only).
ACCESSES: dict[Area, tuple[Access, ...]] = {
    Area.PLUGIN: (Access.RO, Access.RW),
    Area.JOBS: (Access.RO, Access.RW),
    Area.EVENTS: (Access.RO,),
    Area.SYSTEM: (Access.RW,),
    Area.METRICS: (Access.RO,),
}

_PLUGIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@attrs.frozen
class Scope:
    """One granted scope; ``area`` None is ``*`` (everything)."""

    area: Area | None
    access: Access = Access.RW
    #: Narrowed to this plugin (``plugin`` area only); None: every plugin.
    plugin: str | None = None

    def __str__(self) -> str:
        if self.area is None:
            return "*"
        text = f"{self.area.value}:{self.access.value}"
        return text if self.plugin is None else f"{text}:{self.plugin}"


EVERYTHING = Scope(None)


@attrs.frozen
class Need:
    """What one request needs: an area and access, and the plugin it touches (if any)."""

    area: Area
    access: Access
    plugin: str | None = None

    def __str__(self) -> str:
        text = f"{self.area.value}:{self.access.value}"
        return text if self.plugin is None else f"{text}:{self.plugin}"


def parse_scope(text: str) -> Scope:
    """``*``, ``area:access`` or ``plugin:access:name``; :class:`ScopeError` otherwise."""
    if text == "*":
        return EVERYTHING
    parts = text.split(":")
    known = ", ".join(["*", *(f"{a.value}:{x.value}" for a, xs in ACCESSES.items() for x in xs)])
    if len(parts) not in (2, 3):
        raise ScopeError(f"unknown scope {text!r}; scopes are {known} (plugin scopes may add :<plugin>)")
    try:
        area, access = Area(parts[0]), Access(parts[1])
    except ValueError:
        raise ScopeError(f"unknown scope {text!r}; scopes are {known}") from None
    if access not in ACCESSES[area]:
        raise ScopeError(f"unknown scope {text!r}; {area.value} has {', '.join(ACCESSES[area])} only")
    plugin = parts[2] if len(parts) == 3 else None
    if plugin is not None:
        if area is not Area.PLUGIN:
            raise ScopeError(f"scope {text!r}: only plugin scopes can be narrowed to a plugin")
        if not _PLUGIN_NAME.fullmatch(plugin):
            raise ScopeError(f"scope {text!r}: {plugin!r} is not a plugin name")
    return Scope(area, access, plugin)


def grants(scope: Scope, need: Need) -> bool:
    """Whether one granted scope covers ``need``: same area, ``rw`` covers ``ro``,
    a narrowed scope only for its plugin (and never for a need about no plugin)."""
    if scope.area is None:
        return True
    if scope.area is not need.area:
        return False
    if need.access is Access.RW and scope.access is not Access.RW:
        return False
    return scope.plugin is None or scope.plugin == need.plugin


def allows(scopes: Iterable[Scope], need: Need) -> bool:
    """Whether any of ``scopes`` covers ``need``."""
    return any(grants(scope, need) for scope in scopes)
