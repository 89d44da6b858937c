-- Times are unix milliseconds (BIGINT) on both backends, so that one schema.rs serves both.

-- One row per person the bridge has heard of, keyed by normalised email.
CREATE TABLE subscribers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL UNIQUE,
    -- the ESP's id as a JSON literal, so a number stays a number and a string a string
    esp_id TEXT,
    first_name TEXT,
    name TEXT,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Every accepted webhook, as received, duplicates and ignored ones included.
CREATE TABLE inbound_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    event_type TEXT NOT NULL,
    subject TEXT,
    body_sha256 TEXT NOT NULL,
    body TEXT NOT NULL,
    outcome TEXT NOT NULL,
    subscriber_id BIGINT REFERENCES subscribers (id),
    received_at BIGINT NOT NULL
);
CREATE INDEX inbound_events_by_subject ON inbound_events (source, subject, id);

-- Outgoing calls. A subscriber's jobs to one destination form a line: its head is pending
-- (running while a worker holds the lease), the rest waiting; finished jobs are done or dead.
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subscriber_id BIGINT NOT NULL REFERENCES subscribers (id),
    destination TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    -- start of the retry horizon: the creation, or the last manual retry
    retry_from BIGINT NOT NULL,
    run_at BIGINT NOT NULL,
    lease_token TEXT,
    lease_expires_at BIGINT,
    last_error TEXT,
    finished_at BIGINT,
    inbound_event_id BIGINT REFERENCES inbound_events (id)
);
-- due jobs in claiming order: a claim reads the first few and stops
CREATE INDEX jobs_by_status ON jobs (status, run_at, id);
-- a subscriber's line at one destination (not a partial index: the queries bind the statuses
-- as parameters, which neither planner can match against an index's WHERE)
CREATE INDEX jobs_by_line ON jobs (subscriber_id, destination, status, id);

-- One row per HTTP call made for a job.
CREATE TABLE attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id BIGINT NOT NULL REFERENCES jobs (id),
    started_at BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    status_code INTEGER,
    error TEXT,
    response_body TEXT
);
CREATE INDEX attempts_by_job ON attempts (job_id, id);
