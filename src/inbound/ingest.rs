//! Accepting an inbound delivery: deduplicate it, store it, update the subscriber and queue the
//! outgoing job, all in one transaction, so that a 200 means all of it is on disk.

use referral_bridge_adapters::platform::{deletion_payload, DELETE};
use std::collections::HashSet;
use std::time::Duration;

use referral_bridge_adapters::EspEvent;
use sha2::{Digest, Sha256};

use crate::db::batch::BatchWriter;
use crate::db::ingest::{insert_batch, lock_and_read, Event, Job};
use crate::db::jobs::JobStatus;
use crate::db::working::{Slot, Who, Working};
use crate::db::{inbox, jobs, DbConnection, StoreError};
use crate::peers::Forwarding;

/// What became of an accepted delivery.
///
/// Ordered by how much was done, so that a body with several events reports the most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Accepted {
    /// An event type the bridge does not act on: stored only.
    Ignored,
    /// A repeat of the subscriber's previous event within the dedupe window: stored, not acted on.
    Duplicate,
    /// Stored; it says what the bridge already knew (the echo of its own write, a repeat of a
    /// profile), so nothing is sent.
    Unchanged,
    /// Stored and acted on.
    Stored,
}

impl Accepted {
    /// The word used in responses and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Accepted::Stored => "stored",
            Accepted::Duplicate => "duplicate",
            Accepted::Unchanged => "unchanged",
            Accepted::Ignored => "ignored",
        }
    }
}

/// `inbound_events.source` of ESP webhooks.
const SOURCE: &str = "esp";

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
        EspEvent::Deleted { .. } => "delete",
        EspEvent::Ignored { event_type } => event_type,
    }
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
    forwarding: Forwarding,
    writers: usize,
    capacity: usize,
) -> IngestQueue {
    BatchWriter::start(
        "ingest-writer",
        db,
        writers,
        capacity,
        move |conn, deliveries| record_deliveries(conn, deliveries, dedupe_window, forwarding),
    )
}

/// One event's inbox row, before the ids it refers to are known.
struct Recorded<'a> {
    event: &'a EspEvent,
    delivery: &'a Delivery,
    outcome: &'static str,
    subscriber: Option<Slot>,
}

impl<'a> Recorded<'a> {
    /// The row to store, about subscriber `subscriber_id` once it is known.
    fn inbox_row(&self, subscriber_id: Option<i64>) -> inbox::NewInboundEvent<'a> {
        inbox::NewInboundEvent {
            source: SOURCE,
            event_type: event_type(self.event),
            subject: self.event.subject().map(|email| email.as_str()),
            body_sha256: &self.delivery.hash,
            body: &self.delivery.body,
            outcome: self.outcome,
            subscriber_id,
            received_at: self.delivery.now,
            idempotency_key: None,
        }
    }
}

/// Records a batch of deliveries in the caller's transaction and answers, for each delivery, the
/// most that was done for any of its events.
///
/// The events are decided in arrival order against state loaded up front (the subscribers they
/// name, the latest inbox entry of each address) and kept up to date in memory, then written
/// with a handful of statements whatever the batch size: the updated subscribers, then on SQLite
/// one insert of new subscribers, one look-up of their lines, one insert of inbox rows, one of
/// jobs. On Postgres the lines are read up front with the latest inbox entries ([`lock_and_read`])
/// and the three inserts are one call ([`write_on_postgres`]).
fn record_deliveries(
    conn: &mut DbConnection,
    deliveries: &[&Delivery],
    window: Duration,
    forwarding: Forwarding,
) -> Result<Vec<Accepted>, StoreError> {
    let events = || {
        deliveries
            .iter()
            .flat_map(|delivery| delivery.events.iter().map(move |event| (*delivery, event)))
    };
    let mut addresses: Vec<&str> = events()
        .flat_map(|(_, event)| {
            let previous = match event {
                EspEvent::Updated { previous_email, .. } => previous_email.as_ref(),
                _ => None,
            };
            event.subject().into_iter().chain(previous)
        })
        .map(|email| email.as_str())
        .collect();
    addresses.sort_unstable();
    addresses.dedup();
    // Subscribers first, locked on Postgres, so that the latest inbox entries read next include
    // whatever a concurrent batch about the same people committed while we waited. Postgres
    // reads the stored subscribers' lines there too, all in one round trip.
    let (mut working, mut latest, open_lines) = match conn {
        DbConnection::Postgres(c) => {
            let state = lock_and_read(c, &addresses, SOURCE, forwarding.destination)?;
            let working = Working::stored(state.subscribers);
            (working, state.latest, Some(state.open_lines))
        }
        DbConnection::Sqlite(_) => {
            let working = Working::load(conn, &addresses)?;
            let latest = inbox::latest_for_subjects(conn, SOURCE, &addresses)?;
            (working, latest, None)
        }
    };

    let mut recorded = Vec::new();
    let mut answers = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let mut overall = Accepted::Ignored;
        for event in &delivery.events {
            let subject = event.subject().map(|email| email.as_str());
            let mut row = Recorded {
                event,
                delivery,
                outcome: inbox::IGNORED,
                subscriber: None,
            };
            let accepted = if subject.is_some_and(|subject| {
                latest.get(subject).is_some_and(|(hash, at)| {
                    *hash == delivery.hash && delivery.now - at <= crate::config::millis(window)
                })
            }) {
                row.outcome = inbox::DUPLICATE;
                Accepted::Duplicate
            } else if let Some((slot, news)) = working.apply(event, delivery.now) {
                row.subscriber = Some(slot);
                if news {
                    row.outcome = inbox::PROCESSED;
                    Accepted::Stored
                } else {
                    row.outcome = inbox::UNCHANGED;
                    Accepted::Unchanged
                }
            } else {
                Accepted::Ignored
            };
            if let Some(subject) = subject {
                // Duplicates included: the window runs from the latest copy seen.
                latest.insert(subject.to_string(), (delivery.hash.clone(), delivery.now));
            }
            recorded.push(row);
            overall = overall.max(accepted);
        }
        answers.push(overall);
    }

    // The jobs to queue, by the index of the row they come from.
    let queued: Vec<(usize, Slot, &'static str, String)> = recorded
        .iter()
        .enumerate()
        .filter(|(_, row)| row.outcome == inbox::PROCESSED)
        .flat_map(|(n, row)| {
            let Some(slot) = row.subscriber else {
                return Vec::new();
            };
            let mut queued: Vec<_> =
                referral_bridge_adapters::sparkloop::webhook_payload(row.event)
                    .filter(|(kind, _)| forwarding.forwards(kind))
                    .map(|(kind, payload)| (n, slot, kind, payload))
                    .into_iter()
                    .collect();
            // BRIDGE_ERASE_ON_DELETE: the platform's deletion follows the departure in the
            // line, and the erasure here follows it.
            if let EspEvent::Deleted { email } = row.event {
                if forwarding.forwards(DELETE) {
                    let payload = deletion_payload(email.as_str(), None);
                    queued.push((n, slot, DELETE, payload));
                }
            }
            queued
        })
        .collect();

    if let Some(open_lines) = open_lines {
        working.save_changed(conn)?;
        let DbConnection::Postgres(c) = conn else {
            unreachable!("lines are read up front on Postgres only")
        };
        let destination = forwarding.destination;
        write_on_postgres(c, &working, &recorded, &queued, open_lines, destination)?;
        return Ok(answers);
    }

    let mut stored_subscribers: Vec<i64> = recorded
        .iter()
        .filter_map(|row| row.subscriber.and_then(|slot| working.stored_id(slot)))
        .collect();
    stored_subscribers.sort_unstable();
    stored_subscribers.dedup();
    let ids = working.save(conn)?;
    // The subscribers' rows are locked (by `Working::load`), so that no line changes under us.
    let mut open_lines = jobs::open_lines(conn, &stored_subscribers, forwarding.destination)?;

    let rows: Vec<inbox::NewInboundEvent<'_>> = recorded
        .iter()
        .map(|row| row.inbox_row(row.subscriber.map(|slot| ids.of(slot))))
        .collect();
    let event_ids = inbox::insert_all(conn, &rows)?;

    let new_jobs: Vec<(jobs::NewJob<'_>, JobStatus)> = queued
        .iter()
        .map(|(n, slot, kind, payload)| {
            let subscriber_id = ids.of(*slot);
            let now = recorded[*n].delivery.now;
            let status = jobs::place_in_line(&mut open_lines, subscriber_id);
            let job = jobs::NewJob {
                subscriber_id,
                destination: forwarding.destination,
                kind,
                payload,
                created_at: now,
                retry_from: now,
                run_at: now,
                inbound_event_id: Some(event_ids[*n]),
            };
            (job, status)
        })
        .collect();
    jobs::insert_all(conn, &new_jobs)?;
    Ok(answers)
}

/// The rest of [`record_deliveries`] on Postgres: the new subscribers, the inbox rows and the
/// jobs in one round trip ([`insert_batch`]), so that a batch costs four in all (`BEGIN`,
/// [`lock_and_read`], this, `COMMIT`) when no stored subscriber changed. `open_lines` are the
/// stored subscribers whose line to `destination` holds an open job, read under their locks.
fn write_on_postgres(
    conn: &mut diesel::PgConnection,
    working: &Working,
    recorded: &[Recorded<'_>],
    queued: &[(usize, Slot, &'static str, String)],
    mut open_lines: HashSet<i64>,
    destination: &str,
) -> Result<(), StoreError> {
    let events: Vec<Event<'_>> = recorded
        .iter()
        .map(|row| {
            let who = row.subscriber.map(|slot| working.who(slot));
            Event {
                row: row.inbox_row(who.and_then(Who::stored_id)),
                new_subscriber: who.and_then(Who::new_place),
            }
        })
        .collect();
    // New subscribers have no line yet; a batch's first job for anyone heads theirs if it is
    // empty, and their later jobs wait behind it.
    let mut new_lines = HashSet::new();
    let jobs: Vec<Job<'_>> = queued
        .iter()
        .map(|(n, slot, kind, payload)| {
            let subscriber = working.who(*slot);
            let status = match subscriber {
                Who::Stored(id) => jobs::place_in_line(&mut open_lines, id),
                Who::New(place) => jobs::place_in_line(&mut new_lines, place as i64),
            };
            Job {
                subscriber,
                event: *n,
                kind,
                payload,
                at: recorded[*n].delivery.now,
                pending: status == JobStatus::Pending,
            }
        })
        .collect();
    insert_batch(conn, &working.new_records(), &events, &jobs, destination)
}

#[cfg(test)]
mod tests {
    use diesel::prelude::*;
    use referral_bridge_adapters::custom::parse_event;
    use serde_json::json;

    use super::*;
    use crate::db::test_db::{at_once, TestDb};
    use crate::db::Db;

    fn delivery(body: serde_json::Value, now: i64) -> Delivery {
        let body = body.to_string();
        Delivery {
            events: vec![parse_event(body.as_bytes()).unwrap()],
            hash: body_hash(body.as_bytes()),
            body,
            now,
        }
    }

    /// A sequence that exercises every decision a batch makes in memory: repeats, an email
    /// change, an unsubscribe of the changed address, an address taken over after it was freed,
    /// a subscriber who already has an open job, an ignored type.
    fn sequence() -> Vec<Delivery> {
        let sub = |email: &str, id: i64| json!({"type": "subscribe", "subscriber": {"email": email, "id": id}});
        vec![
            delivery(sub("a@example.com", 1), 1_000),
            delivery(sub("a@example.com", 1), 1_001),
            delivery(
                json!({"type": "update", "subscriber": {"email": "b@example.com",
                    "previous_email": "a@example.com", "first_name": "Bea"}}),
                1_002,
            ),
            delivery(sub("c@example.com", 3), 1_003),
            delivery(
                json!({"type": "unsubscribe", "subscriber": {"email": "b@example.com"}}),
                1_004,
            ),
            delivery(sub("a@example.com", 4), 1_005),
            delivery(json!({"type": "tagged", "subscriber": {}}), 1_006),
            delivery(sub("old@example.com", 9), 1_007),
            delivery(sub("a@example.com", 1), 1_008),
        ]
    }

    /// Every table as (email-keyed) text, ids replaced by what they point at.
    fn dump(db: &Db) -> Vec<String> {
        let mut conn = db.conn().unwrap();
        let conn = &mut **conn;
        use crate::db::schema::{inbound_events as ie, jobs as j, subscribers as s};
        let mut lines: Vec<String> = s::table
            .select((s::email, s::esp_id, s::first_name, s::status))
            .order(s::email)
            .load::<(String, Option<String>, Option<String>, String)>(conn)
            .unwrap()
            .into_iter()
            .map(|row| format!("subscriber {row:?}"))
            .collect();
        let emails = |conn: &mut DbConnection, id: Option<i64>| -> Option<String> {
            s::table.find(id?).select(s::email).first(conn).ok()
        };
        type EventRow = (i64, String, Option<String>, String, Option<i64>);
        let events: Vec<EventRow> = ie::table
            .select((
                ie::id,
                ie::event_type,
                ie::subject,
                ie::outcome,
                ie::subscriber_id,
            ))
            .order(ie::id)
            .load(conn)
            .unwrap();
        let event_ids: Vec<i64> = events.iter().map(|e| e.0).collect();
        for (_, kind, subject, outcome, subscriber) in events {
            let who = emails(conn, subscriber);
            lines.push(format!("event {kind} {subject:?} {outcome} {who:?}"));
        }
        let jobs: Vec<(i64, String, String, Option<i64>)> = j::table
            .select((j::subscriber_id, j::kind, j::status, j::inbound_event_id))
            .order(j::id)
            .load(conn)
            .unwrap();
        for (subscriber, kind, status, event) in jobs {
            let who = emails(conn, Some(subscriber));
            let from = event.and_then(|e| event_ids.iter().position(|id| *id == e));
            lines.push(format!("job {who:?} {kind} {status} from event #{from:?}"));
        }
        lines
    }

    fn write(db: &Db, deliveries: &[&Delivery]) -> Vec<Accepted> {
        db.write(|conn| {
            record_deliveries(
                conn,
                deliveries,
                Duration::from_secs(3600),
                Forwarding::sparkloop(),
            )
        })
        .unwrap()
    }

    /// [`at_once`] for one delivery each.
    fn both_at_once(db: &Db, first: &Delivery, second: &Delivery) -> (Accepted, Accepted) {
        let record = |delivery: &Delivery, conn: &mut DbConnection| {
            let forwarding = Forwarding::sparkloop();
            let window = Duration::from_secs(3600);
            Ok(record_deliveries(conn, &[delivery], window, forwarding)?[0])
        };
        at_once(db, |conn| record(first, conn), |conn| record(second, conn))
    }

    const ANN: &str = "ann@example.com";

    /// A database where ANN has subscribed.
    fn with_ann() -> TestDb {
        let test = TestDb::default();
        let join = json!({"type": "subscribe", "subscriber": {"email": ANN}});
        write(&test.db, &[&delivery(join, 1)]);
        test
    }

    /// Two batches about one subscriber at once (two writers, or two instances on one Postgres):
    /// the later decides on what the earlier committed, rather than writing back the record as
    /// it read it before and undoing the earlier change.
    #[test]
    fn concurrent_batches_about_one_subscriber_keep_both_changes() {
        let test = with_ann();
        let rename = json!({"type": "update", "subscriber": {"email": ANN, "first_name": "Ann"}});
        let leave = json!({"type": "unsubscribe", "subscriber": {"email": ANN}});
        let answers = both_at_once(&test.db, &delivery(rename, 2), &delivery(leave, 3));
        assert_eq!(answers, (Accepted::Stored, Accepted::Stored));

        let found = test
            .db
            .read(|conn| crate::db::subscribers::find_by_emails(conn, &[ANN]))
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].first_name.as_deref(), Some("Ann"), "{found:?}");
        assert_eq!(found[0].status, "unsubscribed", "{found:?}");
    }

    /// Two batches at once about a subscriber whose line is empty: the later reads the line
    /// after the earlier committed, so its job waits behind the earlier's instead of heading the
    /// line beside it (two jobs at once for one person, out of order).
    #[test]
    fn concurrent_batches_about_one_subscriber_queue_one_line() {
        let test = with_ann();
        {
            use crate::db::schema::jobs::dsl::{jobs, status};
            let mut conn = test.db.conn().unwrap();
            diesel::update(jobs)
                .set(status.eq("done"))
                .execute(&mut **conn)
                .unwrap();
        }
        let rename = json!({"type": "update", "subscriber": {"email": ANN, "first_name": "Ann"}});
        let leave = json!({"type": "unsubscribe", "subscriber": {"email": ANN}});
        let answers = both_at_once(&test.db, &delivery(rename, 2), &delivery(leave, 3));
        assert_eq!(answers, (Accepted::Stored, Accepted::Stored));
        let lines = dump(&test.db);
        let queued: Vec<&String> = lines
            .iter()
            .filter(|l| l.starts_with("job") && !l.contains(" done "))
            .collect();
        assert_eq!(
            queued,
            [
                r#"job Some("ann@example.com") update pending from event #Some(1)"#,
                r#"job Some("ann@example.com") unsubscribe waiting from event #Some(2)"#,
            ],
            "{lines:#?}"
        );
    }

    /// The same delivery in two batches at once (an ESP retrying while its first try is still
    /// being written) is acted on once.
    #[test]
    fn a_repeat_written_at_once_is_a_duplicate() {
        let test = with_ann();
        let leave = json!({"type": "unsubscribe", "subscriber": {"email": ANN}});
        let answers = both_at_once(&test.db, &delivery(leave.clone(), 2), &delivery(leave, 3));
        assert_eq!(answers, (Accepted::Stored, Accepted::Duplicate));
    }

    #[test]
    fn a_batch_stores_exactly_what_one_by_one_would() {
        let deliveries = sequence();
        let all: Vec<&Delivery> = deliveries.iter().collect();
        let (one, batch) = (TestDb::default(), TestDb::default());
        let (one, batch) = (&one.db, &batch.db);
        // A subscriber with a job already open, before either run.
        for db in [one, batch] {
            let old = delivery(
                json!({"type": "subscribe", "subscriber": {"email": "old@example.com"}}),
                1,
            );
            write(db, &[&old]);
        }

        let one_by_one: Vec<Accepted> = all.iter().flat_map(|d| write(one, &[*d])).collect();
        let batched = write(batch, &all);

        use Accepted::*;
        let expected = [
            Stored, Duplicate, Stored, Stored, Stored, Stored, Ignored, Stored, Stored,
        ];
        assert_eq!(one_by_one, expected);
        assert_eq!(batched, expected);
        let (one, batch) = (dump(one), dump(batch));
        assert_eq!(one, batch);
        // Spot checks of what both produced.
        let expected_lines = [
            r#"subscriber ("a@example.com", Some("1"), None, "subscribed")"#,
            r#"subscriber ("b@example.com", Some("1"), Some("Bea"), "unsubscribed")"#,
            r#"event subscribe Some("a@example.com") duplicate None"#,
            r#"job Some("b@example.com") subscribe pending from event #Some(1)"#,
            r#"job Some("b@example.com") update waiting from event #Some(3)"#,
            r#"job Some("old@example.com") subscribe waiting from event #Some(8)"#,
            r#"event tagged None ignored None"#,
        ];
        for line in expected_lines {
            assert!(
                batch.iter().any(|l| l == line),
                "{line} missing from {batch:#?}"
            );
        }
    }
}
