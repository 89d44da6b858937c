//! Accepting a referral platform's callback: deduplicate it, store it, bring the people it names
//! up to date, record a redemption, and queue one coalesced ESP field write per person, all in
//! one transaction, so that a 200 means all of it is on disk; a batch of callbacks in a handful
//! of statements, as the ESP side does.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use referral_bridge_adapters::platform::Callback;
use referral_bridge_adapters::Email;

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

/// What a callback of a batch turned out to be, before the ids its rows refer to are known.
struct Decided<'a> {
    delivery: &'a CallbackDelivery,
    accepted: Accepted,
}

/// Records a batch of callbacks in the caller's transaction, in a fixed number of statements
/// whatever its size, storing exactly what recording them one by one would.
///
/// On Postgres everyone they name is locked first (in id order, see
/// [`subscribers::lock_by_emails`]): a writer given the same callback at the same moment then
/// waits, and reads this one's inbox entry in the dedupe state loaded next. The callbacks are
/// then decided in arrival order against that state, kept up to date in memory (a repeat of the
/// main subject's previous callback within the window, or of a key already acted on, is stored
/// as a duplicate and not acted on), and written: the people, the inbox rows, any redemptions,
/// one coalesced ESP field write per person.
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
        // Read for its row locks only.
        subscribers::lock_by_emails(conn, &emails)?;
    }

    // The dedupe state, per platform (a batch usually holds one).
    let mut platforms: Vec<&'static str> = batch.iter().map(|delivery| delivery.platform).collect();
    platforms.sort_unstable();
    platforms.dedup();
    let mut keys_acted: HashSet<(&str, String)> = HashSet::new();
    let mut latest: HashMap<(&str, String), (String, i64)> = HashMap::new();
    for platform in platforms {
        let of_platform = || batch.iter().filter(move |d| d.platform == platform);
        let keys: Vec<&str> = of_platform()
            .filter_map(|d| d.callback.idempotency_key.as_deref())
            .collect();
        if !keys.is_empty() {
            keys_acted.extend(
                inbox::keys_seen(conn, platform, &keys)?
                    .into_iter()
                    .map(|key| (platform, key)),
            );
        }
        let mut subjects: Vec<&str> = of_platform()
            .filter_map(|d| d.callback.subject().map(|email| email.as_str()))
            .collect();
        subjects.sort_unstable();
        subjects.dedup();
        latest.extend(
            inbox::latest_for_subjects(conn, platform, &subjects)?
                .into_iter()
                .map(|(subject, seen)| ((platform, subject), seen)),
        );
    }

    let window = crate::config::millis(rules.dedupe_window);
    let decided: Vec<Decided<'_>> = batch
        .iter()
        .map(|delivery| {
            let callback = &delivery.callback;
            let subject = callback.subject().map(|email| email.as_str());
            let key = callback.idempotency_key.as_deref();
            let repeated_key =
                key.is_some_and(|key| keys_acted.contains(&(delivery.platform, key.to_string())));
            let repeated_body = subject.is_some_and(|subject| {
                latest
                    .get(&(delivery.platform, subject.to_string()))
                    .is_some_and(|(hash, at)| *hash == delivery.hash && delivery.now - at <= window)
            });
            let accepted = if repeated_key || repeated_body {
                Accepted::Duplicate
            } else if callback.is_ignored() {
                Accepted::Ignored
            } else {
                if let Some(key) = key {
                    keys_acted.insert((delivery.platform, key.to_string()));
                }
                Accepted::Stored
            };
            if let Some(subject) = subject {
                // Duplicates included: the window runs from the latest copy seen.
                latest.insert(
                    (delivery.platform, subject.to_string()),
                    (delivery.hash.clone(), delivery.now),
                );
            }
            Decided { delivery, accepted }
        })
        .collect();
    let acted = || {
        decided
            .iter()
            .filter(|d| d.accepted == Accepted::Stored)
            .map(|d| d.delivery)
    };

    let updates: Vec<_> = acted()
        .flat_map(|delivery| delivery.callback.people.iter().map(|p| (p, delivery.now)))
        .collect();
    let ids = referral::apply_referrals(conn, &updates)?;
    let id_of = |email: &Email| ids[email.as_str()];

    let rows: Vec<inbox::NewInboundEvent<'_>> = decided
        .iter()
        .map(|d| {
            let (delivery, stored) = (d.delivery, d.accepted == Accepted::Stored);
            let callback = &delivery.callback;
            inbox::NewInboundEvent {
                source: delivery.platform,
                event_type: &callback.event_type,
                subject: callback.subject().map(|email| email.as_str()),
                body_sha256: &delivery.hash,
                body: &delivery.body,
                outcome: match d.accepted {
                    Accepted::Stored => inbox::PROCESSED,
                    Accepted::Duplicate => inbox::DUPLICATE,
                    _ => inbox::IGNORED,
                },
                subscriber_id: callback.subject().filter(|_| stored).map(id_of),
                received_at: delivery.now,
                // Only the event that acted holds the key: the unique index then refuses a
                // second one written at the same moment by another writer, which the platform
                // retries and finds here.
                idempotency_key: callback.idempotency_key.as_deref().filter(|_| stored),
            }
        })
        .collect();
    let event_ids = inbox::insert_all(conn, &rows)?;

    let mut changes = Vec::new();
    for (d, event_id) in decided.iter().zip(event_ids) {
        if d.accepted != Accepted::Stored {
            continue;
        }
        let (delivery, callback) = (d.delivery, &d.delivery.callback);
        if let (Some(redemption), Some(subject)) = (&callback.redemption, callback.subject()) {
            redemptions::insert(
                conn,
                &redemptions::NewRedemption {
                    subscriber_id: id_of(subject),
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
        changes.extend(callback.people.iter().map(|person| jobs::Coalesced {
            subscriber_id: id_of(&person.email),
            now: delivery.now,
            run_at: delivery.now + crate::config::millis(rules.write_delay),
            inbound_event_id: Some(event_id),
        }));
    }
    jobs::queue_coalesced_all(conn, fields::DESTINATION, fields::KIND, &changes)?;
    Ok(decided.iter().map(|d| d.accepted).collect())
}

#[cfg(test)]
mod tests {
    use diesel::prelude::*;
    use referral_bridge_adapters::sparkloop::parse_callback;
    use serde_json::json;

    use super::*;
    use crate::db::test_db::{at_once, TestDb};
    use crate::db::Db;

    fn delivery(body: &str, now: i64) -> CallbackDelivery {
        CallbackDelivery {
            platform: "sparkloop",
            callback: parse_callback(body.as_bytes()).unwrap(),
            body: body.to_string(),
            hash: crate::inbound::ingest::body_hash(body.as_bytes()),
            now,
        }
    }

    const RULES: Rules = Rules {
        dedupe_window: Duration::from_secs(3600),
        write_delay: Duration::from_secs(1),
    };

    fn sync(email: &str, count: u32) -> String {
        json!({"type": "sync_subscriber", "subscriber": {"id": "s", "email": email,
            "referral_code": format!("code-{email}"), "tot_referrals": count}})
        .to_string()
    }

    /// A LoyaltySurf reward approved for `email`: the reward's id is the callback's key.
    fn reward(email: &str, created_at: u32, now: i64) -> CallbackDelivery {
        let body = json!({"event": "PARTICIPANT_REACHED_A_GOAL", "createdAt": created_at,
            "data": {"participant": {"id": "x9", "email": email, "loyaltyActionCount": 3},
                "reward": {"approved": true, "couponCode": "GIFT", "rewardId": "r1", "id": "k1"}}})
        .to_string();
        CallbackDelivery {
            platform: "loyaltysurf",
            callback: referral_bridge_adapters::loyaltysurf::parse_callback(body.as_bytes())
                .unwrap(),
            hash: crate::inbound::ingest::body_hash(body.as_bytes()),
            body,
            now,
        }
    }

    /// A sequence that exercises every decision a batch makes in memory: a repeat, a person
    /// named by several callbacks (as subject and as referrer), an ignored type, a redemption,
    /// a key acted on and then repeated in another body, people whose field write is running
    /// or still pending.
    fn sequence() -> Vec<CallbackDelivery> {
        vec![
            delivery(&sync("p@example.com", 1), 1_000),
            delivery(&sync("p@example.com", 1), 1_001),
            delivery(
                &json!({"type": "new_referral",
                    "subscriber": {"email": "r@example.com", "created_at": 77},
                    "referrer": {"email": "p@example.com", "tot_referrals": 2}})
                .to_string(),
                1_002,
            ),
            delivery(&sync("p@example.com", 3), 1_003),
            delivery(&json!({"type": "campaign_paused"}).to_string(), 1_004),
            delivery(
                &json!({"type": "reward_redeemed", "subscriber": {"email": "p@example.com"},
                    "reward": {"id": "rw_1", "name": "Mug"}, "coupon_code": "MUG1"})
                .to_string(),
                1_005,
            ),
            reward("l@example.com", 1, 1_006),
            reward("l@example.com", 2, 1_007),
            delivery(&sync("running@example.com", 5), 1_008),
            delivery(&sync("pending@example.com", 5), 1_009),
        ]
    }

    /// Every table the callbacks write, as text, ids replaced by what they point at.
    fn dump(db: &Db) -> Vec<String> {
        use crate::db::schema::subscribers as s;
        use crate::db::schema::{inbound_events as ie, jobs as j, redemptions as r};
        let mut conn = db.conn().unwrap();
        let conn = &mut **conn;
        let emails: HashMap<i64, String> = s::table
            .select((s::id, s::email))
            .load::<(i64, String)>(conn)
            .unwrap()
            .into_iter()
            .collect();
        type Person = (
            String,
            Option<String>,
            Option<i64>,
            Option<bool>,
            Option<i64>,
        );
        let people: Vec<Person> = s::table
            .select((
                s::email,
                s::referral_code,
                s::referral_count,
                s::referred,
                s::last_referral_at,
            ))
            .order(s::email)
            .load(conn)
            .unwrap();
        type Times = (String, i64, i64, Option<String>, Option<String>);
        let times: Vec<Times> = s::table
            .select((
                s::email,
                s::created_at,
                s::updated_at,
                s::last_reward,
                s::last_coupon,
            ))
            .order(s::email)
            .load(conn)
            .unwrap();
        let mut lines: Vec<String> = people.iter().map(|p| format!("subscriber {p:?}")).collect();
        lines.extend(times.iter().map(|t| format!("subscriber {t:?}")));
        type Event = (
            i64,
            String,
            String,
            Option<String>,
            String,
            Option<i64>,
            Option<String>,
        );
        let events: Vec<Event> = ie::table
            .select((
                ie::id,
                ie::source,
                ie::event_type,
                ie::subject,
                ie::outcome,
                ie::subscriber_id,
                ie::idempotency_key,
            ))
            .order(ie::id)
            .load(conn)
            .unwrap();
        for (id, source, kind, subject, outcome, who, key) in events {
            let who = who.map(|id| &emails[&id]);
            lines.push(format!(
                "event #{id} {source} {kind} {subject:?} {outcome} {who:?} {key:?}"
            ));
        }
        let jobs: Vec<(i64, String, String, i64, Option<i64>)> = j::table
            .select((
                j::subscriber_id,
                j::kind,
                j::status,
                j::run_at,
                j::inbound_event_id,
            ))
            .order(j::id)
            .load(conn)
            .unwrap();
        for (who, kind, status, run_at, event) in jobs {
            lines.push(format!(
                "job {} {kind} {status} at {run_at} from #{event:?}",
                emails[&who]
            ));
        }
        type Redeemed = (i64, Option<String>, Option<String>, Option<i64>);
        let redeemed: Vec<Redeemed> = r::table
            .select((
                r::subscriber_id,
                r::reward_id,
                r::coupon,
                r::inbound_event_id,
            ))
            .load(conn)
            .unwrap();
        for (who, reward, coupon, event) in redeemed {
            lines.push(format!(
                "redemption {} {reward:?} {coupon:?} from #{event:?}",
                emails[&who]
            ));
        }
        lines
    }

    fn write(db: &Db, batch: &[&CallbackDelivery]) -> Vec<Accepted> {
        db.write(|conn| record_batch(conn, batch, RULES)).unwrap()
    }

    #[test]
    fn a_batch_stores_exactly_what_one_by_one_would() {
        let deliveries = sequence();
        let all: Vec<&CallbackDelivery> = deliveries.iter().collect();
        let (one, batch) = (TestDb::default(), TestDb::default());
        let (one, batch) = (&one.db, &batch.db);
        // Before either run: one person's field write running, another's pending.
        for db in [one, batch] {
            write(db, &[&delivery(&sync("running@example.com", 4), 1)]);
            write(db, &[&delivery(&sync("pending@example.com", 4), 2)]);
            let mut conn = db.conn().unwrap();
            use crate::db::schema::jobs as j;
            diesel::update(j::table.filter(j::id.eq(1)))
                .set(j::status.eq("running"))
                .execute(&mut **conn)
                .unwrap();
        }

        let one_by_one: Vec<Accepted> = all.iter().flat_map(|d| write(one, &[*d])).collect();
        let batched = write(batch, &all);

        use Accepted::*;
        let expected = [
            Stored, Duplicate, Stored, Stored, Ignored, Stored, Stored, Duplicate, Stored, Stored,
        ];
        assert_eq!(one_by_one, expected);
        assert_eq!(batched, expected);
        let (one, batch) = (dump(one), dump(batch));
        assert_eq!(one, batch);
        let expected_lines = [
            r#"subscriber ("p@example.com", Some("code-p@example.com"), Some(3), None, Some(77))"#,
            r#"subscriber ("p@example.com", 1000, 1005, None, None)"#,
            r#"subscriber ("r@example.com", None, None, Some(true), None)"#,
            r#"event #4 sparkloop sync_subscriber Some("p@example.com") duplicate None None"#,
            r#"event #9 loyaltysurf PARTICIPANT_REACHED_A_GOAL Some("l@example.com") processed Some("l@example.com") Some("reward:k1")"#,
            r#"event #10 loyaltysurf PARTICIPANT_REACHED_A_GOAL Some("l@example.com") duplicate None None"#,
            r#"job p@example.com fields pending at 2000 from #Some(3)"#,
            r#"job r@example.com fields pending at 2002 from #Some(5)"#,
            r#"job running@example.com fields waiting at 2008 from #Some(11)"#,
            r#"redemption p@example.com Some("rw_1") Some("MUG1") from #Some(8)"#,
        ];
        for line in expected_lines {
            assert!(
                batch.iter().any(|l| l == line),
                "{line} missing from {batch:#?}"
            );
        }
        // The pending write stands for the later change: no second job.
        let pending = batch
            .iter()
            .filter(|l| l.starts_with("job pending@"))
            .count();
        assert_eq!(pending, 1, "{batch:#?}");
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
