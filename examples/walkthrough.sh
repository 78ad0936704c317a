#!/usr/bin/env bash
# A walk-through of whimp and whomp on one machine, with nothing but loopback.
#
# It starts two demo receivers (one answers 200, one answers 410 Gone), whimp and whomp from the
# shipped config/whimp.yaml and config/whomp.yaml (copied to a scratch directory with free ports
# and a scratch spool), then:
#   1. a provider posts a webhook to whimp, which stores it and forwards it to the receiver;
#   2. a service hands whomp a message, which checks it, stores it and delivers it;
#   3. a message to the 410 receiver is dead-lettered, inspected and re-queued;
# shows the spools and the metrics, and stops everything (SIGTERM: drain, exit 0).
#
# Usage: examples/walkthrough.sh        (after `cargo build --release`, or `cargo build`)
# Environment:
#   BIN_DIR        where whimp, whomp and demo-receiver are; default target/release if it has all
#                  three, else target/debug
#   WHIMP, WHOMP, DEMO_RECEIVER   override one binary each
#   WORK_DIR       scratch directory to use and keep; default a fresh temporary one, removed at
#                  the end
#   TIMEOUT        seconds to wait for each step; default 30
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
timeout=${TIMEOUT:-30}

if [ -z "${BIN_DIR:-}" ]; then
    BIN_DIR="$repo/target/debug"
    if [ -x "$repo/target/release/whimp" ] && [ -x "$repo/target/release/whomp" ] &&
        [ -x "$repo/target/release/demo-receiver" ]; then
        BIN_DIR="$repo/target/release"
    fi
fi
whimp=${WHIMP:-$BIN_DIR/whimp}
whomp=${WHOMP:-$BIN_DIR/whomp}
receiver=${DEMO_RECEIVER:-$BIN_DIR/demo-receiver}
for bin in "$whimp" "$whomp" "$receiver"; do
    if [ ! -x "$bin" ]; then
        echo "walkthrough: $bin not found; build first: cargo build --release" >&2
        exit 1
    fi
done
for tool in curl grep; do
    command -v "$tool" >/dev/null || { echo "walkthrough: $tool is needed" >&2; exit 1; }
done

if [ -n "${WORK_DIR:-}" ]; then
    work=$WORK_DIR
    mkdir -p "$work"
    keep=1
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/walkthrough.XXXXXX")
    keep=
fi

pids=()
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ -z "$keep" ]; then
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
# Prints a command the way an operator would type it, then runs it.
run() {
    printf '$ %s\n' "$*" | sed "s#$work#\$WORK#g; s#$BIN_DIR/##g"
    "$@"
}
fail() {
    echo "walkthrough: $*" >&2
    for log in "$work"/*.err; do
        [ -s "$log" ] && { echo "--- $log" >&2; cat "$log" >&2; }
    done
    exit 1
}

# Polls until a command succeeds, up to $timeout seconds.
wait_for() {
    local what=$1
    shift
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || fail "timed out waiting for $what"
        sleep 0.1
    done
}

# Starts a program whose stdout announces `listening <what> <url>` lines and then `ready`.
# Its stdout goes to $work/NAME.out and its stderr (the logs) to $work/NAME.err.
start() {
    local name=$1
    shift
    printf '$ %s &\n' "$*" | sed "s#$work#\$WORK#g; s#$BIN_DIR/##g"
    "$@" >"$work/$name.out" 2>"$work/$name.err" &
    local pid=$!
    pids+=("$pid")
    eval "${name//-/_}_pid=$pid"
    local deadline=$((SECONDS + timeout))
    until grep -qx ready "$work/$name.out"; do
        kill -0 "$pid" 2>/dev/null || fail "$name exited before it was ready"
        [ "$SECONDS" -lt "$deadline" ] || fail "$name was not ready within ${timeout}s"
        sleep 0.1
    done
    sed 's/^/   /' "$work/$name.out"
}

# The URL a started program announced for a listener: `url NAME WHAT`.
url() { awk -v what="$2" '$1 == "listening" && $2 == what { print $3; exit }' "$work/$1.out"; }

# Copies a shipped config, replacing each FROM with TO once; fails if the config lost a FROM.
edit_config() {
    local from_file=$1 to_file=$2
    shift 2
    local text
    text=$(cat "$from_file")
    while [ "$#" -ge 2 ]; do
        [[ $text == *"$1"* ]] || fail "$from_file no longer contains \"$1\"; update $0"
        text=${text/"$1"/"$2"}
        shift 2
    done
    printf '%s\n' "$text" >"$to_file"
}

# Stops a daemon with SIGTERM and checks that it drained and exited 0.
stop() {
    local name=$1 pid=$2
    run kill -TERM "$pid"
    local status=0
    wait "$pid" || status=$?
    local left=()
    for other in "${pids[@]}"; do
        [ "$other" = "$pid" ] || left+=("$other")
    done
    pids=("${left[@]}")
    [ "$status" -eq 0 ] || fail "$name exited with status $status after SIGTERM"
    echo "   $name exited 0"
}

# Whether `spool list --json` shows message $3 in state $4 (`state_is BIN CONFIG ID STATE`).
state_is() { "$1" spool list --config "$2" --json | grep "\"id\":\"$3" | grep -q "\"state\":\"$4\""; }

# Whether a receiver's output shows at least two requests for "$2".
received_twice() { [ "$(grep -c "^received $2 " "$1")" -ge 2 ]; }

step "scratch directory: $work"

step "two demo receivers: one answers 200, one answers 410 Gone"
start receiver "$receiver" --addr 127.0.0.1:0
start gone "$receiver" --addr 127.0.0.1:0 --status 410
receiver_url=$(url receiver receiver)
gone_url=$(url gone receiver)
receiver_port=${receiver_url##*:}
gone_port=${gone_url##*:}

step "configs: config/whimp.yaml and config/whomp.yaml with free ports and a scratch spool"
route=/demo/01JDEMO0000000000000000000
edit_config "$repo/config/whimp.yaml" "$work/whimp.yaml" \
    "addr: 127.0.0.1:8080" "addr: 127.0.0.1:0" \
    "addr: 127.0.0.1:9101" "addr: 127.0.0.1:0" \
    "dir: ../var/whimp" "dir: $work/spool/whimp" \
    "path: $route" "path: $route" \
    "url: http://127.0.0.1:8000/hooks/demo" "url: $receiver_url/hooks/demo"
# whomp's defaults refuse plain http, every port but 443 and 8443, and loopback: the demo
# receivers are all three, so this scratch config lets exactly them through.
edit_config "$repo/config/whomp.yaml" "$work/whomp.yaml" \
    "addr: 127.0.0.1:8090" "addr: 127.0.0.1:0" \
    "addr: 127.0.0.1:9102" "addr: 127.0.0.1:0" \
    "dir: ../var/whomp" "dir: $work/spool/whomp" \
    "allow_http: false" "allow_http: true" \
    "ports: [443, 8443]" "ports: [$receiver_port, $gone_port]" \
    "allow_cidrs: []" "allow_cidrs: [127.0.0.1/32]"
run "$whimp" check-config --config "$work/whimp.yaml"
run "$whomp" check-config --config "$work/whomp.yaml"

step "start whimp and whomp"
start whimp "$whimp" --config "$work/whimp.yaml"
start whomp "$whomp" --config "$work/whomp.yaml"
whimp_public=$(url whimp public)
whimp_admin=$(url whimp admin)
whomp_submit=$(url whomp submit)
whomp_admin=$(url whomp admin)

step "1. a provider posts a webhook to whimp"
run curl -sS -i -X POST "$whimp_public$route?attempt=1" \
    -H 'Content-Type: application/json' --data '{"event":"invoice.paid","amount":4200}'
wait_for "whimp to forward the webhook" grep -q "received POST /hooks/demo?attempt=1" "$work/receiver.out"
echo "   the receiver got (note X-Forwarded-*, Whimp-Original-Url and Whimp-Id):"
sed -n '/received POST \/hooks\/demo/,/^$/p' "$work/receiver.out" | sed 's/^/   /'
whimp_id=$(awk -F': ' 'tolower($1) ~ /whimp-id$/ { print $2; exit }' "$work/receiver.out")
whimp_id=${whimp_id%%.*}
wait_for "whimp to record the delivery" state_is "$whimp" "$work/whimp.yaml" "$whimp_id" delivered
run "$whimp" spool list --config "$work/whimp.yaml"

step "2. a service hands whomp a message to send"
answer=$(run curl -sS -X POST "$whomp_submit/v1/messages" -H 'Content-Type: application/json' \
    --data "{\"method\":\"POST\",\"url\":\"$receiver_url/partner/hook\",\"headers\":[[\"Content-Type\",\"application/json\"]],\"body\":\"{\\\"order\\\":17}\"}")
echo "$answer"
whomp_id=$(printf '%s' "$answer" | sed -n 's/.*"id":"\([0-9A-Z]*\)".*/\1/p')
[ -n "$whomp_id" ] || fail "whomp did not accept the message: $answer"
wait_for "whomp to deliver the message" state_is "$whomp" "$work/whomp.yaml" "$whomp_id" delivered
run curl -sS "$whomp_submit/v1/messages/$whomp_id"
echo
echo "   the receiver got:"
sed -n '/received POST \/partner\/hook/,/^$/p' "$work/receiver.out" | sed 's/^/   /'

step "   pre-flight refuses what whomp must never reach (dry run, nothing is sent)"
run curl -sS -X POST "$whomp_submit/v1/preflight" -H 'Content-Type: application/json' \
    --data "{\"method\":\"POST\",\"url\":\"http://169.254.169.254:$receiver_port/latest/meta-data/\",\"headers\":[],\"body\":\"\"}"
echo

step "3. a destination that answers 410 Gone: dead-lettered at once, inspected, re-queued"
answer=$(run curl -sS -X POST "$whomp_submit/v1/messages" -H 'Content-Type: message/http' \
    --data-binary $'POST '"$gone_url"$'/old/hook HTTP/1.1\r\nContent-Type: text/plain\r\n\r\nhello')
echo "$answer"
dead_id=$(printf '%s' "$answer" | sed -n 's/.*"id":"\([0-9A-Z]*\)".*/\1/p')
[ -n "$dead_id" ] || fail "whomp did not accept the message: $answer"
wait_for "whomp to dead-letter the message" state_is "$whomp" "$work/whomp.yaml" "$dead_id" dead
run "$whomp" spool list --config "$work/whomp.yaml" --json
run "$whomp" spool show --config "$work/whomp.yaml" "$dead_id"
# The status API re-queues it; `whomp spool retry --config FILE ID` does the same from a shell.
run curl -sS -X POST "$whomp_submit/v1/messages/$dead_id/retry"
echo
# The re-queued message is tried again at once; the receiver still says 410, so it dies again.
wait_for "the re-queued message to be tried again" received_twice "$work/gone.out" "POST /old/hook"
wait_for "the re-queued message to be dead again" state_is "$whomp" "$work/whomp.yaml" "$dead_id" dead

step "metrics"
run curl -sS "$whimp_admin/metrics" -o "$work/whimp.metrics"
grep -E '^whimp_(requests_total\{code="200"|forward_attempts_total|spool_messages|dead_letters_total)' \
    "$work/whimp.metrics" | sed 's/^/   /'
run curl -sS "$whomp_admin/metrics" -o "$work/whomp.metrics"
grep -E '^whomp_(submissions_total\{outcome="accepted"|delivery_attempts_total|spool_messages|dead_letters_total)' \
    "$work/whomp.metrics" | sed 's/^/   /'
run curl -sS "$whimp_admin/readyz"
echo

step "stop everything"
stop whimp "$whimp_pid"
stop whomp "$whomp_pid"
kill -TERM "$receiver_pid" "$gone_pid"
echo
echo "walkthrough: ok (webhook in: $whimp_id delivered; webhook out: $whomp_id delivered; $dead_id dead)"
