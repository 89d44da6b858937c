#!/usr/bin/env bash
# Durable ingest alone measured from outside the process with wrk (Debian's `wrk`), as a ratio of
# `GET /healthz` under the same parameters: the release binary, an ESP configured (ESP_API_URL),
# no platform to send to (events wait in the queue), each request a new subscriber.
#
#   benches/wrk.sh [sqlite|postgres]     (WRK_ARGS, default "-t2 -c32 -d10s")
#
# BRIDGE_BIN runs another build instead of this checkout's (an A/B against an earlier commit).
#
# Postgres: a fresh database under BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432),
# dropped afterwards; BENCH_POSTGRES_OPTIONS is appended to the bridge's DATABASE_URL (for
# example "?sslmode=disable").
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-sqlite}
wrk_args=${WRK_ARGS:--t2 -c32 -d10s}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
if [ -z "${BRIDGE_BIN:-}" ]; then
    cargo build --release -q
    BRIDGE_BIN=target/release/referral-bridge
fi
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
case "$backend" in
    sqlite) database_url="$dir/wrk.db" ;;
    postgres)
        admin=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}
        name="rb_wrk_$$"
        psql "$admin/postgres" -q -c "CREATE DATABASE $name"
        database_url="$admin/$name${BENCH_POSTGRES_OPTIONS:-}"
        ;;
    *) echo "backend: sqlite or postgres" >&2; exit 2 ;;
esac
cleanup() {
    [ -n "${bridge:-}" ] && kill "$bridge" 2>/dev/null && wait "$bridge" 2>/dev/null || true
    [ "$backend" = postgres ] && psql "$admin/postgres" -q -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" || true
    rm -rf "$dir"
}
trap cleanup EXIT
cat >"$dir/signup.lua" <<'LUA'
-- Each request a subscriber no one has sent before: thread number and request number.
local threads = 0
function setup(thread)
    threads = threads + 1
    thread:set("id", threads)
end
function init(args)
    n = 0
end
function request()
    n = n + 1
    local body = '{"type":"subscribe","subscriber":{"email":"wrk' .. id .. '-' .. n .. '@example.com"}}'
    return wrk.format("POST", "/webhooks/esp", {
        ["Authorization"] = "Bearer wrk-bench-secret",
        ["Content-Type"] = "application/json",
    }, body)
end
LUA
env -i PATH="$PATH" DATABASE_URL="$database_url" BRIDGE_LISTEN="127.0.0.1:$port" \
    ESP_WEBHOOK_SECRET=wrk-bench-secret ESP_API_URL=http://127.0.0.1:9/esp RUST_LOG=warn \
    "$BRIDGE_BIN" serve >"$dir/bridge.log" 2>&1 &
bridge=$!
for _ in $(seq 1 50); do
    curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.1
done
rate() { awk '/^Requests\/sec/ {print $2}'; }
p99() { awk '$1 == "99%" {print $2}'; }
# shellcheck disable=SC2086
health=$(wrk $wrk_args --latency "http://127.0.0.1:$port/healthz")
# Each run's ingest starts just after a checkpoint, so that runs pay for the same share of
# full-page images in the WAL (after a checkpoint every page's first change is logged whole).
[ "$backend" = postgres ] && psql "$database_url" -q -c CHECKPOINT
# The CPU time (clock ticks) the ingest writer threads have used, and the process as a whole:
# per stored event, a figure that varies less between runs than the throughput ratio does.
writer_ticks() {
    local total=0 task
    for task in /proc/"$bridge"/task/*; do
        case "$(cat "$task/comm")" in ingest-writer-*)
            total=$((total + $(awk '{print $14 + $15}' "$task/stat"))) ;;
        esac
    done
    echo "$total"
}
process_ticks() { awk '{print $14 + $15}' "/proc/$bridge/stat"; }
writer_before=$(writer_ticks)
process_before=$(process_ticks)
# shellcheck disable=SC2086
ingest=$(wrk $wrk_args --latency -s "$dir/signup.lua" "http://127.0.0.1:$port")
writer_used=$(($(writer_ticks) - writer_before))
process_used=$(($(process_ticks) - process_before))
h=$(echo "$health" | rate)
i=$(echo "$ingest" | rate)
errors=$(echo "$ingest" | awk '/Non-2xx/ {print $5}')
stored=$(curl -fs "http://127.0.0.1:$port/metrics" | awk -F' ' '/^bridge_inbound_requests_total\{endpoint="esp",outcome="stored"\}/ {print $2}')
echo "$backend, wrk $wrk_args:"
echo "  GET /healthz            $h req/s  p99 $(echo "$health" | p99)"
echo "  POST /webhooks/esp      $i req/s  p99 $(echo "$ingest" | p99)  ($(awk -v i="$i" -v h="$h" 'BEGIN {printf "%.1f", 100 * i / h}')% of /healthz; stored ${stored:-0}, non-2xx ${errors:-0})"
awk -v w="$writer_used" -v p="$process_used" -v n="${stored:-0}" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { if (n > 0) printf "  CPU per stored event    ingest writers %.1f us, the whole bridge %.1f us\n", 1e6 * w / hz / n, 1e6 * p / hz / n }'
