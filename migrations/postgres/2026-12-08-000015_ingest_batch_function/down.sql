DROP FUNCTION ingest_batch;
