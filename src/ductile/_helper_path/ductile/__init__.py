"""The ``ductile`` a plugin's interpreter finds: only ``ductile.plugin`` (ADR 0020).

The daemon puts the folder above this one on every plugin's ``PYTHONPATH``
(:data:`ductile.app.spawn.HELPER_PATH`). Whatever Python 3.8+ interpreter a
plugin's ``#!`` line names — the venv's, the system's, a version manager's —
``from ductile import plugin`` then loads the one stdlib-only
``ductile/plugin.py`` of the ductile that runs it: this package adds the real
package's folder to its own search path and imports nothing else, so none of
ductile's dependencies (or anything else of the venv) leaks into the plugin.
"""

import os

__path__.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
