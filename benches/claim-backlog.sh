#!/usr/bin/env bash
# What a worker's poll costs beside a backlog of another destination's due jobs (SparkLoop's,
# with no platform configured yet, say): the claim for the ESP alone (inside the write
# transaction on SQLite) and the look for when its next job is due, as the bridge runs them,
# timed by the sqlite3 CLI. SQLite (needs the sqlite3 CLI). BRIDGE_BIN runs another build's
# migrations (an A/B: the queries are this checkout's, the index is that build's).
#
#   benches/claim-backlog.sh [jobs]       (default 500,000)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v sqlite3 >/dev/null || { echo "needs sqlite3 (apt-get install sqlite3)" >&2; exit 1; }
jobs=${1:-500000}
if [ -z "${BRIDGE_BIN:-}" ]; then
    cargo build --release -q
    BRIDGE_BIN=target/release/referral-bridge
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
DATABASE_URL="$dir/queue.db" SPARKLOOP_INCOMING_WEBHOOK_URL=http://127.0.0.1:9/unused \
    "$BRIDGE_BIN" migrate >/dev/null 2>&1
sqlite3 "$dir/queue.db" <<SQL
INSERT INTO subscribers (id, email, status, created_at, updated_at)
VALUES (1, 's@example.com', 'subscribed', 0, 0);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $jobs)
INSERT INTO jobs (subscriber_id, destination, kind, payload, status, created_at, retry_from, run_at)
SELECT 1, 'sparkloop', 'subscribe', '{}', 'pending', 0, 0, i FROM n;
SQL
echo "$jobs due SparkLoop jobs; the ESP worker's claim, then its next_run_at:"
sqlite3 "$dir/queue.db" <<'SQL'
.timer on
UPDATE jobs SET status = 'running' WHERE id IN (SELECT id FROM (SELECT * FROM (SELECT j.id,
    j.run_at FROM jobs j WHERE j.status = 'pending' AND j.destination = 'esp'
    AND j.run_at <= 99999999999 ORDER BY j.run_at, j.id LIMIT 64)) ORDER BY run_at, id LIMIT 64);
SELECT MIN(first) FROM (SELECT (SELECT MIN(run_at) FROM jobs WHERE status = 'pending'
    AND destination = 'esp') AS first) AS firsts;
SQL
