ALTER TABLE inbound_events RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold);
ALTER TABLE jobs RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold);
ALTER TABLE attempts RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold);
