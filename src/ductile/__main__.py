"""``python -m ductile``: the same command line as the ``ductile`` script."""

from ductile.app.cli import console

console()
