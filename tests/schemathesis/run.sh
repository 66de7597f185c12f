#!/usr/bin/env bash
# Schemathesis against a live server: starts `distribot serve --memory` on a
# free loopback port with the browser test's built-in handlers and
# workflows, generates requests from the OpenAPI document the server
# serves, and fails on any answer that is a 5xx or does not match the
# document (status code, content type, headers, body schema).
#
# Schemathesis comes from PyPI into a virtual environment under the Cargo
# target directory; only python3 with its venv module is needed
# (`apt-get install -y python3-venv` on Debian). Extra arguments go to
# `schemathesis run`, e.g. `--seed 1` to repeat a run.
set -euo pipefail
cd "$(dirname "$0")/../.."

SCHEMATHESIS_VERSION="4.32.5"
target="${CARGO_TARGET_DIR:-target}"
venv="$target/schemathesis-venv"

if [ ! -x "$venv/bin/schemathesis" ] || ! "$venv/bin/schemathesis" --version | grep -q "$SCHEMATHESIS_VERSION"; then
    echo "installing schemathesis $SCHEMATHESIS_VERSION into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

cargo build --quiet --bin distribot
work="$(mktemp -d)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

fixtures="tests/browser/fixtures"
"$target/debug/distribot" serve --memory --listen 127.0.0.1:0 \
    --handlers "$fixtures/handlers.toml" --workflows "$fixtures/workflows" \
    2>"$work/serve.log" &
server_pid=$!

address=""
for _ in $(seq 1 300); do
    address="$(sed -n 's|^listening on http://||p' "$work/serve.log" | head -n 1)"
    [ -n "$address" ] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        cat "$work/serve.log" >&2
        echo "distribot serve exited early" >&2
        exit 1
    fi
    sleep 0.1
done
if [ -z "$address" ]; then
    cat "$work/serve.log" >&2
    echo "distribot serve did not start listening" >&2
    exit 1
fi
echo "schemathesis against http://$address" >&2

# Flows in every state, so that generated requests about flows reach more
# than a 404: flows of `lapsed` run for good (their last phase waits for a
# worker no one runs), `doomed` fails, `tiny` finishes.
flows=()
for workflow in lapsed lapsed lapsed doomed tiny; do
    flows+=("$("$target/debug/distribot" start "$workflow" --server "http://$address")")
done
"$target/debug/distribot" pause "${flows[1]}" --server "http://$address" >/dev/null
"$target/debug/distribot" cancel "${flows[2]}" --server "http://$address" >/dev/null
quoted="$(printf '"%s", ' "${flows[@]}")"

# Event streams: /api/events never ends and a running flow's stream lasts
# as long as the flow, so schemathesis reads them for a moment only.
cat >"$work/schemathesis.toml" <<TOML
[dictionaries.flows]
values = [${quoted%, }]

[[operations]]
include-path-regex = '^/api/flows/[{]id[}]'
parameters = { "path.id" = { dictionary = "flows", probability = 0.5 } }

[[operations]]
include-path-regex = 'events$'
request-timeout = 2

# Registered names, so that reading workflows and their versions reaches
# more than a 404 (only reading: a registration under them would change
# what the flows above start).
[dictionaries.workflows]
values = ["lapsed", "doomed", "tiny"]

[[operations]]
include-path-regex = '^/api/workflows/[{]name[}]'
include-method = "GET"
parameters = { "path.name" = { dictionary = "workflows", probability = 0.5 } }
TOML

# One worker: with two threads, hypothesis's shared cache of lambda sources
# races now and then, and the run fails with a "FlakyFailure" inside
# schemathesis's coverage phase that the same seed does not repeat.
status=0
"$venv/bin/schemathesis" --config-file "$work/schemathesis.toml" run "http://$address/api/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,unsupported_method,allow_header_conformance \
    --request-timeout 10 \
    --max-examples 100 \
    --workers 1 \
    --no-color \
    --generation-database none \
    "$@" || status=$?

if grep -q "panicked" "$work/serve.log"; then
    echo "the server panicked:" >&2
    grep -A5 "panicked" "$work/serve.log" >&2
    status=1
fi
exit "$status"
