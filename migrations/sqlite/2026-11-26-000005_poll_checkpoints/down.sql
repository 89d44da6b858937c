DROP INDEX subscribers_by_esp_id;
DROP TABLE poll_checkpoints;
