"""Shared builders, rigs and fixtures of the test suite (issue 11).

Test modules import from here and never from one another:

- :mod:`tests.support.builders`: jobs, manifests and configs as values;
- :mod:`tests.support.rigs`: the engine wired to the fakes, and scripts for
  the scripted spawner;
- :mod:`tests.support.plugins`: plugin folders and scripts on disk, and one
  plugin run for real and settled like the engine does;
- :mod:`tests.support.site`: a throwaway site on disk and the real daemon
  running on it;
- :mod:`tests.support.cases`: the implementations the contract suites run
  against, each with the hooks its port's behaviours need.

Fixtures every directory uses live in ``tests/conftest.py``; a contract
suite's fixtures in ``tests/contracts/conftest.py``.
"""
