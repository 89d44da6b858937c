//! Comparing the platform's subscribers with the bridge's, a page at a time, and what mends each
//! difference: the platform's values taken into the bridge's state with the field write queued,
//! a person the platform has and the bridge never saw recorded, a subscribe queued for one the
//! platform lacks. Each page is one transaction.

use std::collections::{HashMap, HashSet};

use referral_bridge_adapters::sparkloop::subscribers::PlatformSubscriber;
use sha2::{Digest, Sha256};

use super::{Difference, Kind};
use crate::db::reconcile::{self, Known};
use crate::db::subscribers::{self, SUBSCRIBED, UNSUBSCRIBED};
use crate::db::{jobs, referral, DbConnection, StoreError};
use crate::fields::{self, Field};

/// How a run mends what it finds.
#[derive(Debug, Clone, Copy)]
pub struct Mending {
    /// `--fix`: mend; otherwise write nothing.
    pub fix: bool,
    /// Where ESP events go (the queue a missing person's subscribe joins).
    pub forwarding: crate::peers::Forwarding,
    /// `ESP_WRITE_DELAY` (ms): when a queued field write is due.
    pub write_delay_ms: i64,
}

/// The addresses the platform listed, as 16 bytes of their SHA-256 each: enough to tell
/// 100,000 people apart with no collision in practice, in a fifth of the memory of the text.
#[derive(Debug, Default)]
pub struct Seen(HashSet<[u8; 16]>);

impl Seen {
    fn key(email: &str) -> [u8; 16] {
        let digest = Sha256::digest(email.as_bytes());
        digest[..16].try_into().expect("16 of 32 bytes")
    }

    /// Notes `email`; `false` when it was listed already (a page that shifted while paging).
    pub fn insert(&mut self, email: &str) -> bool {
        self.0.insert(Self::key(email))
    }

    /// Whether `email` was listed.
    pub fn contains(&self, email: &str) -> bool {
        self.0.contains(&Self::key(email))
    }

    /// How many distinct addresses were listed.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// The referral fields reconciliation compares: name, what the bridge would write, what the
/// platform has.
fn compared(
    known: &Known,
    platform: &PlatformSubscriber,
) -> [(&'static str, String, Option<String>); 3] {
    let here = |field| match fields::value(field, &known.state) {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    [
        ("RH_SUBID", here(Field::SubscriberId), platform.uuid.clone()),
        ("RH_CODE", here(Field::Code), platform.ref_code.clone()),
        (
            "RH_ISREF",
            here(Field::IsReferred),
            platform.is_referred().map(str::to_string),
        ),
    ]
}

/// Compares one page of the platform's subscribers with the bridge's (those `seen` before
/// skipped) and, when mending, mends them in the caller's transaction; returns the differences
/// and how many field writes were queued.
pub fn page(
    conn: &mut DbConnection,
    listed: &[&PlatformSubscriber],
    mending: Mending,
    now: i64,
) -> Result<(Vec<Difference>, u64), StoreError> {
    let emails: Vec<&str> = listed.iter().map(|s| s.email.as_str()).collect();
    if mending.fix {
        // Read, decide and write on rows no other writer changes meanwhile (Postgres).
        subscribers::lock_by_emails(conn, &emails)?;
    }
    let known: HashMap<String, Known> = reconcile::known_by_emails(conn, &emails)?
        .into_iter()
        .map(|k| (k.state.email.clone(), k))
        .collect();
    let mut differences = Vec::new();
    let mut queued = 0;
    for platform in listed {
        let email = platform.email.as_str();
        let Some(here) = known.get(email) else {
            differences.push(Difference {
                email: email.to_string(),
                kind: Kind::UnknownHere,
                field: None,
                here: String::new(),
                platform: platform.uuid.clone().unwrap_or_default(),
            });
            if mending.fix {
                // Recorded as an import with `--no-push` would, and given the platform's state.
                let id = referral::apply_referral(conn, &platform.update(), now)?;
                queued += queue_field_write(conn, id, mending, now)?;
            }
            continue;
        };
        if here.status == UNSUBSCRIBED {
            differences.push(Difference {
                email: email.to_string(),
                kind: Kind::UnsubscribedHere,
                field: None,
                here: UNSUBSCRIBED.into(),
                platform: platform.uuid.clone().unwrap_or_default(),
            });
            continue;
        }
        let differing: Vec<Difference> = compared(here, platform)
            .into_iter()
            .filter_map(|(field, here, there)| {
                let there = there?;
                (here != there).then(|| Difference {
                    email: email.to_string(),
                    kind: Kind::FieldsDiffer,
                    field: Some(field.to_string()),
                    here,
                    platform: there,
                })
            })
            .collect();
        if differing.is_empty() {
            continue;
        }
        if mending.fix {
            let mut update = platform.update();
            // The ESP's name is the bridge's; only the referral state is the platform's.
            update.data.name = None;
            referral::apply_referral_to(conn, here.id, &update.data, now)?;
            if platform.referral_status.is_none() && here.state.partner_status.is_some() {
                // A status the platform no longer has (a rejection lifted) must not keep
                // `RH_ISREF` at REJECTED.
                reconcile::clear_partner_status(conn, here.id)?;
            }
            queued += queue_field_write(conn, here.id, mending, now)?;
        }
        differences.extend(differing);
    }
    Ok((differences, queued))
}

/// Queues the field write of subscriber `id` (coalesced with one already waiting); 1 when a job
/// was added.
fn queue_field_write(
    conn: &mut DbConnection,
    id: i64,
    mending: Mending,
    now: i64,
) -> Result<u64, StoreError> {
    let added = jobs::queue_coalesced(
        conn,
        id,
        fields::DESTINATION,
        fields::KIND,
        now,
        now + mending.write_delay_ms,
        None,
    )?;
    Ok(u64::from(added))
}

/// Subscribers walked per transaction when looking for those the platform lacks.
pub const WALK_ROWS: i64 = 1_000;

/// The subscribers with an id above `after` (up to [`WALK_ROWS`]) that are subscribed here, were
/// known before the run began (`started`: one who signed up since may have reached the platform
/// after its page was read) and were not listed by the platform; with `--fix` a subscribe is
/// queued for each who has no job waiting for the platform already. Returns the differences,
/// the jobs queued and the last id walked (`None`: the walk is over).
pub fn missing(
    conn: &mut DbConnection,
    seen: &Seen,
    after: i64,
    started: i64,
    mending: Mending,
    now: i64,
) -> Result<(Vec<Difference>, u64, Option<i64>), StoreError> {
    let walked = reconcile::subscribers_after(conn, after, WALK_ROWS)?;
    let Some(last) = walked.last().map(|s| s.id) else {
        return Ok((Vec::new(), 0, None));
    };
    let missing: Vec<&subscribers::Subscriber> = walked
        .iter()
        .filter(|s| s.status == SUBSCRIBED && s.created_at < started && !seen.contains(&s.email))
        .collect();
    let ids: Vec<i64> = missing.iter().map(|s| s.id).collect();
    let destination = mending.forwarding.destination;
    let mut open = jobs::open_lines(conn, &ids, destination)?;
    let differences = missing
        .iter()
        .map(|s| Difference {
            email: s.email.clone(),
            kind: Kind::MissingAtPlatform,
            field: None,
            here: if open.contains(&s.id) {
                "subscribed (a job for the platform is queued)".into()
            } else {
                SUBSCRIBED.into()
            },
            platform: String::new(),
        })
        .collect();
    if !mending.fix {
        return Ok((differences, 0, Some(last)));
    }
    let unqueued: Vec<&subscribers::Subscriber> = missing
        .into_iter()
        .filter(|s| !open.contains(&s.id))
        .collect();
    let queued = crate::import::queue_subscribes(
        conn,
        &unqueued,
        &mut open,
        mending.forwarding,
        Some(|s| s.created_at / 1000),
        now,
    )?;
    Ok((differences, queued as u64, Some(last)))
}
