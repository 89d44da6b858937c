-- Rows are deleted now: by retention (old bodies, attempts, finished jobs) and by erasure.

-- A redemption outlives the callback that told of it: its own columns keep what fulfilment
-- needs, so pruning the callback's body leaves the redemption without it (SQLite cannot change
-- a column's constraints in place: the table is made again).
CREATE TABLE redemptions_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subscriber_id BIGINT NOT NULL REFERENCES subscribers (id),
    reward_id TEXT,
    reward_name TEXT,
    variant_name TEXT,
    variant_sku TEXT,
    coupon TEXT,
    shipping_details TEXT,
    inbound_event_id BIGINT REFERENCES inbound_events (id) ON DELETE SET NULL,
    redeemed_at BIGINT NOT NULL
);
INSERT INTO redemptions_new SELECT id, subscriber_id, reward_id, reward_name, variant_name,
    variant_sku, coupon, shipping_details, inbound_event_id, redeemed_at FROM redemptions;
DROP TABLE redemptions;
ALTER TABLE redemptions_new RENAME TO redemptions;
CREATE INDEX redemptions_by_subscriber ON redemptions (subscriber_id, id);

-- Whether a job still points at a stored webhook: pruning keeps the body while one does.
CREATE INDEX jobs_by_inbound_event ON jobs (inbound_event_id);
