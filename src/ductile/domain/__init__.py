"""The domain: every decision ductile makes, as pure functions over frozen values.

Nothing here touches the world (an import contract forbids time, os, sqlite3,
asyncio, logging...): time arrives as a ``now`` argument, randomness as a
draw in [0, 1). Read it first; the rest of ductile fetches inputs, calls these
functions and carries out what they return.

A run of a job, as the values it passes through::

    Job (queued) --claim--> Job (running)
        --spawn--> SpawnOutcome        (outcome.py: exit code, signal, stdout, stderr tail)
        --classify--> Verdict          (classify.py: succeed / fail / time out, the response)
        --settle--> Settlement         (settle.py: transitions, run record, state, breaker, children)
        --the store commits it--> Committed (ports/store_values.py: with each child's enqueue result)

A run that never started is a ``NotRun``; one cut off by a crash is an
``Interrupted``; ``RunEnd`` is any of the three endings settle accepts.

The modules, in reading order: ``job`` (the state machine as a table),
``outcome``, ``classify``, ``settle``, ``routing`` (envelopes and fan-out),
``retry`` and ``breaker``, ``dedupe``, ``schedule`` (the schedule math),
``state``, ``protocol`` (the plugin protocol), ``plugin`` (manifests),
``config`` (the config's values), ``quantities`` (durations and sizes),
``draw``, ``recovery``, ``errors``.
"""
