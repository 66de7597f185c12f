#!/usr/bin/env bash
# Benchmarks of the HTTP API on loopback, against `distribot serve` on the
# embedded backend (state durable in SQLite in a scratch folder):
#
#   1. POST /api/flows            flow starts per second
#   2. GET  /api/flows/{id}       requests per second
#   3. GET  /api/flows            one page, p99 latency with 10,000 flows stored
#
# The workflow `bench` has phases without handlers, so a flow runs from
# start to end on the engine alone: what is measured is the API, the store
# and the engine, not handler code. Needs wrk (`apt-get install wrk`) and a
# release build (`cargo build --release`).
#
# Settings (environment): DURATION (10s), CONNECTIONS (64), THREADS (2),
# FLOWS (10000), DISTRIBOT (target/release/distribot).
set -euo pipefail
cd "$(dirname "$0")/.."

DISTRIBOT=${DISTRIBOT:-target/release/distribot}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
FLOWS=${FLOWS:-10000}

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 2; }
[ -x "$DISTRIBOT" ] || { echo "$DISTRIBOT is missing: cargo build --release" >&2; exit 2; }

scratch=$(mktemp -d)
server_pid=
stop_server() {
    if [ -n "$server_pid" ]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}
trap 'stop_server; rm -rf "$scratch"' EXIT

mkdir -p "$scratch/workflows"
cat > "$scratch/workflows/bench.json" <<'JSON'
{
  "workflow": "bench",
  "phases": {
    "pending": {"is_initial": true, "transitions_to": "working"},
    "working": {"transitions_to": "done"},
    "done": {"is_final": true}
  }
}
JSON

# Starts a fresh server on a free port with an empty database; sets $url.
start_server() {
    stop_server
    rm -f "$scratch"/state.db*
    "$DISTRIBOT" serve --listen 127.0.0.1:0 --db "$scratch/state.db" \
        --workflows "$scratch/workflows" 2> "$scratch/serve.log" &
    server_pid=$!
    for _ in $(seq 1 200); do
        url=$(grep -o 'http://[0-9.:]*' "$scratch/serve.log" 2>/dev/null || true)
        [ -n "$url" ] && return 0
        sleep 0.05
    done
    echo "the server did not start:" >&2
    cat "$scratch/serve.log" >&2
    exit 1
}

total_flows() {
    curl -s "$url/api/flows?limit=1" | sed -n 's/.*"total":\([0-9]*\).*/\1/p'
}

# Waits until the engine has moved every stored flow to its end.
wait_for_engine() {
    local began running
    began=$(date +%s.%N)
    for _ in $(seq 1 600); do
        running=$(curl -s "$url/api/flows?status=running&limit=1" | sed -n 's/.*"total":\([0-9]*\).*/\1/p')
        if [ "$running" = 0 ]; then
            echo "every flow finished $(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $began }") s after the load stopped"
            return 0
        fi
        sleep 0.1
    done
    echo "flows still running after 60 s: $running" >&2
}

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "== wrk: $THREADS threads, $CONNECTIONS connections, $DURATION per run"

echo
echo "== 1. POST /api/flows (flow starts)"
start_server
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/post_flow.lua "$url/api/flows"
echo "flows stored: $(total_flows)"
wait_for_engine

echo
echo "== 2. GET /api/flows/{id}"
id=$(curl -s -H 'Content-Type: application/json' -d '{"workflow": "bench"}' "$url/api/flows" \
    | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$url/api/flows/$id"

echo
echo "== 3. GET /api/flows (one page of 50) with $FLOWS flows stored"
start_server
wrk -t"$THREADS" -c"$CONNECTIONS" -d60s -s bench/post_flow.lua "$url/api/flows" -- $((FLOWS / THREADS)) > /dev/null
stored=$(total_flows)
echo "flows stored: $stored"
wait_for_engine
echo "-- newest page, no filter"
wrk -t"$THREADS" -c16 -d"$DURATION" --latency "$url/api/flows"
echo "-- filtered by status and workflow"
wrk -t"$THREADS" -c16 -d"$DURATION" --latency "$url/api/flows?status=finished&workflow=bench"
echo "-- a page deep in the list (after the $((FLOWS / 2)) newest flows)"
# The id of the flow that many places down, found by following pages.
before=
for _ in $(seq 1 $((FLOWS / 1000))); do
    page=$(curl -s "$url/api/flows?limit=500${before:+&before=$before}")
    before=$(echo "$page" | grep -o '"id":"[^"]*"' | tail -1 | cut -d'"' -f4 || true)
done
wrk -t"$THREADS" -c16 -d"$DURATION" --latency "$url/api/flows?before=$before"
