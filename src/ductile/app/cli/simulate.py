"""``ductile simulate``: the operator's config through the deterministic simulation."""

from __future__ import annotations

import argparse

from ductile.app.cli.context import Context


async def cmd_simulate(ctx: Context, args: argparse.Namespace) -> int:
    from ductile.app.simulation import simulate_cli

    return await simulate_cli(ctx, args)
