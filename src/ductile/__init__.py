"""ductile: a personal automation server.

The public API, loaded lazily so that importing ``ductile`` (or running
``ductile --help``) costs nothing until a name is used::

    from ductile import Ductile

    async with Ductile("ductile.yaml") as d:
        await d.enqueue("withings")
        await d.serve()
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
}

__all__ = [
    "Config",
    "ConfigError",
    "Ductile",
    "DuctileError",
    "Engine",
    "Job",
    "JobStatus",
    "PlannedRun",
    "__version__",
    "load_config",
]

if TYPE_CHECKING:
    from ductile.adapters.config import load_config
    from ductile.app.bootstrap import Ductile
    from ductile.app.engine import Engine
    from ductile.domain.config import Config
    from ductile.domain.errors import ConfigError, DuctileError
    from ductile.domain.job import Job, JobStatus
    from ductile.domain.schedule import PlannedRun


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ductile' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
