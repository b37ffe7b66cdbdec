"""The operator's YAML config file, read into :class:`ductile.domain.config.Config`.

The way in, one stage after another; every problem on the way is a
:class:`~ductile.domain.errors.ConfigError` naming the key path
(``plugins.withings.retry.max_attempts``, ``routes[2].to``) and, where the
YAML node has one, the file line. Nothing else escapes for bad input.

1. **Bytes to text** (:func:`load_config`): at most :data:`MAX_CONFIG_BYTES`,
   UTF-8 (a BOM is allowed).
2. **Text to plain values** (:mod:`.yaml_tree`): PyYAML's composer only and
   our own scalar rules (no Norway problem), plus a map from key path to
   line; duplicate keys, unsupported tags, deep nesting and alias bombs are
   refused here.
3. **Plain values to domain values** through ONE cattrs converter
   (:mod:`.converter`): the document classes (:mod:`.schema`) refuse unknown
   keys, the hooks (:mod:`.hooks`) keep types strict (no ``"5"`` for 5), read
   durations / intervals / sizes with the domain's parsers and substitute
   ``${VAR}`` in string values as they are read (:mod:`.envsubst`, so a value
   can never inject structure); the domain's own checks (schedules, windows,
   cron) run with their errors mapped to key paths.
4. **Problems to one message** (:mod:`.messages`): every problem of stage 3
   with its key path and line, the first in file order leading, with a "did
   you mean" for unknown keys.

Schedules without a ``timezone`` use the machine's zone (:mod:`.machine_tz`).
The rules and their trade-offs are in ``docs/adr/0011-config-yaml-rules.md``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import tzinfo
from pathlib import Path

from ductile.adapters.config.converter import structure_config
from ductile.adapters.config.hooks import ParseContext
from ductile.adapters.config.machine_tz import machine_timezone
from ductile.adapters.config.schema import known_keys
from ductile.adapters.config.yaml_tree import MAX_DEPTH, decode, read_tree
from ductile.domain.config import Config
from ductile.domain.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "MAX_CONFIG_BYTES",
    "MAX_DEPTH",
    "known_keys",
    "load_config",
    "load_config_and_text",
    "machine_timezone",
    "parse_config",
    "resolve_config_path",
]

#: The config file looked for in the current directory when neither
#: ``--config`` nor ``$DUCTILE_CONFIG`` names one.
DEFAULT_CONFIG_NAME = "ductile.yaml"
#: A config larger than this is refused before parsing (1 MiB).
MAX_CONFIG_BYTES = 1024 * 1024


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
    return load_config_and_text(path, env=env, local_tz=local_tz)[0]


def load_config_and_text(
    path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    local_tz: tzinfo | None = None,
) -> tuple[Config, str]:
    """:func:`load_config`, and the text it was read from (the daemon records it as the last
    good config, :mod:`ductile.adapters.daemon_record`)."""
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
    text = decode(raw)
    config = parse_config(
        text,
        source=str(file),
        base_dir=str(file.parent),
        env=os.environ if env is None else env,
        local_tz=machine_timezone() if local_tz is None else local_tz,
    )
    return config, text


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
    tree = read_tree(text)
    context = ParseContext(env=env, local_tz=local_tz, base_dir=os.path.abspath(base_dir), source=source)
    return structure_config(tree.value, tree.lines, context)


def resolve_config_path(arg: str | None, env: Mapping[str, str] | None = None) -> Path:
    """Which config file to read: ``--config``, then ``$DUCTILE_CONFIG``, then ``./ductile.yaml``.

    The answer is absolute (``~`` expanded), so it still names the same file
    after the process changes directory.
    """
    env = os.environ if env is None else env
    chosen = arg or env.get("DUCTILE_CONFIG") or DEFAULT_CONFIG_NAME
    return Path(chosen).expanduser().absolute()
