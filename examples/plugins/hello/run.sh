#!/bin/sh
# The smallest ductile plugin: read the request from stdin, answer one JSON object on stdout.
# (A real shell plugin would parse the request with jq; this one only needs to answer.)
request=$(cat)
case "$request" in
  *'"command":"health"'*)
    printf '{"status":"ok","protocol":1}\n' ;;
  *)
    echo "hello plugin ran at $(date -u +%H:%M:%S)" >&2   # stderr is captured and logged
    printf '{"status":"ok","protocol":1,"logs":[{"level":"info","message":"hello from a shell plugin"}]}\n' ;;
esac
