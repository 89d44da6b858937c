//! The write half of an ESP ingest batch on Postgres in one statement: the new subscribers, the
//! inbox rows and the jobs, each part reading the ids the part before it drew (a data-modifying
//! `WITH`), where three statements would cost three round trips. SQLite, which has no round
//! trips, writes them one table at a time (`crate::inbound::ingest`).

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text};

use super::inbox::NewInboundEvent;
use super::subscribers::NewSubscriber;
use super::working::Who;
use super::{column, StoreError};
use crate::db::prepared::{prepared, Count};

/// An inbox row of the batch.
pub struct Event<'a> {
    /// The row; its `subscriber_id` is set when the subscriber is stored already.
    pub row: NewInboundEvent<'a>,
    /// The email of the new subscriber it acted on, whose id the statement draws.
    pub new_subscriber: Option<&'a str>,
}

/// A job of the batch.
pub struct Job<'a> {
    /// Whom it is about.
    pub subscriber: Who<'a>,
    /// The inbox row it came from: its index in the batch's events.
    pub event: usize,
    /// What it does.
    pub kind: &'a str,
    /// The request body to send.
    pub payload: &'a str,
    /// When it was queued and is first due (unix ms).
    pub at: i64,
    /// Whether it is the batch's first job for its subscriber: only such a job can head a line
    /// (the others wait behind it).
    pub first_of_subscriber: bool,
}

/// Inserts `subscribers`, `events` and `jobs` for `destination` in one statement. A job starts
/// pending if it is its subscriber's first in the batch and their line to `destination` holds no
/// open job, else waiting. The caller holds the stored subscribers' row locks, so that no line
/// changes under the statement (see [`super::jobs::insert_all`]).
pub fn insert_batch(
    conn: &mut diesel::PgConnection,
    subscribers: &[NewSubscriber<'_>],
    events: &[Event<'_>],
    jobs: &[Job<'_>],
    destination: &str,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    // A line's open job is looked up per job, by subscriber (a lateral probe of `jobs_by_line`):
    // as a `NOT EXISTS`, Postgres hashes every open job of the destination once per batch,
    // which grows with the queue.
    // Ids are drawn in the order rows are produced (see `inbox::insert_all`): the inbox rows'
    // ids, ranked, give each its place in `events`, which is how a job names its event.
    // `$n::text[]` arrays of new subscribers' emails join the rows that are about them to the
    // ids the first part drew.
    prepared(
        diesel::sql_query(
            "WITH new_subscribers AS ( \
           INSERT INTO subscribers (email, esp_id, first_name, name, status, created_at, \
             updated_at) \
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
             $6::int8[], $7::int8[]) \
           RETURNING id, email), \
         events AS ( \
           INSERT INTO inbound_events (source, event_type, subject, body_sha256, body, outcome, \
             subscriber_id, received_at) \
           SELECT e.source, e.event_type, e.subject, e.body_sha256, e.body, e.outcome, \
             COALESCE(e.subscriber_id, n.id), e.received_at \
           FROM unnest($8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
             $13::text[], $14::int8[], $15::text[], $16::int8[]) WITH ORDINALITY \
             AS e(source, event_type, subject, body_sha256, body, outcome, subscriber_id, \
               new_email, received_at, place) \
           LEFT JOIN new_subscribers n ON n.email = e.new_email \
           ORDER BY e.place \
           RETURNING id), \
         placed AS (SELECT id, row_number() OVER (ORDER BY id) AS place FROM events), \
         queued AS (INSERT INTO jobs (subscriber_id, destination, kind, payload, created_at, retry_from, \
           run_at, inbound_event_id, status) \
         SELECT s.id, $17, j.kind, j.payload, j.at, j.at, j.at, p.id, \
           CASE WHEN j.first AND o.open IS NULL THEN 'pending' ELSE 'waiting' END \
         FROM unnest($18::int8[], $19::text[], $20::int8[], $21::text[], $22::text[], \
           $23::int8[], $24::bool[]) WITH ORDINALITY \
           AS j(subscriber_id, new_email, event, kind, payload, at, first, place) \
         LEFT JOIN new_subscribers n ON n.email = j.new_email \
         CROSS JOIN LATERAL (SELECT COALESCE(j.subscriber_id, n.id) AS id) s \
         JOIN placed p ON p.place = j.event \
         LEFT JOIN LATERAL (SELECT 1 AS open FROM jobs o WHERE o.subscriber_id = s.id \
             AND o.destination = $17 AND o.status IN ('waiting', 'pending', 'running') \
             LIMIT 1) o ON true \
         ORDER BY j.place RETURNING 1) \
         SELECT count(*) AS n FROM queued",
        )
        .bind::<Array<Text>, _>(column(subscribers, |s| s.email))
        .bind::<Array<Nullable<Text>>, _>(column(subscribers, |s| s.esp_id))
        .bind::<Array<Nullable<Text>>, _>(column(subscribers, |s| s.first_name))
        .bind::<Array<Nullable<Text>>, _>(column(subscribers, |s| s.name))
        .bind::<Array<Text>, _>(column(subscribers, |s| s.status))
        .bind::<Array<BigInt>, _>(column(subscribers, |s| s.created_at))
        .bind::<Array<BigInt>, _>(column(subscribers, |s| s.updated_at))
        .bind::<Array<Text>, _>(column(events, |e| e.row.source))
        .bind::<Array<Text>, _>(column(events, |e| e.row.event_type))
        .bind::<Array<Nullable<Text>>, _>(column(events, |e| e.row.subject))
        .bind::<Array<Text>, _>(column(events, |e| e.row.body_sha256))
        .bind::<Array<Text>, _>(column(events, |e| e.row.body))
        .bind::<Array<Text>, _>(column(events, |e| e.row.outcome))
        .bind::<Array<Nullable<BigInt>>, _>(column(events, |e| e.row.subscriber_id))
        .bind::<Array<Nullable<Text>>, _>(column(events, |e| e.new_subscriber))
        .bind::<Array<BigInt>, _>(column(events, |e| e.row.received_at))
        .bind::<Text, _>(destination)
        .bind::<Array<Nullable<BigInt>>, _>(column(jobs, |j| j.subscriber.stored_id()))
        .bind::<Array<Nullable<Text>>, _>(column(jobs, |j| j.subscriber.new_email()))
        .bind::<Array<BigInt>, _>(column(jobs, |j| j.event as i64 + 1))
        .bind::<Array<Text>, _>(column(jobs, |j| j.kind))
        .bind::<Array<Text>, _>(column(jobs, |j| j.payload))
        .bind::<Array<BigInt>, _>(column(jobs, |j| j.at))
        .bind::<Array<Bool>, _>(column(jobs, |j| j.first_of_subscriber)),
    )
    .get_result::<Count>(conn)?;
    Ok(())
}
