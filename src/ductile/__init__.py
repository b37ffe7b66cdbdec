"""ductile: a personal automation server.

The public API, loaded lazily so that importing ``ductile`` (or running
``ductile --help``) costs nothing until a name is used::

    from ductile import Ductile

    async with Ductile("ductile.yaml") as d:
        job_id = await d.enqueue("withings")
        await d.serve()

The errors a caller may catch are exported here too (``UnknownPluginError``,
``UnknownCommandError``, ``PluginUnavailableError`` — each an
``EnqueueRefusedError`` —, ``UnknownJobError``, ``ConfigError``, all a
``DuctileError``); docs/embedding.md is the guide. The library installs no
log handler: its records go to the :mod:`logging` logger named ``ductile``.
"""

from __future__ import annotations

import importlib

#: ``typing`` costs ~7 ms to import, paid by every ``ductile`` command (this package is
#: imported first); the type checkers treat this name as true.
TYPE_CHECKING = False

__version__ = "0.1.0"

_EXPORTS = {
    "Ductile": "ductile.app.bootstrap",
    "Engine": "ductile.app.engine",
    "load_config": "ductile.adapters.config",
    "Config": "ductile.domain.config",
    "DuctileError": "ductile.domain.errors",
    "ConfigError": "ductile.domain.errors",
    "Job": "ductile.domain.job",
    "JobStatus": "ductile.domain.job",
    "PlannedRun": "ductile.domain.schedule",
    "EnqueueRefusedError": "ductile.app.intake",
    "UnknownPluginError": "ductile.app.intake",
    "UnknownCommandError": "ductile.app.intake",
    "PluginUnavailableError": "ductile.app.intake",
    "UnknownJobError": "ductile.domain.errors",
    "LOGGER_NAME": "ductile.log",
}

__all__ = [
    "LOGGER_NAME",
    "Config",
    "ConfigError",
    "Ductile",
    "DuctileError",
    "Engine",
    "EnqueueRefusedError",
    "Job",
    "JobStatus",
    "PlannedRun",
    "PluginUnavailableError",
    "UnknownCommandError",
    "UnknownJobError",
    "UnknownPluginError",
    "__version__",
    "load_config",
]

if TYPE_CHECKING:
    from typing import Any

    from ductile.adapters.config import load_config
    from ductile.app.bootstrap import Ductile
    from ductile.app.engine import Engine
    from ductile.app.intake import (
        EnqueueRefusedError,
        PluginUnavailableError,
        UnknownCommandError,
        UnknownPluginError,
    )
    from ductile.domain.config import Config
    from ductile.domain.errors import ConfigError, DuctileError, UnknownJobError
    from ductile.domain.job import Job, JobStatus
    from ductile.domain.schedule import PlannedRun
    from ductile.log import LOGGER_NAME


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ductile' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
