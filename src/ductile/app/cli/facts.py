"""``ductile facts``: a plugin's facts (manifest ``fact_outputs``), newest first."""

from __future__ import annotations

import argparse
import json

from ductile.app.cli.context import EXIT_OK, Context, read_config, read_store
from ductile.app.cli.format import cell, local_time, table
from ductile.app.views import utc
from ductile.domain.facts import Fact

#: Characters of a fact's body shown in the table (``--json`` has it whole).
BODY_SHOWN = 100


def fact_json(fact: Fact) -> dict[str, object]:
    return {
        "seq": fact.seq,
        "fact_type": fact.fact_type,
        "job_id": fact.job_id,
        "at": utc(fact.at),
        "body": fact.body,
    }


async def cmd_facts(ctx: Context, args: argparse.Namespace) -> int:
    config = read_config(ctx, args)
    store = await read_store(ctx, config)
    facts: list[Fact] = []
    if store is not None:
        try:
            facts = await store.facts(args.plugin, fact_type=args.type, limit=args.limit)
        finally:
            await store.close()
    if args.json:
        ctx.json({"plugin": args.plugin, "facts": [fact_json(f) for f in facts]})
        return EXIT_OK
    if not facts:
        kind = f" of type {args.type}" if args.type else ""
        ctx.print(f"no facts{kind} of {args.plugin}")
        return EXIT_OK
    rows = []
    for f in facts:
        body = json.dumps(f.body, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        shown = body if len(body) <= BODY_SHOWN else body[: BODY_SHOWN - 1] + "…"
        rows.append([f.seq, local_time(f.at, ctx.tz), f.fact_type, f.job_id, cell(shown)])
    ctx.print(table(["SEQ", "AT", "TYPE", "JOB", "BODY"], rows))
    return EXIT_OK
