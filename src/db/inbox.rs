//! The inbox: every accepted webhook, stored before it is answered.

use std::collections::{HashMap, HashSet};

use diesel::prelude::*;
use diesel::query_builder::AstPass;
use diesel::sql_types::{Array, BigInt, Nullable, Text};
use diesel::sqlite::Sqlite;

use super::schema::inbound_events;
use super::{cached, column, DbConnection, StoreError, ROWS_PER_STATEMENT};
use crate::db::prepared::prepared;

/// `inbound_events.outcome` of an event that was acted on.
pub const PROCESSED: &str = "processed";
/// `inbound_events.outcome` of a repeated delivery of the previous event.
pub const DUPLICATE: &str = "duplicate";
/// `inbound_events.outcome` of a profile update that changed nothing the platform is told of
/// (the ESP echoing the bridge's own field write): recorded, not forwarded.
pub const UNCHANGED: &str = "unchanged";
/// `inbound_events.outcome` of an event type the bridge does not act on.
pub const IGNORED: &str = "ignored";

/// An inbound event to store.
#[derive(Debug, Insertable)]
#[diesel(table_name = inbound_events)]
// `None` is NULL rather than DEFAULT, so that many rows go in one statement on SQLite too.
#[diesel(treat_none_as_default_value = false)]
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
    /// The platform's id for what it reports, on the event that acted on it.
    pub idempotency_key: Option<&'a str>,
}

/// The body hash and arrival time of the latest event stored from `source` for each of
/// `subjects`, by subject; subjects with no event are absent.
pub fn latest_for_subjects(
    conn: &mut DbConnection,
    source: &str,
    subjects: &[&str],
) -> Result<HashMap<String, (String, i64)>, StoreError> {
    #[derive(QueryableByName)]
    struct Latest {
        #[diesel(sql_type = Text)]
        subject: String,
        #[diesel(sql_type = Text)]
        body_sha256: String,
        #[diesel(sql_type = BigInt)]
        received_at: i64,
    }
    let mut latest = HashMap::with_capacity(subjects.len());
    let c = match conn {
        DbConnection::Sqlite(c) => c,
        DbConnection::Postgres(c) => {
            // For each subject, the first row read backwards along `inbound_events_by_subject`,
            // however long its history.
            let rows: Vec<Latest> = prepared(
                diesel::sql_query(
                    "SELECT s.subject, l.body_sha256, l.received_at \
                     FROM unnest($1::text[]) AS s(subject) CROSS JOIN LATERAL \
                     (SELECT body_sha256, received_at FROM inbound_events \
                      WHERE source = $2 AND subject = s.subject ORDER BY id DESC LIMIT 1) AS l",
                )
                .bind::<Array<Text>, _>(subjects)
                .bind::<Text, _>(source),
            )
            .load(c)?;
            latest.extend(
                rows.into_iter()
                    .map(|row| (row.subject, (row.body_sha256, row.received_at))),
            );
            return Ok(latest);
        }
    };
    // The ingest's other read of every batch: a cached statement (see `cached`); new addresses,
    // the usual case, find no row in the sub-select.
    for chunk in subjects.chunks(cached::ROWS) {
        let rows: Vec<Latest> = cached::in_list(
            "SELECT subject, body_sha256, received_at FROM inbound_events WHERE id IN \
             (SELECT max(id) FROM inbound_events WHERE source = ? AND subject IN ",
            Some(source),
            chunk,
            " GROUP BY subject)",
        )
        .load(c)?;
        latest.extend(
            rows.into_iter()
                .map(|row| (row.subject, (row.body_sha256, row.received_at))),
        );
    }
    Ok(latest)
}

/// Those of `keys` that an event from `source` has already been acted on with.
pub fn keys_seen(
    conn: &mut DbConnection,
    source: &str,
    keys: &[&str],
) -> Result<HashSet<String>, StoreError> {
    let mut seen = HashSet::new();
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let found: Vec<Option<String>> = inbound_events::table
            .filter(inbound_events::source.eq(source))
            .filter(inbound_events::idempotency_key.eq_any(chunk))
            .select(inbound_events::idempotency_key)
            .load(conn)?;
        seen.extend(found.into_iter().flatten());
    }
    Ok(seen)
}

/// Stores inbound events (on Postgres in one statement, on SQLite [`cached::ROWS`] per cached
/// statement) and returns their ids in the same order.
pub fn insert_all(
    conn: &mut DbConnection,
    events: &[NewInboundEvent<'_>],
) -> Result<Vec<i64>, StoreError> {
    #[derive(QueryableByName)]
    struct Returned {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids = Vec::with_capacity(events.len());
    if let DbConnection::Postgres(c) = conn {
        // One array per column: the statement's text does not grow with the batch, so Postgres
        // parses a few lines and plans one function scan, where a multi-row VALUES list is
        // parsed, analysed and planned row by row (and must be split under the limit on
        // bound parameters).
        let returned: Vec<Returned> = prepared(
            diesel::sql_query(
                "INSERT INTO inbound_events (source, event_type, subject, body_sha256, body, \
             outcome, subscriber_id, received_at, idempotency_key) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::int8[], $8::int8[], $9::text[]) RETURNING id",
            )
            .bind::<Array<Text>, _>(column(events, |e| e.source))
            .bind::<Array<Text>, _>(column(events, |e| e.event_type))
            .bind::<Array<Nullable<Text>>, _>(column(events, |e| e.subject))
            .bind::<Array<Text>, _>(column(events, |e| e.body_sha256))
            .bind::<Array<Text>, _>(column(events, |e| e.body))
            .bind::<Array<Text>, _>(column(events, |e| e.outcome))
            .bind::<Array<Nullable<BigInt>>, _>(column(events, |e| e.subscriber_id))
            .bind::<Array<BigInt>, _>(column(events, |e| e.received_at))
            .bind::<Array<Nullable<Text>>, _>(column(events, |e| e.idempotency_key)),
        )
        .load(c)?;
        ids.extend(returned.into_iter().map(|row| row.id));
        // As below: ids are drawn in the arrays' order.
        ids.sort_unstable();
        return Ok(ids);
    }
    let DbConnection::Sqlite(c) = conn else {
        unreachable!("Postgres is answered above")
    };
    for chunk in events.chunks(cached::ROWS) {
        let returned: Vec<Returned> = cached::insert_returning(chunk, " RETURNING id").load(c)?;
        let mut chunk_ids: Vec<i64> = returned.into_iter().map(|row| row.id).collect();
        // RETURNING promises no order; ids are drawn row by row in VALUES order (one statement
        // draws from the sequence, or SQLite's rowid, in turn), so ascending is that order.
        chunk_ids.sort_unstable();
        ids.extend(chunk_ids);
    }
    Ok(ids)
}

impl cached::Row for NewInboundEvent<'_> {
    const INSERT: &'static str = "INSERT INTO inbound_events (source, event_type, subject, \
        body_sha256, body, outcome, subscriber_id, received_at, idempotency_key) VALUES ";

    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        cached::bind_values!(out;
            Text => &self.source,
            Text => &self.event_type,
            Nullable<Text> => &self.subject,
            Text => &self.body_sha256,
            Text => &self.body,
            Text => &self.outcome,
            Nullable<BigInt> => &self.subscriber_id,
            BigInt => &self.received_at,
            Nullable<Text> => &self.idempotency_key,
        )
    }
}
