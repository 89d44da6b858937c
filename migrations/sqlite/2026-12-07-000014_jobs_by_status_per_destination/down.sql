DROP INDEX jobs_by_status;
CREATE INDEX jobs_by_status ON jobs (status, run_at, id);
