//! Accepting an inbound delivery: deduplicate it, store it, update the subscriber and queue the
//! outgoing job, all in one transaction, so that a 200 means all of it is on disk.

use std::time::Duration;

use referral_bridge_adapters::EspEvent;
use sha2::{Digest, Sha256};

use crate::db::batch::BatchWriter;
use crate::db::{inbox, jobs, subscribers, DbConnection, StoreError};
use crate::sparkloop;

/// What became of an accepted delivery.
///
/// Ordered by how much was done, so that a body with several events reports the most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Accepted {
    /// An event type the bridge does not act on: stored only.
    Ignored,
    /// A repeat of the subscriber's previous event within the dedupe window: stored, not acted on.
    Duplicate,
    /// Stored and acted on.
    Stored,
}

impl Accepted {
    /// The word used in responses and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Accepted::Stored => "stored",
            Accepted::Duplicate => "duplicate",
            Accepted::Ignored => "ignored",
        }
    }
}

/// Hex SHA-256 of a raw body, the dedupe key when the sender gives no event id.
pub fn body_hash(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The name of an event for the inbox: its type as the ESP would call it.
fn event_type(event: &EspEvent) -> &str {
    match event {
        EspEvent::Subscribed { .. } => "subscribe",
        EspEvent::Updated { .. } => "update",
        EspEvent::Unsubscribed { .. } => "unsubscribe",
        EspEvent::Ignored { event_type } => event_type,
    }
}

/// Records one ESP event delivered in `body`. Run inside [`crate::db::Db::write`].
pub fn record_esp_event(
    conn: &mut DbConnection,
    event: &EspEvent,
    body: &str,
    hash: &str,
    now: i64,
    dedupe_window: Duration,
) -> Result<Accepted, StoreError> {
    let subject = event.subject().map(|email| email.as_str());
    let mut new_event = inbox::NewInboundEvent {
        source: "esp",
        event_type: event_type(event),
        subject,
        body_sha256: hash,
        body,
        outcome: inbox::PROCESSED,
        subscriber_id: None,
        received_at: now,
    };
    if let Some(subject) = subject {
        if let Some((previous_hash, previous_at)) = inbox::latest_for_subject(conn, "esp", subject)?
        {
            if previous_hash == hash && now - previous_at <= dedupe_window.as_millis() as i64 {
                // Stored all the same: the window runs from the latest copy seen.
                new_event.outcome = inbox::DUPLICATE;
                inbox::insert(conn, &new_event)?;
                return Ok(Accepted::Duplicate);
            }
        }
    }
    let Some(subscriber_id) = subscribers::apply_esp_event(conn, event, now)? else {
        new_event.outcome = inbox::IGNORED;
        inbox::insert(conn, &new_event)?;
        return Ok(Accepted::Ignored);
    };
    new_event.subscriber_id = Some(subscriber_id);
    let event_id = inbox::insert(conn, &new_event)?;
    if let Some((kind, payload)) = sparkloop::webhook_payload(event) {
        jobs::insert(
            conn,
            &jobs::NewJob {
                subscriber_id,
                destination: sparkloop::DESTINATION,
                kind,
                payload: &payload,
                created_at: now,
                retry_from: now,
                run_at: now,
                inbound_event_id: Some(event_id),
            },
        )?;
    }
    Ok(Accepted::Stored)
}

/// One delivery waiting to be written.
pub struct Delivery {
    /// Its events, parsed.
    pub events: Vec<EspEvent>,
    /// The raw body.
    pub body: String,
    /// [`body_hash`] of the body.
    pub hash: String,
    /// When it arrived (unix ms).
    pub now: i64,
}

/// Writes inbound deliveries in batched transactions; see [`crate::db::batch`].
pub type IngestQueue = BatchWriter<Delivery, Accepted>;

/// Starts the ingest writers: `writers` threads (1 for SQLite), room for `capacity` deliveries.
pub fn start_ingest(
    db: crate::db::Db,
    dedupe_window: Duration,
    writers: usize,
    capacity: usize,
) -> IngestQueue {
    BatchWriter::start(
        "ingest-writer",
        db,
        writers,
        capacity,
        move |conn, delivery| record_delivery(conn, delivery, dedupe_window),
    )
}

/// Records every event of one delivery; the answer is the most that was done for any of them.
fn record_delivery(
    conn: &mut DbConnection,
    pending: &Delivery,
    window: Duration,
) -> Result<Accepted, StoreError> {
    let mut overall = Accepted::Ignored;
    for event in &pending.events {
        let accepted = record_esp_event(
            conn,
            event,
            &pending.body,
            &pending.hash,
            pending.now,
            window,
        )?;
        overall = overall.max(accepted);
    }
    Ok(overall)
}
