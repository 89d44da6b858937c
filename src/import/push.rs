//! `deliveries push-unpushed`: those `import --no-push` recorded, queued for the platform.

use referral_bridge_adapters::EspEvent;

use crate::db::jobs::{self, JobStatus};
use crate::db::subscribers::{self, ImportedPerson};
use crate::db::{DbConnection, StoreError};

/// Queues a `subscribe` for the platform for up to `limit` subscribers recorded with
/// `--no-push` (oldest first), in one transaction; returns how many were taken (0: none left)
/// and how many jobs were queued.
pub fn push_unpushed(
    conn: &mut DbConnection,
    forwarding: crate::peers::Forwarding,
    limit: i64,
    now: i64,
) -> Result<(usize, usize), StoreError> {
    let people = subscribers::take_unpushed(conn, limit)?;
    let ids: Vec<i64> = people.iter().map(|s| s.id).collect();
    let mut open_lines = jobs::open_lines(conn, &ids, forwarding.destination)?;
    let people: Vec<&subscribers::Subscriber> = people.iter().collect();
    let queued = queue_subscribes(conn, &people, &mut open_lines, forwarding, None, now)?;
    Ok((people.len(), queued))
}

/// Queues a `subscribe` for the platform for each of `people` (behind a job already in their
/// line, `open_lines`), signed up at `created_at` (unix seconds) when given; returns how many
/// were queued.
pub fn queue_subscribes(
    conn: &mut DbConnection,
    people: &[&subscribers::Subscriber],
    open_lines: &mut std::collections::HashSet<i64>,
    forwarding: crate::peers::Forwarding,
    created_at: Option<fn(&subscribers::Subscriber) -> i64>,
    now: i64,
) -> Result<usize, StoreError> {
    let payloads: Vec<(i64, &'static str, String)> = people
        .iter()
        .filter_map(|subscriber| {
            let event = EspEvent::Subscribed {
                attribution: Default::default(),
                person: ImportedPerson::from(*subscriber).to_person()?,
                created_at: created_at.map(|at| at(subscriber)),
            };
            let (kind, payload) = referral_bridge_adapters::sparkloop::webhook_payload(&event)
                .filter(|(kind, _)| forwarding.forwards(kind))?;
            Some((subscriber.id, kind, payload))
        })
        .collect();
    let queued: Vec<(jobs::NewJob<'_>, JobStatus)> = payloads
        .iter()
        .map(|(subscriber_id, kind, payload)| {
            let status = jobs::place_in_line(open_lines, *subscriber_id);
            let job = jobs::NewJob {
                subscriber_id: *subscriber_id,
                destination: forwarding.destination,
                kind,
                payload,
                created_at: now,
                retry_from: now,
                run_at: now,
                inbound_event_id: None,
            };
            (job, status)
        })
        .collect();
    jobs::insert_all(conn, &queued)?;
    Ok(queued.len())
}
