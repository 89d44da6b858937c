//! Accepting an inbound delivery: deduplicate it, store it, update the subscriber and queue the
//! outgoing job, all in one transaction, so that a 200 means all of it is on disk.

use std::time::Duration;

use referral_bridge_adapters::EspEvent;
use sha2::{Digest, Sha256};

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
                status: jobs::JobStatus::Pending.as_str(), // decided by jobs::insert
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
struct Pending {
    events: Vec<EspEvent>,
    body: String,
    hash: String,
    now: i64,
    reply: tokio::sync::oneshot::Sender<Result<Accepted, StoreError>>,
}

/// Why a delivery could not be handed to the writers.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Too many deliveries are waiting to be written: the sender should retry.
    #[error("too many deliveries are waiting to be written")]
    Full,
    /// The writers are gone (the process is stopping).
    #[error("the bridge is stopping")]
    Closed,
    /// The write failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Writes inbound deliveries in batches: whatever arrived while the previous transaction ran is
/// committed together, so that many concurrent webhooks cost one commit (one fsync on Postgres,
/// one turn at SQLite's single writer) instead of one each. Each delivery is still answered only
/// after its own data is committed. Should a batch fail, its deliveries are written again one by
/// one, so that one bad delivery cannot fail the others.
#[derive(Clone)]
pub struct IngestQueue {
    sender: std::sync::mpsc::SyncSender<Pending>,
}

/// The most deliveries written in one transaction.
const BATCH: usize = 128;

impl IngestQueue {
    /// Starts `writers` writer threads on `db` (use 1 for SQLite, which has one writer anyway)
    /// with room for `capacity` waiting deliveries.
    pub fn start(
        db: crate::db::Db,
        dedupe_window: Duration,
        writers: usize,
        capacity: usize,
    ) -> IngestQueue {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Pending>(capacity);
        let receiver = std::sync::Arc::new(std::sync::Mutex::new(receiver));
        for n in 0..writers.max(1) {
            let (db, receiver) = (db.clone(), receiver.clone());
            std::thread::Builder::new()
                .name(format!("ingest-writer-{n}"))
                .spawn(move || write_batches(&db, &receiver, dedupe_window))
                .expect("cannot start an ingest writer thread");
        }
        IngestQueue { sender }
    }

    /// Records the events of one delivery and answers once they are committed.
    pub async fn record(
        &self,
        events: Vec<EspEvent>,
        body: String,
        hash: String,
        now: i64,
    ) -> Result<Accepted, QueueError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let pending = Pending {
            events,
            body,
            hash,
            now,
            reply,
        };
        self.sender.try_send(pending).map_err(|e| match e {
            std::sync::mpsc::TrySendError::Full(_) => QueueError::Full,
            std::sync::mpsc::TrySendError::Disconnected(_) => QueueError::Closed,
        })?;
        Ok(answer.await.map_err(|_| QueueError::Closed)??)
    }
}

fn write_batches(
    db: &crate::db::Db,
    receiver: &std::sync::Mutex<std::sync::mpsc::Receiver<Pending>>,
    window: Duration,
) {
    loop {
        let mut batch = {
            let receiver = receiver.lock().unwrap_or_else(|p| p.into_inner());
            let Ok(first) = receiver.recv() else {
                return; // every sender is gone: the application has stopped
            };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match receiver.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            batch
        };
        let written = db.write(|conn| {
            batch
                .iter()
                .map(|p| record_delivery(conn, p, window))
                .collect::<Result<Vec<_>, _>>()
        });
        match written {
            Ok(results) => {
                for (pending, result) in batch.into_iter().zip(results) {
                    let _ = pending.reply.send(Ok(result));
                }
            }
            Err(e) if batch.len() == 1 => {
                let _ = batch.remove(0).reply.send(Err(e));
            }
            Err(_) => {
                for pending in batch {
                    let result = db.write(|conn| record_delivery(conn, &pending, window));
                    let _ = pending.reply.send(result);
                }
            }
        }
    }
}

/// Records every event of one delivery; the answer is the most that was done for any of them.
fn record_delivery(
    conn: &mut DbConnection,
    pending: &Pending,
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
