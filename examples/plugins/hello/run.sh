#!/bin/sh
# The smallest ductile plugin: read the request from stdin, answer one JSON object on stdout.
# A real shell plugin would read the request with jq; this one only needs its one text setting,
# plugins.hello.config.greeting in ductile.yaml.
request=$(cat)
greeting=$(printf '%s' "$request" | sed -n 's/.*"greeting":"\([^"\\]*\)".*/\1/p')
case "$request" in
  *'"command":"health"'*)
    printf '{"status":"ok","protocol":1}\n' ;;
  *)
    echo "hello plugin ran at $(date -u +%H:%M:%S)" >&2   # stderr is captured and logged
    printf '{"status":"ok","protocol":1,"logs":[{"level":"info","message":"%s"}]}\n' \
      "${greeting:-hello}" ;;
esac
