-- Rows are deleted now: by retention (old bodies, attempts, finished jobs) and by erasure.
-- Postgres gives the space of deleted rows back to new ones through autovacuum.

-- A redemption outlives the callback that told of it (its own columns keep what fulfilment
-- needs).
ALTER TABLE redemptions ALTER COLUMN inbound_event_id DROP NOT NULL;
ALTER TABLE redemptions DROP CONSTRAINT redemptions_inbound_event_id_fkey;
ALTER TABLE redemptions ADD CONSTRAINT redemptions_inbound_event_id_fkey
    FOREIGN KEY (inbound_event_id) REFERENCES inbound_events (id) ON DELETE SET NULL;

-- Whether a job still points at a stored webhook: pruning keeps the body while one does.
CREATE INDEX jobs_by_inbound_event ON jobs (inbound_event_id);

-- Migration 6 dropped four references because no row was ever deleted. The one from an attempt
-- to its job comes back, cascading: attempts are written by workers, one per call, never by
-- ingest. The other three stay off the ingest path; their rows are deleted only by the pruning
-- pass (a body only while no job points at it, a job with its attempts) and by the erasure (a
-- person's rows all in one transaction), and a test checks that neither leaves an orphan.
ALTER TABLE attempts ADD CONSTRAINT attempts_job_id_fkey
    FOREIGN KEY (job_id) REFERENCES jobs (id) ON DELETE CASCADE;
