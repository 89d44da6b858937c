//! Dashboard sessions: each a random id whose SHA-256 is stored with its expiry; the id itself
//! lives only in the browser's cookie, so a copy of the database signs no one in.

use diesel::prelude::*;

use super::schema::admin_sessions;
use super::{DbConnection, StoreError};

/// Stores a new session (by the hash of its id), valid until `expires_at` (unix ms); expired
/// sessions are deleted on the way, so the table holds only live ones.
pub fn create(
    conn: &mut DbConnection,
    id_sha256: &str,
    now: i64,
    expires_at: i64,
) -> Result<(), StoreError> {
    diesel::delete(admin_sessions::table.filter(admin_sessions::expires_at.le(now)))
        .execute(conn)?;
    diesel::insert_into(admin_sessions::table)
        .values((
            admin_sessions::id_sha256.eq(id_sha256),
            admin_sessions::created_at.eq(now),
            admin_sessions::expires_at.eq(expires_at),
        ))
        .execute(conn)?;
    Ok(())
}

/// Whether the session with this id hash exists and has not expired at `now`.
pub fn is_live(conn: &mut DbConnection, id_sha256: &str, now: i64) -> Result<bool, StoreError> {
    let found: Option<i64> = admin_sessions::table
        .find(id_sha256)
        .filter(admin_sessions::expires_at.gt(now))
        .select(admin_sessions::expires_at)
        .first(conn)
        .optional()?;
    Ok(found.is_some())
}

/// Ends the session with this id hash (signing out); nothing if there is none.
pub fn revoke(conn: &mut DbConnection, id_sha256: &str) -> Result<(), StoreError> {
    diesel::delete(admin_sessions::table.find(id_sha256)).execute(conn)?;
    Ok(())
}
