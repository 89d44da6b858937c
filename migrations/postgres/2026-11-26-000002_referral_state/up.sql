-- What the referral platform says of each subscriber; written into the ESP's custom fields.
ALTER TABLE subscribers ADD COLUMN platform_id TEXT;
ALTER TABLE subscribers ADD COLUMN referral_code TEXT;
ALTER TABLE subscribers ADD COLUMN referral_link TEXT;
ALTER TABLE subscribers ADD COLUMN referred BOOLEAN;
ALTER TABLE subscribers ADD COLUMN referral_count BIGINT;
ALTER TABLE subscribers ADD COLUMN next_reward BIGINT;
ALTER TABLE subscribers ADD COLUMN last_reward TEXT;
ALTER TABLE subscribers ADD COLUMN last_coupon TEXT;
ALTER TABLE subscribers ADD COLUMN partner_status TEXT;
-- unix seconds, as the platform gives it
ALTER TABLE subscribers ADD COLUMN last_referral_at BIGINT;

-- Rewards redeemed, with the shipping details, for the operator (not sent to the ESP).
CREATE TABLE redemptions (
    id BIGSERIAL PRIMARY KEY,
    subscriber_id BIGINT NOT NULL REFERENCES subscribers (id),
    reward_id TEXT,
    reward_name TEXT,
    variant_name TEXT,
    variant_sku TEXT,
    coupon TEXT,
    -- the platform's object, as JSON text
    shipping_details TEXT,
    inbound_event_id BIGINT NOT NULL REFERENCES inbound_events (id),
    redeemed_at BIGINT NOT NULL
);
CREATE INDEX redemptions_by_subscriber ON redemptions (subscriber_id, id);
