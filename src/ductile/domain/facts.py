"""Facts (manifest ``fact_outputs``): an append-only record of a plugin's snapshots.

When a v2 manifest says ``fact_outputs: [{when: {command: poll}, from:
state_updates, fact_type: T, compatibility_view: mirror_object}]``, every
succeeded ``poll`` with state updates appends one :class:`Fact` of type ``T``
whose body is those updates, and the plugin's state becomes that body whole
(``mirror_object``: a key the snapshot dropped is gone, where a shallow merge
would keep it). Settle decides both; the store writes them in the same commit
as the run's end.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs


@attrs.frozen(kw_only=True)
class Fact:
    #: The plugin instance (an alias records its own facts).
    plugin: str
    fact_type: str
    job_id: str
    at: datetime
    body: dict[str, Any]
    #: The store's sequence number, increasing; 0 until stored.
    seq: int = 0
