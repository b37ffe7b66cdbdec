#!/bin/sh
# disk-usage: a ductile plugin in POSIX sh.
#
#   poll    measures how full the filesystem holding config.path is and emits
#           "disk.full" when it is at or above config.threshold_percent (90).
#   health  checks that config.path can be measured.
#
# The request is one JSON object on stdin; the answer is one JSON object on
# stdout. Anything else goes to stderr, which ductile keeps with the job.
# jq reads the request when it is installed; without jq a sed fallback reads
# the flat values this plugin needs (numbers, and strings without quotes or
# backslashes, under key names that appear once in the request).
set -u

request=$(cat)

if command -v jq >/dev/null 2>&1; then
    get() { printf '%s' "$request" | jq -r "$1 // empty"; }
    command=$(get .command)
    path=$(get .config.path)
    threshold=$(get .config.threshold_percent)
    last=$(get .state.last_percent)
else
    # get KEY: the value of "KEY":... in the (one-line) request.
    get() { printf '%s' "$request" | sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p"; }
    command=$(get command)
    path=$(get path)
    threshold=$(get threshold_percent)
    last=$(get last_percent)
fi
threshold=${threshold:-90}

# json_string TEXT: TEXT as a JSON string.
json_string() {
    printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"
}

# fail MESSAGE RETRY EXIT_CODE: answer an error and stop.
fail() {
    printf '{"protocol":1,"status":"error","error":%s,"retry":%s}\n' "$(json_string "$1")" "$2"
    exit "$3"
}

# usage: the percentage of the filesystem holding $path in use.
usage() {
    df -P "$path" 2>/dev/null | awk 'NR == 2 { sub(/%/, "", $5); print $5 }'
}

[ -n "$path" ] || fail "config key 'path' is missing" false 78
case $threshold in
    '' | *[!0-9]*) fail "config key 'threshold_percent' must be a whole number" false 78 ;;
esac

case $command in
poll)
    percent=$(usage)
    [ -n "$percent" ] || fail "cannot measure the filesystem of $path" true 1
    events=
    if [ "$percent" -ge "$threshold" ]; then
        # One alert per path and day: the key dedupes repeats downstream.
        key="disk-full:$path:$(date -u +%Y-%m-%d)"
        events=$(printf '{"type":"disk.full","payload":{"path":%s,"percent":%s,"threshold_percent":%s},"dedupe_key":%s}' \
            "$(json_string "$path")" "$percent" "$threshold" "$(json_string "$key")")
    fi
    message="$path is ${percent}% full (last check: ${last:-none})"
    printf '{"protocol":1,"status":"ok","events":[%s],"state_updates":{"last_percent":%s,"checked_at":"%s"},"logs":[{"level":"info","message":%s}]}\n' \
        "$events" "$percent" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(json_string "$message")"
    ;;
health)
    percent=$(usage)
    [ -n "$percent" ] || fail "cannot measure the filesystem of $path" true 1
    printf '{"protocol":1,"status":"ok","logs":[{"level":"info","message":%s}]}\n' \
        "$(json_string "$path can be measured (${percent}% full)")"
    ;;
*)
    fail "disk-usage does not handle '$command'" false 78
    ;;
esac
