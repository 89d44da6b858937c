ALTER TABLE inbound_events ADD CONSTRAINT inbound_events_subscriber_id_fkey
    FOREIGN KEY (subscriber_id) REFERENCES subscribers (id);
ALTER TABLE jobs ADD CONSTRAINT jobs_subscriber_id_fkey
    FOREIGN KEY (subscriber_id) REFERENCES subscribers (id);
ALTER TABLE jobs ADD CONSTRAINT jobs_inbound_event_id_fkey
    FOREIGN KEY (inbound_event_id) REFERENCES inbound_events (id);
ALTER TABLE attempts ADD CONSTRAINT attempts_job_id_fkey
    FOREIGN KEY (job_id) REFERENCES jobs (id);
