-- A worker's batch of deliveries that all succeeded (the bulk of them) recorded in one call
-- (src/db/jobs/attempts.rs) where it took four statements, each a round trip: lock the lines,
-- record the attempts, mark done the jobs still held under `lease`, hand each of their lines to
-- its oldest waiting job. Returns the ids of the jobs marked done. Planned for its parameters
-- on every call, as the statements were (the hand-on looks a line up by its index).
CREATE FUNCTION finish_deliveries(
    lease TEXT, finished BIGINT, line_ids BIGINT[], done_ids BIGINT[],
    at_job_id BIGINT[], at_started_at BIGINT[], at_duration_ms BIGINT[],
    at_status_code INTEGER[], at_error TEXT[], at_response_body TEXT[]
) RETURNS SETOF BIGINT
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    marked BIGINT[];
    handed BIGINT[];
BEGIN
    -- In id order, so that two transactions cannot deadlock.
    PERFORM 1 FROM (SELECT s.id FROM subscribers s WHERE s.id = ANY (line_ids) ORDER BY s.id
        FOR UPDATE) locked;
    INSERT INTO attempts (job_id, started_at, duration_ms, status_code, error, response_body)
    SELECT * FROM unnest(at_job_id, at_started_at, at_duration_ms, at_status_code, at_error,
        at_response_body);
    WITH done AS (
        UPDATE jobs SET status = 'done', attempts = attempts + 1, lease_token = NULL,
            lease_expires_at = NULL, last_error = NULL, finished_at = finished
        WHERE id = ANY (done_ids) AND status = 'running' AND lease_token = lease
        RETURNING id, subscriber_id)
    SELECT array_agg(id), array_agg(subscriber_id) INTO marked, handed FROM done;
    UPDATE jobs SET status = 'pending', run_at = finished WHERE id IN (
            SELECT MIN(w.id) FROM jobs w
            WHERE w.subscriber_id = ANY (handed) AND w.status = 'waiting'
            GROUP BY w.subscriber_id, w.destination)
        AND NOT EXISTS (SELECT 1 FROM jobs h
            WHERE h.subscriber_id = jobs.subscriber_id
            AND h.destination = jobs.destination
            AND h.status IN ('pending', 'running'));
    RETURN QUERY SELECT unnest(marked);
END
$$;
