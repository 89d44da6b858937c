DROP INDEX jobs_by_inbound_event;
