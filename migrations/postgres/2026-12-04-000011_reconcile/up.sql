-- What each finished `reconcile` found (DESIGN 3.9): GET /admin/api/reconcile and the
-- dashboard show the last one. A run that is interrupted records nothing.
CREATE TABLE reconcile_runs (
    id BIGSERIAL PRIMARY KEY,
    started_at BIGINT NOT NULL,
    finished_at BIGINT NOT NULL,
    fixed BOOLEAN NOT NULL,
    platform_subscribers BIGINT NOT NULL,
    here BIGINT NOT NULL,
    missing_at_platform BIGINT NOT NULL,
    unsubscribed_here BIGINT NOT NULL,
    unknown_here BIGINT NOT NULL,
    fields_differ BIGINT NOT NULL,
    queued BIGINT NOT NULL
);

-- Periodic work that one instance at a time does for all of them sharing the database: the
-- instance that moves `due_at` on (one UPDATE, so only one can) runs it.
CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    due_at BIGINT NOT NULL,
    holder TEXT
);
