DROP FUNCTION ingest_batch;
DROP FUNCTION ingest_state;
