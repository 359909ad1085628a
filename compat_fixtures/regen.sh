#!/usr/bin/env bash
# Regenerate the golden files in compat_fixtures/machinery/{v1,v2} from real
# Go machinery (Redis broker + Redis backend).
#
# Uses $REDIS_URL (redis://host:port/db) if set -- that DB is FLUSHED --
# otherwise starts a private redis-server on a free port and stops it again.
set -euo pipefail
cd "$(dirname "$0")"

./build.sh

redis_pid=""
cleanup() {
    if [ -n "$redis_pid" ]; then
        kill "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

if [ -n "${REDIS_URL:-}" ]; then
    url="$REDIS_URL"
else
    command -v redis-server >/dev/null || { echo "redis-server not found (apt-get install -y redis-server)" >&2; exit 1; }
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --loglevel warning >/dev/null &
    redis_pid=$!
    for _ in $(seq 50); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    url="redis://127.0.0.1:$port/0"
fi

for v in v1 v2; do
    rm -rf "machinery/$v"
    "bin/harness-$v" gen --out "machinery/$v" --redis "$url" --flush
    # Go must accept its own files (decode + re-marshal).
    "bin/harness-$v" check --dir "machinery/$v" >/dev/null
done
echo "regenerated machinery/v1 and machinery/v2"
