#!/usr/bin/env bash
# Celery's figure for BENCHMARKS.md, on the same RabbitMQ and Redis as
# `distribot bench --backend distributed`: two worker processes (prefork,
# like distribot's two workers), 10 chords of 1,000 no-op tasks started at
# once. Installs Celery from PyPI into a virtualenv under target/ first.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/../../target/celery-venv"
if [ ! -x "$venv/bin/celery" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'celery[redis]==5.4.*'
fi
cd "$here"
"$venv/bin/celery" -A tasks purge -f >/dev/null 2>&1 || true
"$venv/bin/celery" -A tasks worker --concurrency 2 --pool prefork --loglevel warning &
worker=$!
trap 'kill $worker 2>/dev/null; wait $worker 2>/dev/null || true' EXIT
# The worker is ready when it answers a ping.
for _ in $(seq 1 100); do
    "$venv/bin/celery" -A tasks inspect ping --timeout 1 >/dev/null 2>&1 && break
done
"$venv/bin/python" chords.py
