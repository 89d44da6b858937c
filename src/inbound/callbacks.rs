//! Accepting a referral platform's callback: deduplicate it, store it, bring the people it names
//! up to date, record a redemption, and queue one coalesced ESP field write per person, all in
//! one transaction, so that a 200 means all of it is on disk.

use std::time::Duration;

use referral_bridge_adapters::platform::Callback;

use crate::db::batch::BatchWriter;
use crate::db::{inbox, jobs, redemptions, referral, subscribers, DbConnection, StoreError};
use crate::fields;
use crate::inbound::ingest::Accepted;

/// One callback waiting to be written.
pub struct CallbackDelivery {
    /// The platform (`sparkloop`), also the inbox's `source`.
    pub platform: &'static str,
    /// The callback, parsed.
    pub callback: Callback,
    /// The raw body.
    pub body: String,
    /// [`crate::inbound::ingest::body_hash`] of the body.
    pub hash: String,
    /// When it arrived (unix ms).
    pub now: i64,
}

/// Writes callbacks in batched transactions; see [`crate::db::batch`].
pub type CallbackQueue = BatchWriter<CallbackDelivery, Accepted>;

/// How callbacks are recorded.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// `DEDUPE_WINDOW`.
    pub dedupe_window: Duration,
    /// `ESP_WRITE_DELAY`: a new field write is due this long after the change that queued it.
    pub write_delay: Duration,
}

/// Starts the callback writers: `writers` threads (1 for SQLite), room for `capacity` callbacks.
pub fn start(db: crate::db::Db, rules: Rules, writers: usize, capacity: usize) -> CallbackQueue {
    BatchWriter::start(
        "callback-writer",
        db,
        writers,
        capacity,
        move |conn, batch: &[&CallbackDelivery]| record_batch(conn, batch, rules),
    )
}

/// Records a batch of callbacks in the caller's transaction, one by one, after locking on
/// Postgres everyone they name (in id order, see [`subscribers::lock_by_emails`]): a writer
/// given the same callback at the same moment then waits, and finds this one's inbox entry.
fn record_batch(
    conn: &mut DbConnection,
    batch: &[&CallbackDelivery],
    rules: Rules,
) -> Result<Vec<Accepted>, StoreError> {
    // SQLite has one writer at a time: nothing to lock.
    if let DbConnection::Postgres(_) = conn {
        let mut emails: Vec<&str> = batch
            .iter()
            .flat_map(|delivery| &delivery.callback.people)
            .map(|person| person.email.as_str())
            .collect();
        emails.sort_unstable();
        emails.dedup();
        // Read for its row locks only; `record` reads each person as it goes.
        subscribers::lock_by_emails(conn, &emails)?;
    }
    batch
        .iter()
        .map(|delivery| record(conn, delivery, rules))
        .collect()
}

/// Records one callback. A repeat of the main subject's previous callback within the window is
/// stored as a duplicate and not acted on.
pub fn record(
    conn: &mut DbConnection,
    delivery: &CallbackDelivery,
    rules: Rules,
) -> Result<Accepted, StoreError> {
    let window = rules.dedupe_window;
    let callback = &delivery.callback;
    let subject = callback.subject().map(|email| email.as_str());
    let mut row = inbox::NewInboundEvent {
        source: delivery.platform,
        event_type: &callback.event_type,
        subject,
        body_sha256: &delivery.hash,
        body: &delivery.body,
        outcome: inbox::IGNORED,
        subscriber_id: None,
        received_at: delivery.now,
        idempotency_key: None,
    };
    if let Some(key) = &callback.idempotency_key {
        if inbox::key_seen(conn, delivery.platform, key)? {
            row.outcome = inbox::DUPLICATE;
            inbox::insert_all(conn, &[row])?;
            return Ok(Accepted::Duplicate);
        }
    }
    if let Some(subject) = subject {
        let latest = inbox::latest_for_subjects(conn, delivery.platform, &[subject])?;
        if latest.get(subject).is_some_and(|(hash, at)| {
            *hash == delivery.hash && delivery.now - at <= crate::config::millis(window)
        }) {
            row.outcome = inbox::DUPLICATE;
            inbox::insert_all(conn, &[row])?;
            return Ok(Accepted::Duplicate);
        }
    }
    if callback.is_ignored() {
        inbox::insert_all(conn, &[row])?;
        return Ok(Accepted::Ignored);
    }
    let ids = callback
        .people
        .iter()
        .map(|person| referral::apply_referral(conn, person, delivery.now))
        .collect::<Result<Vec<i64>, _>>()?;
    row.outcome = inbox::PROCESSED;
    // Only the event that acted holds the key: the unique index then refuses a second one
    // written at the same moment by another writer, which the platform retries and finds here.
    row.idempotency_key = callback.idempotency_key.as_deref();
    row.subscriber_id = ids.first().copied();
    let event_id = inbox::insert_all(conn, &[row])?[0];
    if let (Some(redemption), Some(&subscriber_id)) = (&callback.redemption, ids.first()) {
        redemptions::insert(
            conn,
            &redemptions::NewRedemption {
                subscriber_id,
                reward_id: redemption.reward_id.as_deref(),
                reward_name: redemption.reward_name.as_deref(),
                variant_name: redemption.variant_name.as_deref(),
                variant_sku: redemption.variant_sku.as_deref(),
                coupon: redemption.coupon.as_deref(),
                shipping_details: redemption.shipping_details.as_ref().map(|v| v.to_string()),
                inbound_event_id: Some(event_id),
                redeemed_at: delivery.now,
            },
        )?;
    }
    for id in ids {
        jobs::queue_coalesced(
            conn,
            id,
            fields::DESTINATION,
            fields::KIND,
            delivery.now,
            delivery.now + crate::config::millis(rules.write_delay),
            Some(event_id),
        )?;
    }
    Ok(Accepted::Stored)
}

#[cfg(test)]
mod tests {
    use referral_bridge_adapters::sparkloop::parse_callback;

    use super::*;
    use crate::db::test_db::{at_once, TestDb};

    fn delivery(body: &str, now: i64) -> CallbackDelivery {
        CallbackDelivery {
            platform: "sparkloop",
            callback: parse_callback(body.as_bytes()).unwrap(),
            body: body.to_string(),
            hash: crate::inbound::ingest::body_hash(body.as_bytes()),
            now,
        }
    }

    /// The same callback given to two writers at once (the platform retrying while its first
    /// try is still being written) is acted on once.
    #[test]
    fn a_repeat_written_at_once_is_a_duplicate() {
        let test = TestDb::default();
        let rules = Rules {
            dedupe_window: Duration::from_secs(3600),
            write_delay: Duration::from_secs(1),
        };
        let body = |count: u32| {
            format!(
                r#"{{"type":"sync_subscriber","subscriber":{{"id":"sub_1","email":"p@example.com","referral_code":"c1","tot_referrals":{count}}}}}"#
            )
        };
        // The person is known, as after their first callback.
        let first = delivery(&body(1), 1);
        test.db
            .write(|conn| record_batch(conn, &[&first], rules))
            .unwrap();

        let (again, retried) = (delivery(&body(2), 2), delivery(&body(2), 3));
        let answers = at_once(
            &test.db,
            |conn| Ok(record_batch(conn, &[&again], rules)?[0]),
            |conn| Ok(record_batch(conn, &[&retried], rules)?[0]),
        );
        assert_eq!(answers, (Accepted::Stored, Accepted::Duplicate));
    }
}
