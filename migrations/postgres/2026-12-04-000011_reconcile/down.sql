DROP TABLE schedules;
DROP TABLE reconcile_runs;
