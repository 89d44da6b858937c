ALTER TABLE subscribers DROP COLUMN unpushed;
ALTER TABLE subscribers DROP COLUMN esp_written_sha256;
