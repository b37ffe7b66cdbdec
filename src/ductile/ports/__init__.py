"""Ports: the small Protocols the app needs from the world.

Each port has a contract suite in ``tests/contracts`` run against its fake
and its real adapter, so the two cannot drift apart.
"""
