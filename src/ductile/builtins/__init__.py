"""The plugins shipped with ductile, used as ``uses: builtin:<name>`` (docs/builtins.md).

Each folder is a plugin like any other (a v2 manifest, an entrypoint written
with :mod:`ductile.plugin`, standard library only), loaded by
:mod:`ductile.adapters.plugin_dir.shipped` and run under the daemon's own
interpreter. Nothing here is imported by ductile itself.
"""
