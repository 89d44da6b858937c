DROP INDEX inbound_events_idempotency_key;
ALTER TABLE inbound_events DROP COLUMN idempotency_key;
ALTER TABLE subscribers DROP COLUMN fraud_risk;
ALTER TABLE subscribers DROP COLUMN winner;
ALTER TABLE subscribers DROP COLUMN leaderboard_rank;
