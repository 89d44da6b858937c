ALTER TABLE attempts DROP CONSTRAINT attempts_job_id_fkey;
DROP INDEX jobs_by_inbound_event;
