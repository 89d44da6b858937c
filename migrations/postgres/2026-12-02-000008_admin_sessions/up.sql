-- Dashboard sessions: the SHA-256 (hex) of each random session id (the id itself is only in the
-- browser's cookie), when it was created and when it expires; signing out deletes the row.
CREATE TABLE admin_sessions (
    id_sha256 TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
