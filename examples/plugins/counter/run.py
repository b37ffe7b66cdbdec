#!/usr/bin/env python3
"""A Python plugin with state: count polls, emit an event for each one.

Standard library only. The count lives in the plugin's state, which ductile
stores and hands back on the next run; the event is routed to `notify`.
"""

import json
import sys


def main() -> None:
    request = json.load(sys.stdin)
    if request["command"] == "health":
        print(json.dumps({"status": "ok", "protocol": 1}))
        return
    step = int(request["config"].get("step", 1))
    count = int(request["state"].get("count", 0)) + step
    print(
        json.dumps(
            {
                "status": "ok",
                "protocol": 1,
                "state_updates": {"count": count},
                "events": [
                    {
                        "type": "counter.ticked",
                        "payload": {"count": count},
                        # Redelivering the same count is deduplicated downstream.
                        "dedupe_key": f"count-{count}",
                    }
                ],
                "logs": [{"level": "info", "message": f"count is now {count}"}],
            }
        )
    )


if __name__ == "__main__":
    main()
