//! Checkpoints of polled ESPs, and who a polled subscriber is to the bridge.

use diesel::prelude::*;

use super::schema::{poll_checkpoints, subscribers};
use super::{DbConnection, StoreError};

/// How far `source` has been read: the last change's timestamp and the last id at it.
pub fn checkpoint(
    conn: &mut DbConnection,
    source: &str,
) -> Result<Option<(String, i64)>, StoreError> {
    Ok(poll_checkpoints::table
        .find(source)
        .select((poll_checkpoints::position, poll_checkpoints::last_id))
        .first(conn)
        .optional()?)
}

/// Records how far `source` has been read (inserting the first checkpoint).
pub fn save_checkpoint(
    conn: &mut DbConnection,
    source: &str,
    position: &str,
    last_id: i64,
    now: i64,
) -> Result<(), StoreError> {
    let updated = diesel::update(poll_checkpoints::table.find(source))
        .set((
            poll_checkpoints::position.eq(position),
            poll_checkpoints::last_id.eq(last_id),
            poll_checkpoints::updated_at.eq(now),
        ))
        .execute(conn)?;
    if updated == 0 {
        diesel::insert_into(poll_checkpoints::table)
            .values((
                poll_checkpoints::source.eq(source),
                poll_checkpoints::position.eq(position),
                poll_checkpoints::last_id.eq(last_id),
                poll_checkpoints::updated_at.eq(now),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// The address and status of the subscriber the ESP knows by `esp_id` (its JSON literal).
pub fn known_by_esp_id(
    conn: &mut DbConnection,
    esp_id: &str,
) -> Result<Option<(String, String)>, StoreError> {
    Ok(subscribers::table
        .filter(subscribers::esp_id.eq(esp_id))
        .select((subscribers::email, subscribers::status))
        .first(conn)
        .optional()?)
}
