-- How far the bridge has read an ESP that posts no webhooks (listmonk): the last change's
-- timestamp as the ESP wrote it, and the last id read at that timestamp.
CREATE TABLE poll_checkpoints (
    source TEXT PRIMARY KEY,
    position TEXT NOT NULL,
    last_id BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- A polled subscriber is recognised by the ESP's id, whatever its address is now.
CREATE INDEX subscribers_by_esp_id ON subscribers (esp_id);
