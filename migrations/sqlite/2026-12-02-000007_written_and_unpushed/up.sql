-- The SHA-256 (hex) of the body last written successfully to the subscriber's ESP fields: a
-- write whose body is the same byte for byte is not sent (it is recorded as skipped).
ALTER TABLE subscribers ADD COLUMN esp_written_sha256 TEXT;
-- Recorded by `import --no-push` without being sent to the platform; `deliveries
-- push-unpushed` queues them.
ALTER TABLE subscribers ADD COLUMN unpushed BOOLEAN NOT NULL DEFAULT FALSE;
