-- A leaderboard platform's view of the subscriber (LoyaltySurf): rank, winner flag, fraud risk.
ALTER TABLE subscribers ADD COLUMN leaderboard_rank BIGINT;
ALTER TABLE subscribers ADD COLUMN winner BOOLEAN;
ALTER TABLE subscribers ADD COLUMN fraud_risk TEXT;
-- A platform's own id for what a callback reports (LoyaltySurf's reward id), kept on the event
-- that acted on it, so that a second delivery, however late, is recognised and not acted on.
ALTER TABLE inbound_events ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX inbound_events_idempotency_key ON inbound_events (source, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
