#!/usr/bin/env python3
"""A handler: receives events (routed from `counter`, or from the demo webhook).

It appends one line per event to the `outbox` file from its config. A relative
path is taken from the plugin's working directory, which is its own folder.
"""

import json
import os
import sys


def main() -> None:
    request = json.load(sys.stdin)
    if request["command"] == "health":
        outbox = request["config"]["outbox"]
        folder = os.path.dirname(os.path.abspath(outbox)) or "."
        if not os.access(folder, os.W_OK):
            print(json.dumps({"status": "error", "error": f"cannot write to {folder}"}))
            return
        print(json.dumps({"status": "ok", "protocol": 1}))
        return
    event = request["event"]
    line = {
        "job_id": request["job_id"],
        "type": event["type"],
        "source": event["source"],
        "payload": event["payload"],
    }
    outbox = request["config"]["outbox"]
    os.makedirs(os.path.dirname(os.path.abspath(outbox)), exist_ok=True)
    with open(outbox, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
    print(json.dumps({"status": "ok", "protocol": 1,
                      "logs": [{"level": "info", "message": f"noted {event['type']} from {event['source']}"}]}))


if __name__ == "__main__":
    main()
