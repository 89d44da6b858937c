-- Deleting a stored webhook (retention, erasure) sets the reference of any redemption it told
-- of to NULL (migration 9): without an index on the reference, each deleted body scanned the
-- whole redemptions table, a pass of 40,000 bodies 40,000 times. Redemptions are written
-- rarely (one per reward redeemed), so the index costs ingest nothing.
CREATE INDEX redemptions_by_inbound_event ON redemptions (inbound_event_id);
