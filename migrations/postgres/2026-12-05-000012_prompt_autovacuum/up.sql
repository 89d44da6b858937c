-- Retention deletes from these tables all the time (DESIGN 3.10). Postgres reuses a deleted
-- row's space only once autovacuum has visited the table, by default after a fifth of it has
-- changed: on a table of millions of rows that is hours of growth. A visit after 2% (and at
-- least 1,000 rows) keeps the space reused at the pace it is freed.
ALTER TABLE inbound_events SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000);
ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000);
ALTER TABLE attempts SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000);
