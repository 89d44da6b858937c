#!/usr/bin/env bash
# `referral-bridge prune` over 40,000 stored bodies with 20,000 redemptions pointing at half of
# them, with and without the index on redemptions.inbound_event_id (migration 13): each deleted
# body sets its redemption's reference to NULL, which without the index scans the table.
# SQLite (needs the sqlite3 CLI). BRIDGE_BIN runs another build instead of this checkout's.
#
#   benches/prune-redemptions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v sqlite3 >/dev/null || { echo "needs sqlite3 (apt-get install sqlite3)" >&2; exit 1; }
if [ -z "${BRIDGE_BIN:-}" ]; then
    cargo build --release -q
    BRIDGE_BIN=target/release/referral-bridge
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export SPARKLOOP_INCOMING_WEBHOOK_URL=http://127.0.0.1:9/unused BRIDGE_RETENTION=1d DEDUPE_WINDOW=1d
DATABASE_URL="$dir/indexed.db" "$BRIDGE_BIN" migrate >/dev/null
# Everything received at 1 s after the epoch: older than any retention.
sqlite3 "$dir/indexed.db" <<'SQL'
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
INSERT INTO subscribers (id, email, status, created_at, updated_at, unpushed)
SELECT i, 'p' || i || '@example.com', 'subscribed', 0, 0, 0 FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40000)
INSERT INTO inbound_events (id, source, event_type, subject, body_sha256, body, outcome,
    subscriber_id, received_at, idempotency_key)
SELECT i, 'sparkloop', 'reward_redeemed', 'p' || (i % 20000 + 1) || '@example.com',
    hex(randomblob(16)), '{}', 'recorded', i % 20000 + 1, 1000, hex(randomblob(16)) FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
INSERT INTO redemptions (subscriber_id, reward_name, inbound_event_id, redeemed_at)
SELECT i, 'Mug', i * 2, 1000 FROM n;
SQL
cp "$dir/indexed.db" "$dir/unindexed.db"
sqlite3 "$dir/unindexed.db" "DROP INDEX redemptions_by_inbound_event"
for db in indexed unindexed; do
    started=$(date +%s%N)
    DATABASE_URL="$dir/$db.db" "$BRIDGE_BIN" prune | tail -1
    echo "$db: $(( ($(date +%s%N) - started) / 1000000 )) ms"
done
