#!/usr/bin/env python3
"""outbox: a ductile plugin in plain Python, standard library only.

    handle  appends the event it receives to the JSON-lines file config.path,
            once: delivery is at-least-once, so an event already in the file
            (same event_id) is not written again.
    health  checks that the file's folder exists and is writable.

stdout carries the one answer and nothing else: diagnostics go to stderr.
"""

import json
import os
import sys

EX_CONFIG = 78  # exit code of a failure that must not be retried


def answer(status, *, error=None, retry=True, state_updates=None, logs=(), exit_code=0):
    """Write the one JSON answer on stdout and exit."""
    body = {"protocol": 1, "status": status}
    if error is not None:
        body["error"] = error
        body["retry"] = retry
    if state_updates:
        body["state_updates"] = state_updates
    if logs:
        body["logs"] = [{"level": level, "message": message} for level, message in logs]
    sys.stdout.write(json.dumps(body) + "\n")
    sys.stdout.flush()
    sys.exit(exit_code)


def already_written(path, event_id):
    """Is an event with this id in the file already (an earlier, interrupted delivery)?"""
    try:
        with open(path, encoding="utf-8") as f:
            return any(json.loads(line).get("event_id") == event_id for line in f if line.strip())
    except FileNotFoundError:
        return False


def handle(request, path):
    event = request.get("event") or {}
    event_id = event.get("event_id") or request["job_id"]
    if already_written(path, event_id):
        answer("ok", logs=[("info", f"event {event_id} was already written")])
    line = {
        "event_id": event_id,
        "type": event.get("type"),
        "source": event.get("source"),
        "timestamp": event.get("timestamp"),
        "payload": event.get("payload"),
    }
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())  # on disk before we say ok
    written = request["state"].get("written", 0) + 1
    answer(
        "ok",
        state_updates={"written": written},
        logs=[("info", f"wrote {event.get('type')} from {event.get('source')} (#{written})")],
    )


def health(path):
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        answer("error", error=f"cannot write to {folder}")
    answer("ok", logs=[("info", f"{path} is writable")])


def main():
    try:
        request = json.load(sys.stdin)
    except ValueError as e:
        answer("error", error=f"the request is not JSON: {e}", retry=False, exit_code=EX_CONFIG)
    path = request.get("config", {}).get("path")
    if not isinstance(path, str) or not path:
        answer("error", error="config key 'path' is missing", retry=False, exit_code=EX_CONFIG)
    command = request.get("command")
    if command == "handle":
        handle(request, path)
    elif command == "health":
        health(path)
    else:
        answer("error", error=f"outbox does not handle '{command}'", retry=False, exit_code=EX_CONFIG)


if __name__ == "__main__":
    main()
