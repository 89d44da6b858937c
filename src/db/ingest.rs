//! An ESP ingest batch on Postgres in two round trips inside its transaction: one read
//! ([`lock_and_read`]: the subscribers' row locks, the subscribers, the dedupe state and the job
//! lines) and one write ([`insert_batch`]: the new subscribers, the inbox rows and the jobs), each
//! one call of a function of migration 15. SQLite, which has no round trips, reads and writes one
//! table at a time (`crate::inbound::ingest`).

use std::collections::{HashMap, HashSet};

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text};

use super::inbox::NewInboundEvent;
use super::subscribers::{NewSubscriber, Subscriber};
use super::working::Who;
use super::{column, StoreError};
use crate::db::prepared::{prepared, Count};

/// What a batch decides on, read after its subscribers are locked.
pub struct State {
    /// The subscribers the batch names, locked, in id order.
    pub subscribers: Vec<Subscriber>,
    /// The body hash and arrival time of the latest inbox entry of each address that has one.
    pub latest: HashMap<String, (String, i64)>,
    /// The subscribers whose line to the destination holds an open job.
    pub open_lines: HashSet<i64>,
}

/// Locks the subscribers with any of `emails`, then reads them, the latest inbox entry from
/// `source` of each address and which of them have an open job to `destination`: one call of
/// the `ingest_state` function, whose reads after the lock see what a batch about the same
/// people committed while this one waited (see migration 15).
pub fn lock_and_read(
    conn: &mut diesel::PgConnection,
    emails: &[&str],
    source: &str,
    destination: &str,
) -> Result<State, StoreError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Nullable<BigInt>)]
        id: Option<i64>,
        #[diesel(sql_type = Text)]
        email: String,
        #[diesel(sql_type = Nullable<Text>)]
        esp_id: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        first_name: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        name: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        status: Option<String>,
        #[diesel(sql_type = Nullable<BigInt>)]
        created_at: Option<i64>,
        #[diesel(sql_type = Nullable<BigInt>)]
        updated_at: Option<i64>,
        #[diesel(sql_type = Nullable<Text>)]
        body_sha256: Option<String>,
        #[diesel(sql_type = Nullable<BigInt>)]
        received_at: Option<i64>,
        #[diesel(sql_type = Nullable<Bool>)]
        open_line: Option<bool>,
    }
    let rows: Vec<Row> = prepared(
        diesel::sql_query("SELECT * FROM ingest_state($1, $2, $3)")
            .bind::<Array<Text>, _>(emails)
            .bind::<Text, _>(source)
            .bind::<Text, _>(destination),
    )
    .load(conn)?;
    let mut state = State {
        subscribers: Vec::new(),
        latest: HashMap::with_capacity(emails.len()),
        open_lines: HashSet::new(),
    };
    for row in rows {
        let Some(id) = row.id else {
            if let (Some(hash), Some(at)) = (row.body_sha256, row.received_at) {
                state.latest.insert(row.email, (hash, at));
            }
            continue;
        };
        if row.open_line == Some(true) {
            state.open_lines.insert(id);
        }
        state.subscribers.push(Subscriber {
            id,
            email: row.email,
            esp_id: row.esp_id,
            first_name: row.first_name,
            name: row.name,
            status: row.status.unwrap_or_default(),
            created_at: row.created_at.unwrap_or_default(),
            updated_at: row.updated_at.unwrap_or_default(),
        });
    }
    Ok(state)
}

/// The 1-based place of a new subscriber, or of an event, that the function's arrays are
/// indexed by.
fn place(n: usize) -> i32 {
    // A batch holds at most a few thousand rows.
    n as i32 + 1
}

/// An inbox row of the batch.
pub struct Event<'a> {
    /// The row; its `subscriber_id` is set when the subscriber is stored already.
    pub row: NewInboundEvent<'a>,
    /// The place in the batch's new subscribers of the one it acted on, if new.
    pub new_subscriber: Option<usize>,
}

/// A job of the batch.
pub struct Job<'a> {
    /// Whom it is about.
    pub subscriber: Who,
    /// The inbox row it came from: its index in the batch's events.
    pub event: usize,
    /// What it does.
    pub kind: &'a str,
    /// The request body to send.
    pub payload: &'a str,
    /// When it was queued and is first due (unix ms).
    pub at: i64,
    /// Whether it heads its subscriber's line (pending), else it waits behind an open job.
    pub pending: bool,
}

/// Inserts `subscribers`, `events` and `jobs` for `destination` in one round trip (the
/// `ingest_batch` function). The caller holds the stored subscribers' row locks and decided
/// each job's place in its line under them (see [`super::jobs::insert_all`]).
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
    prepared(
        diesel::sql_query(
            "SELECT ingest_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
             $15, $16, $17, $18, $19, $20, $21, $22, $23, $24) AS n",
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
        .bind::<Array<Nullable<Integer>>, _>(column(events, |e| e.new_subscriber.map(place)))
        .bind::<Array<BigInt>, _>(column(events, |e| e.row.received_at))
        .bind::<Text, _>(destination)
        .bind::<Array<Nullable<BigInt>>, _>(column(jobs, |j| j.subscriber.stored_id()))
        .bind::<Array<Nullable<Integer>>, _>(column(jobs, |j| j.subscriber.new_place().map(place)))
        .bind::<Array<Integer>, _>(column(jobs, |j| place(j.event)))
        .bind::<Array<Text>, _>(column(jobs, |j| j.kind))
        .bind::<Array<Text>, _>(column(jobs, |j| j.payload))
        .bind::<Array<BigInt>, _>(column(jobs, |j| j.at))
        .bind::<Array<Bool>, _>(column(jobs, |j| j.pending)),
    )
    .get_result::<Count>(conn)?;
    Ok(())
}
