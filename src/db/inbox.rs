//! The inbox: every accepted webhook, stored before it is answered.

use diesel::prelude::*;

use super::schema::inbound_events;
use super::{DbConnection, StoreError};

/// `inbound_events.outcome` of an event that was acted on.
pub const PROCESSED: &str = "processed";
/// `inbound_events.outcome` of a repeated delivery of the previous event.
pub const DUPLICATE: &str = "duplicate";
/// `inbound_events.outcome` of an event type the bridge does not act on.
pub const IGNORED: &str = "ignored";

/// An inbound event to store.
#[derive(Debug, Insertable)]
#[diesel(table_name = inbound_events)]
pub struct NewInboundEvent<'a> {
    /// Which endpoint it came to (`esp`, `sparkloop`, ...).
    pub source: &'a str,
    /// The event type as the sender named it.
    pub event_type: &'a str,
    /// The address duplicates are looked up under.
    pub subject: Option<&'a str>,
    /// Hex SHA-256 of the raw body.
    pub body_sha256: &'a str,
    /// The raw body.
    pub body: &'a str,
    /// `processed`, `duplicate` or `ignored`.
    pub outcome: &'a str,
    /// The subscriber it is about, once known.
    pub subscriber_id: Option<i64>,
    /// When it arrived (unix ms).
    pub received_at: i64,
}

/// The body hash and arrival time of the latest event stored from `source` for `subject`.
pub fn latest_for_subject(
    conn: &mut DbConnection,
    source: &str,
    subject: &str,
) -> Result<Option<(String, i64)>, StoreError> {
    Ok(inbound_events::table
        .filter(inbound_events::source.eq(source))
        .filter(inbound_events::subject.eq(subject))
        .order(inbound_events::id.desc())
        .select((inbound_events::body_sha256, inbound_events::received_at))
        .first(conn)
        .optional()?)
}

/// Stores an inbound event and returns its id.
pub fn insert(conn: &mut DbConnection, event: &NewInboundEvent<'_>) -> Result<i64, StoreError> {
    Ok(diesel::insert_into(inbound_events::table)
        .values(event)
        .returning(inbound_events::id)
        .get_result(conn)?)
}
