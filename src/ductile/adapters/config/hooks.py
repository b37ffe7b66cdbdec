"""The cattrs structure hooks: one plain value in, one checked value out.

Each hook reads one kind of value (text, a count, a duration, a zone, a cron
expression, a header name, ...), substitutes ``${VAR}`` in text, and raises a
:class:`~ductile.adapters.config.messages.Problem` naming what is wrong. The
``NewType`` s below name the kinds a document field can have, so that the
converter finds the hook by the field's type. What the hooks need beyond the
value (the environment, the local zone, the config's directory) is the
:class:`ParseContext` of the read in progress.
"""

from __future__ import annotations

import contextvars
import difflib
import functools
import ipaddress
import math
import re
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import Any, NewType, TypeVar
from zoneinfo import available_timezones

import attrs

from ductile.adapters.config.envsubst import substitute
from ductile.adapters.config.machine_tz import zone_by_key
from ductile.adapters.config.messages import KeyPath, Problem, describe, kind, shorten
from ductile.adapters.config.yaml_tree import FALSE_WORDS, TRUE_WORDS, YAML11_BOOL_WORDS
from ductile.domain.config import MIN_TOKEN_BYTES, LogLevel, PluginConfig
from ductile.domain.errors import ScheduleError, UnitError
from ductile.domain.lifecycle import SOURCE as LIFECYCLE_SOURCE
from ductile.domain.plugin.alias import builtin_name
from ductile.domain.quantities import parse_duration, parse_interval, parse_size
from ductile.domain.schedule import CatchUp, IfRunning, cron_fires, validate_cron

#: Upper bound of ``max_attempts``, ``threshold`` and ``max_outstanding_polls``.
MAX_COUNT = 1_000_000
#: The shortest ``schedule.every``: a sub-second schedule is a typo ('1ms' for '1m').
MIN_INTERVAL = timedelta(seconds=1)

_T = TypeVar("_T")


@attrs.frozen
class ParseContext:
    """What the hooks need beyond the values: set for the length of one parse."""

    env: Mapping[str, str]
    local_tz: tzinfo
    base_dir: str
    source: str


PARSE_CONTEXT: contextvars.ContextVar[ParseContext] = contextvars.ContextVar("ductile_config_context")


def current_context() -> ParseContext:
    return PARSE_CONTEXT.get()


Interval = NewType("Interval", timedelta)
Jitter = NewType("Jitter", timedelta)
Size = NewType("Size", int)
Count = NewType("Count", int)
ClockTime = NewType("ClockTime", time)
Cron = NewType("Cron", str)
Listen = NewType("Listen", tuple[str, int])
DirPath = NewType("DirPath", str)
PluginName = NewType("PluginName", str)
#: ``uses``: a plugin's name, or ``builtin:<name>`` for one shipped with ductile.
UsesName = NewType("UsesName", str)
EventType = NewType("EventType", str)
JsonObject = NewType("JsonObject", dict[str, Any])
StoreUrl = NewType("StoreUrl", str)
ApiSecret = NewType("ApiSecret", str)
UserName = NewType("UserName", str)
PluginTable = NewType("PluginTable", dict[str, PluginConfig])

_PLUGIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_URL_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")
#: An endpoint path once its percent-escapes are decoded: no '%' left, nothing that needs one.
_DECODED_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@/-]*")
_HOST_NAME = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
_CLOCK = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")
_ZERO_DURATION = re.compile(r"0+(?:ms|s|m|h|d|w)?")

_CRON_CHECK_FROM = datetime(2000, 1, 1, tzinfo=UTC)


def text_value(value: object) -> str:
    """A string value, ``${VAR}`` substituted."""
    if not isinstance(value, str):
        raise Problem(f"expected text, got {describe(value)}; put it in quotes if it is meant as text")
    return substitute(value, current_context().env)


def _from_env(value: object) -> str | None:
    """The substituted text of a ``${VAR}`` value where a number or boolean is expected."""
    if isinstance(value, str) and "${" in value:
        return text_value(value).strip()
    return None


def _name_text(value: object, what: str, limit: int = 200) -> str:
    text = text_value(value)
    if not text.strip():
        raise Problem(f"{what} must not be empty")
    if text != text.strip():
        raise Problem(f"{what} '{shorten(text)}' must not start or end with spaces")
    if not text.isprintable():
        raise Problem(f"{what} '{shorten(text)}' contains control characters")
    if len(text) > limit:
        raise Problem(f"{what} is longer than {limit} characters")
    return text


def string_hook(value: object, _: Any) -> str:
    return text_value(value)


def bool_hook(value: object, _: Any) -> bool:
    if isinstance(value, bool):
        return value
    env_text = _from_env(value)
    if env_text is not None:
        if env_text in TRUE_WORDS:
            return True
        if env_text in FALSE_WORDS:
            return False
        raise Problem(f"expected true or false, got '{shorten(env_text)}' from the environment")
    hint = ""
    if isinstance(value, str) and value.strip().lower() in YAML11_BOOL_WORDS:
        hint = " (YAML 1.1 words like yes/no/on/off are plain text here: write true or false)"
    raise Problem(f"expected true or false, got {describe(value)}{hint}")


def count_hook(value: object, _: Any) -> int:
    env_text = _from_env(value)
    if env_text is not None:
        if not (env_text.isascii() and env_text.isdigit() and len(env_text) <= 18):
            raise Problem(f"expected a whole number, got '{shorten(env_text)}' from the environment")
        number = int(env_text)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        hint = ""
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            hint = " (remove the quotes)"
        raise Problem(f"expected a whole number, got {describe(value)}{hint}")
    if number < 1:
        raise Problem(f"must be at least 1, got {number}")
    if number > MAX_COUNT:
        raise Problem(f"must be at most {MAX_COUNT:,}, got {number}")
    return number


def _unit_text(value: object, what: str, example: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # the parsers explain that a unit is missing
    if isinstance(value, str):
        return text_value(value)
    raise Problem(f"expected {what} like {example}, got {describe(value)}")


def _parsed(parse: Callable[[str], _T], text: str) -> _T:
    try:
        return parse(text)
    except UnitError as e:
        raise Problem(str(e)) from None


def duration_hook(value: object, _: Any) -> timedelta:
    return _parsed(parse_duration, _unit_text(value, "a duration", "'30s', '5m' or '1h30m'"))


def interval_hook(value: object, _: Any) -> timedelta:
    text = _unit_text(value, "an interval", "'6h', '30m' or 'daily'")
    interval = _parsed(parse_interval, text)
    if interval < MIN_INTERVAL:
        raise Problem(f"'every' must be at least 1s, not '{shorten(text)}' (did you mean minutes, 'm'?)")
    return interval


def jitter_hook(value: object, _: Any) -> timedelta:
    text = _unit_text(value, "a duration", "'30s', '5m' or '1h30m'")
    if _ZERO_DURATION.fullmatch(text.strip()):
        return timedelta(0)
    return _parsed(parse_duration, text)


def size_hook(value: object, _: Any) -> int:
    return _parsed(parse_size, _unit_text(value, "a size", "'64KB' or '1MB'"))


def enum_hook(cls: type[LogLevel] | type[CatchUp] | type[IfRunning]) -> Callable[[object, Any], Any]:
    choices = [str(member.value) for member in cls]

    def hook(value: object, _: Any) -> Any:
        if not isinstance(value, str):
            raise Problem(f"expected one of {', '.join(choices)}, got {describe(value)}")
        text = text_value(value).strip().lower()
        for member in cls:
            if member.value == text:
                return member
        raise Problem(f"expected one of {', '.join(choices)}, got '{shorten(text)}'")

    return hook


@functools.cache
def _zone_names() -> list[str]:
    try:
        return sorted(available_timezones())
    except Exception:  # pragma: no cover - no tz database at all
        return []


def zone_hook(value: object, _: Any) -> tzinfo:
    name = text_value(value).strip()
    if not name:
        raise Problem("must not be empty; leave 'timezone' out to use the machine's zone")
    if len(name) <= 200:
        zone = zone_by_key(name)
        if zone is not None:
            return zone
    close = difflib.get_close_matches(name, _zone_names(), n=1) if len(name) <= 64 else []
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise Problem(
        f"unknown timezone '{shorten(name)}'{hint}; use an IANA name like 'Europe/Berlin', "
        "'America/New_York' or 'UTC'"
    )


def clock_hook(value: object, _: Any) -> time:
    if not isinstance(value, str):
        raise Problem(f"expected a time of day like '06:00' (24-hour HH:MM), got {describe(value)}")
    text = text_value(value).strip()
    match = _CLOCK.fullmatch(text)
    if match is None:
        raise Problem(
            f"expected a time of day like '06:00' or '22:30' (24-hour HH:MM), got '{shorten(text)}'"
        )
    return time(int(match.group(1)), int(match.group(2)))


def cron_hook(value: object, _: Any) -> str:
    text = text_value(value)
    if text.strip().startswith("@"):
        raise Problem(
            f"cron nicknames like '{shorten(text.strip())}' are not supported; write 5 fields "
            "(e.g. '0 0 * * *'), or use 'every: daily'"
        )
    if len(text) > 200:
        raise Problem("a cron expression longer than 200 characters cannot be right")
    try:
        normalized = validate_cron(text)
    except ScheduleError as e:
        raise Problem(str(e)) from None
    try:
        next(cron_fires(normalized, _CRON_CHECK_FROM, UTC))
    except Exception:  # croniter gives up on expressions no date matches ('0 0 31 2 *')
        raise Problem(f"cron expression '{shorten(text)}' never fires: no date matches it") from None
    return normalized


def listen_hook(value: object, _: Any) -> tuple[str, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        raise Problem(f"write host:port, e.g. '127.0.0.1:{value}'")
    text = text_value(value).strip()
    host, colon, port_text = text.rpartition(":")
    if not colon or not host:
        raise Problem(f"expected host:port like '127.0.0.1:8081', got '{shorten(text)}'")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise Problem(f"'{shorten(host)}' is not an IPv6 address") from None
    elif ":" in host:
        raise Problem("write an IPv6 address in brackets, e.g. '[::1]:8081'")
    elif not _HOST_NAME.fullmatch(host) or len(host) > 253:
        raise Problem(f"'{shorten(host)}' is not a host name or IP address")
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5 and int(port_text) <= 65535):
        raise Problem(f"'{shorten(port_text)}' is not a port number (0-65535)")
    return host, int(port_text)


def dir_hook(value: object, _: Any) -> str:
    text = text_value(value)
    if not text.strip():
        raise Problem("must not be empty")
    if "\x00" in text:
        raise Problem("a path cannot contain a NUL character")
    return text


def check_plugin_name(name: str) -> str:
    if not _PLUGIN_NAME.fullmatch(name) or len(name) > 255:
        raise Problem(
            f"'{shorten(name)}' is not a valid plugin name: use letters, digits, '.', '_' and '-', "
            "not starting with '.'"
        )
    return name


def check_instance_name(name: str) -> str:
    """A key of the ``plugins`` table: a plugin name, and not ``ductile`` (the lifecycle events' source)."""
    check_plugin_name(name)
    if name == LIFECYCLE_SOURCE:
        raise Problem(
            f"'{name}' is reserved: it is the source of ductile's own lifecycle events "
            "(routes from: ductile); give the plugin another name"
        )
    return name


def plugin_name_hook(value: object, _: Any) -> str:
    if not isinstance(value, str):
        raise Problem(f"expected a plugin name, got {describe(value)}")
    return check_plugin_name(text_value(value))


def uses_hook(value: object, _: Any) -> str:
    """``uses``: the plugin an alias runs, ``builtin:<name>`` for a built-in."""
    if not isinstance(value, str):
        raise Problem(f"expected a plugin name or builtin:<name>, got {describe(value)}")
    text = text_value(value)
    shipped = builtin_name(text)
    if shipped is not None:
        check_plugin_name(shipped)
        return text
    return check_plugin_name(text)


def event_type_hook(value: object, _: Any) -> str:
    return _name_text(value, "an event type")


def header_hook(value: object, _: Any) -> str:
    text = text_value(value).strip()
    if not _HEADER_NAME.fullmatch(text) or len(text) > 100:
        raise Problem(f"'{shorten(text)}' is not an HTTP header name")
    return text


def endpoint_path_hook(value: object, _: Any) -> str:
    """An endpoint's path, percent-escapes decoded: requests are matched on their decoded
    path (both HTTP parsers decode it), so ``/hook/p%41`` and ``/hook/pA`` are one endpoint."""
    text = text_value(value)
    if not text.startswith("/"):
        raise Problem(f"an endpoint path must start with '/', got '{shorten(text)}'")
    if not _URL_PATH.fullmatch(text) or len(text) > 1024:
        raise Problem(
            f"'{shorten(text)}' is not a URL path (letters, digits and -._~!$&'()*+,;=:@%/ only; "
            "no spaces, '?' or '#')"
        )
    if "%" not in text:
        return text
    try:
        decoded = urllib.parse.unquote(text, errors="strict")
    except UnicodeDecodeError:
        decoded = ""
    if not _DECODED_PATH.fullmatch(decoded):
        raise Problem(
            f"'{shorten(text)}' decodes to a path a request cannot name as written here: requests are "
            "matched on their decoded path; write the path without percent-escapes "
            "(only letters, digits and -._~!$&'()*+,;=:@/ after decoding)"
        )
    return decoded


def secret_hook(value: object, _: Any) -> str:
    if not isinstance(value, str):  # never echo what might be the secret
        raise Problem(f"a secret must be text (put it in quotes), got {kind(value)}")
    secret = substitute(value, current_context().env)
    if not secret.strip():
        after = " after substituting environment variables" if "$" in value else ""
        what = "empty" if not secret else "only whitespace"
        raise Problem(f"the secret is {what}{after}; every endpoint needs a real secret")
    return secret


def api_token_hook(value: object, _: Any) -> str:
    """An API token: text, ``${VAR}`` substituted, at least ``MIN_TOKEN_BYTES`` bytes."""
    if not isinstance(value, str):  # never echo what might be the token
        raise Problem(f"a token must be text (put it in quotes), got {kind(value)}")
    token = substitute(value, current_context().env)
    size = len(token.encode("utf-8", "surrogatepass"))
    if size < MIN_TOKEN_BYTES:
        after = " after substituting environment variables" if "$" in value else ""
        what = "empty" if size == 0 else f"{size} bytes long"
        raise Problem(f"the token is {what}{after}; an API token needs at least {MIN_TOKEN_BYTES} bytes")
    return token


def json_object_hook(value: object, _: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Problem(f"expected a mapping (key: value pairs), got {describe(value)}")
    result: dict[str, Any] = _json_value(value, (), current_context().env)
    return result


def _json_value(value: Any, path: KeyPath, env: Mapping[str, str]) -> Any:
    """A JSON-ready copy of a plugin's config (strings substituted)."""
    if isinstance(value, str):
        try:
            return substitute(value, env)
        except Problem as p:
            raise Problem(p.message, *path) from None
    if isinstance(value, dict):
        return {key: _json_value(item, (*path, key), env) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_value(item, (*path, index), env) for index, item in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):  # pragma: no cover - refused earlier
        raise Problem("infinity and not-a-number cannot be sent as JSON", *path)
    if value is None or isinstance(value, bool | int | float):
        return value
    raise Problem(f"{describe(value)} cannot be sent to a plugin as JSON", *path)  # pragma: no cover


#: The schemes ``store.url`` accepts (libpq's own two spellings).
STORE_SCHEMES = ("postgresql://", "postgres://")


def store_url_hook(value: object, _: Any) -> str:
    if not isinstance(value, str):  # never echo what may hold a password
        raise Problem(f"expected a postgresql:// URL (in quotes), got {kind(value)}")
    url = substitute(value, current_context().env).strip()
    if not url.startswith(STORE_SCHEMES):
        raise Problem(
            "expected a postgresql:// URL (e.g. postgresql://ductile@db.lan/ductile); SQLite, the "
            "default, needs no URL: leave 'store' out"
        )
    return url


def section(value: object) -> dict[str, Any]:
    """A mapping section: empty (null) is the same as leaving it out."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Problem(f"expected a mapping (key: value pairs), got {describe(value)}")
    return value


#: The hook of every kind of value, by type (the converter registers them in this order).
_USER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\$?")


def user_hook(value: object, _: Any) -> str:
    """A user name (``nobody``) or a numeric uid (``65534``), as text."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise Problem(f"a uid is 0 or more, not {value}")
        return str(value)
    text = text_value(value)
    if not (text.isdigit() or _USER_NAME.fullmatch(text)) or len(text) > 64:
        raise Problem(f"'{shorten(text)}' is not a user name or a uid")
    return text


VALUE_HOOKS: tuple[tuple[Any, Callable[[object, Any], Any]], ...] = (
    (str, string_hook),
    (bool, bool_hook),
    (int, count_hook),
    (timedelta, duration_hook),
    (tzinfo, zone_hook),
    (LogLevel, enum_hook(LogLevel)),
    (CatchUp, enum_hook(CatchUp)),
    (IfRunning, enum_hook(IfRunning)),
    (Interval, interval_hook),
    (Jitter, jitter_hook),
    (Size, size_hook),
    (Count, count_hook),
    (ClockTime, clock_hook),
    (Cron, cron_hook),
    (Listen, listen_hook),
    (DirPath, dir_hook),
    (PluginName, plugin_name_hook),
    (UsesName, uses_hook),
    (EventType, event_type_hook),
    (JsonObject, json_object_hook),
    (StoreUrl, store_url_hook),
    (ApiSecret, api_token_hook),
    (UserName, user_hook),
)
