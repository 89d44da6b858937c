-- An ESP ingest batch (src/db/ingest.rs) as two function calls around the bridge's decisions:
-- `ingest_state` locks the people named and reads what the batch decides on, `ingest_batch`
-- writes the result. Each is one round trip where the statements they hold were one each.

-- The subscribers with any of `emails`, locked (in id order, so that two batches about the same
-- people cannot deadlock), then read again with the latest inbox entry from `event_source` of
-- each address and whether each subscriber's line to `job_destination` holds an open job. Each
-- statement of a (volatile) function reads with a fresh snapshot: the reads after the lock see
-- what a batch about the same people committed while this one waited for it, which one
-- statement that both waits and reads would not (it reads as of its start). Rows are of two
-- kinds: a subscriber (`id` set, `open_line` set) or an address's latest entry (`id` null,
-- `email` the address). Planned for its parameters on every call (the look-ups need the
-- indexes: a plan made once on empty tables would scan them).
CREATE FUNCTION ingest_state(emails TEXT[], event_source TEXT, job_destination TEXT)
RETURNS TABLE (id BIGINT, email TEXT, esp_id TEXT, first_name TEXT, name TEXT, status TEXT,
    created_at BIGINT, updated_at BIGINT, body_sha256 TEXT, received_at BIGINT,
    open_line BOOLEAN)
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
AS $$
#variable_conflict use_column
DECLARE
    locked BIGINT[];
BEGIN
    locked := ARRAY(SELECT s.id FROM subscribers s WHERE s.email = ANY (emails) ORDER BY s.id
        FOR UPDATE);
    RETURN QUERY
    SELECT s.id, s.email, s.esp_id, s.first_name, s.name, s.status, s.created_at, s.updated_at,
        NULL::TEXT, NULL::BIGINT, o.open IS NOT NULL
    FROM subscribers s
    LEFT JOIN LATERAL (SELECT true AS open FROM jobs j WHERE j.subscriber_id = s.id
        AND j.destination = job_destination AND j.status IN ('waiting', 'pending', 'running')
        LIMIT 1) o ON true
    WHERE s.id = ANY (locked)
    ORDER BY s.id;
    RETURN QUERY
    SELECT NULL::BIGINT, a.address, NULL::TEXT, NULL::TEXT, NULL::TEXT, NULL::TEXT,
        NULL::BIGINT, NULL::BIGINT, l.body_sha256, l.received_at, NULL::BOOLEAN
    FROM unnest(emails) AS a(address) CROSS JOIN LATERAL
        (SELECT e.body_sha256, e.received_at FROM inbound_events e
         WHERE e.source = event_source AND e.subject = a.address ORDER BY e.id DESC LIMIT 1) l;
END
$$;

-- The new subscribers, their inbox rows and their jobs, from one array per column. As one
-- statement sent from the bridge it was planned on every call (the bridge's connections plan each statement
-- for its parameters, `force_custom_plan`, because plans made once on empty tables kept
-- sequential scans), which was half its time. These inserts read no table, so one plan made
-- once per connection serves every batch: the function plans its statements once.
--
-- Rows refer to each other by place: `ev_new_subscriber` and `job_new_subscriber` are 1-based
-- places among the new subscribers, `job_event` among the events. Ids are drawn in the order
-- rows are inserted (ORDER BY place), so ranking the returned ids gives each row's place.
-- A job's `pending` is decided by the caller, which has read its subscriber's line under the
-- subscriber's row lock. Returns the number of jobs queued.
CREATE FUNCTION ingest_batch(
    sub_email TEXT[], sub_esp_id TEXT[], sub_first_name TEXT[], sub_name TEXT[],
    sub_status TEXT[], sub_created_at BIGINT[], sub_updated_at BIGINT[],
    ev_source TEXT[], ev_event_type TEXT[], ev_subject TEXT[], ev_body_sha256 TEXT[],
    ev_body TEXT[], ev_outcome TEXT[], ev_subscriber_id BIGINT[], ev_new_subscriber INTEGER[],
    ev_received_at BIGINT[],
    job_destination TEXT, job_subscriber_id BIGINT[], job_new_subscriber INTEGER[],
    job_event INTEGER[], job_kind TEXT[], job_payload TEXT[], job_at BIGINT[],
    job_pending BOOLEAN[]
) RETURNS BIGINT
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    new_ids BIGINT[];
    event_ids BIGINT[];
    queued BIGINT;
BEGIN
    WITH inserted AS (
        INSERT INTO subscribers (email, esp_id, first_name, name, status, created_at, updated_at)
        SELECT s.email, s.esp_id, s.first_name, s.name, s.status, s.created_at, s.updated_at
        FROM unnest(sub_email, sub_esp_id, sub_first_name, sub_name, sub_status,
            sub_created_at, sub_updated_at) WITH ORDINALITY
            AS s(email, esp_id, first_name, name, status, created_at, updated_at, place)
        ORDER BY s.place
        RETURNING id)
    SELECT array_agg(id ORDER BY id) INTO new_ids FROM inserted;

    WITH inserted AS (
        INSERT INTO inbound_events (source, event_type, subject, body_sha256, body, outcome,
            subscriber_id, received_at)
        SELECT e.source, e.event_type, e.subject, e.body_sha256, e.body, e.outcome,
            COALESCE(e.subscriber_id, new_ids[e.new_subscriber]), e.received_at
        FROM unnest(ev_source, ev_event_type, ev_subject, ev_body_sha256, ev_body, ev_outcome,
            ev_subscriber_id, ev_new_subscriber, ev_received_at) WITH ORDINALITY
            AS e(source, event_type, subject, body_sha256, body, outcome, subscriber_id,
                new_subscriber, received_at, place)
        ORDER BY e.place
        RETURNING id)
    SELECT array_agg(id ORDER BY id) INTO event_ids FROM inserted;

    INSERT INTO jobs (subscriber_id, destination, kind, payload, created_at, retry_from, run_at,
        inbound_event_id, status)
    SELECT COALESCE(j.subscriber_id, new_ids[j.new_subscriber]), job_destination, j.kind,
        j.payload, j.at, j.at, j.at, event_ids[j.event],
        CASE WHEN j.pending THEN 'pending' ELSE 'waiting' END
    FROM unnest(job_subscriber_id, job_new_subscriber, job_event, job_kind, job_payload, job_at,
        job_pending) WITH ORDINALITY
        AS j(subscriber_id, new_subscriber, event, kind, payload, at, pending, place)
    ORDER BY j.place;
    GET DIAGNOSTICS queued = ROW_COUNT;
    RETURN queued;
END
$$;
