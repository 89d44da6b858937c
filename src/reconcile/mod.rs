//! Reconciliation (DESIGN 3.9): the campaign's subscribers read from SparkLoop's API a page at a
//! time, compared with the bridge's, every difference classified and, with `--fix`, mended
//! through the same durable queue as everything else. Nothing but the addresses the platform
//! listed (16 bytes each) is held across pages, so memory stays flat with the list's size.

mod compare;
pub mod esp;
mod listing;
pub mod schedule;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use referral_bridge_adapters::sparkloop::subscribers::SubscriberList;

pub use compare::Mending;
use compare::Seen;
pub(crate) use compare::Seen as SeenAddresses;
pub use listing::ListingError;

use crate::config::{RateLimit, Settings};
use crate::db::reconcile::Run;
use crate::db::{now_ms, Db};
use crate::worker::pace::SlidingWindow;

/// A kind of difference between the platform and the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Subscribed here, unknown there.
    MissingAtPlatform,
    /// Unsubscribed here, listed there: reported only.
    UnsubscribedHere,
    /// Listed there, never seen here.
    UnknownHere,
    /// `RH_SUBID`, `RH_CODE` or `RH_ISREF` differ from what the platform has.
    FieldsDiffer,
    /// A field the ESP holds differs from what the bridge would write (`reconcile --esp`).
    EspFieldsDiffer,
}

impl Kind {
    /// Every kind a comparison with the platform finds, in the order they are printed.
    pub const ALL: [Kind; 4] = [
        Kind::MissingAtPlatform,
        Kind::UnsubscribedHere,
        Kind::UnknownHere,
        Kind::FieldsDiffer,
    ];

    /// Its name in the report, the metrics and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::MissingAtPlatform => "missing_at_platform",
            Kind::UnsubscribedHere => "unsubscribed_here",
            Kind::UnknownHere => "unknown_here",
            Kind::FieldsDiffer => "fields_differ",
            Kind::EspFieldsDiffer => "esp_fields_differ",
        }
    }
}

/// One difference: a row of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The person's address.
    pub email: String,
    /// What kind.
    pub kind: Kind,
    /// The field that differs (`RH_CODE`; the ESP's own key for [`Kind::EspFieldsDiffer`]).
    pub field: Option<String>,
    /// What the bridge has (the field's value, or the person's status).
    pub here: String,
    /// What the platform has (the field's value, or the person's id there; for
    /// [`Kind::EspFieldsDiffer`], what the ESP holds).
    pub platform: String,
}

/// What a run found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Distinct subscribers the platform listed.
    pub platform_subscribers: u64,
    /// Subscribers here when the run began, unsubscribed ones included.
    pub here: u64,
    /// Differences of each kind, in [`Kind::ALL`]'s order.
    pub counts: [u64; 4],
    /// People with at least one field that differs.
    pub people_with_fields_differing: u64,
    /// Jobs queued to mend (subscribes and field writes).
    pub queued: u64,
    /// Pages read.
    pub pages: u32,
}

impl Summary {
    /// Differences of `kind`.
    pub fn count(&self, kind: Kind) -> u64 {
        self.counts[kind as usize]
    }

    /// All differences.
    pub fn differences(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn add(&mut self, difference: &Difference) {
        self.counts[difference.kind as usize] += 1;
    }
}

/// Hears how a run goes.
pub trait Observer: Send {
    /// Page `page` of `total` was read and compared; `rows` platform subscribers so far, and
    /// about `left` to go at the configured pace.
    fn page(&mut self, page: u32, total: u32, rows: u64, left: Duration);
    /// The platform asked to be left alone for `delay` (429).
    fn paused(&mut self, delay: Duration);
    /// A difference was found.
    fn difference(&mut self, difference: &Difference) -> anyhow::Result<()>;
}

/// What a run needs: the list at SparkLoop, its pace, the database and how to mend.
pub struct Reconciler {
    db: Db,
    list: SubscriberList,
    http: reqwest::Client,
    pace: Arc<SlidingWindow>,
    rate: RateLimit,
    mending: Mending,
}

/// Why reconciliation cannot start: a setting it needs is missing.
#[derive(Debug, thiserror::Error)]
#[error("{0} is not set: reconcile reads the campaign's subscribers from SparkLoop's API with it")]
pub struct NotConfigured(pub &'static str);

impl Reconciler {
    /// A reconciler for the settings' campaign (`SPARKLOOP_API_KEY`, `SPARKLOOP_CAMPAIGN_ID`),
    /// paced by `pace` (the workers' own, inside `serve`, so that both keep to one budget).
    pub fn new(
        db: Db,
        settings: &Settings,
        pace: Option<Arc<SlidingWindow>>,
        fix: bool,
    ) -> anyhow::Result<Self> {
        let sparkloop = &settings.sparkloop;
        let api_key = sparkloop
            .api_key
            .clone()
            .ok_or(NotConfigured("SPARKLOOP_API_KEY"))?;
        let campaign = sparkloop
            .campaign_id
            .as_deref()
            .ok_or(NotConfigured("SPARKLOOP_CAMPAIGN_ID"))?;
        let peers = crate::peers::Peers::new(settings)?;
        Ok(Reconciler {
            db,
            list: SubscriberList::new(&sparkloop.api_url, api_key, campaign),
            http: crate::send::client(settings.worker.request_timeout)
                .context("cannot make an HTTP client")?,
            pace: pace.unwrap_or_else(|| Arc::new(SlidingWindow::new(sparkloop.rate_limit))),
            rate: sparkloop.rate_limit,
            mending: Mending {
                fix,
                forwarding: peers.forwarding(),
                write_delay_ms: crate::config::millis(settings.esp.write_delay),
            },
        })
    }

    /// How long `pages` more pages take at the configured pace.
    pub fn time_for(&self, pages: u64) -> Duration {
        Duration::from_secs_f64(
            pages as f64 * self.rate.per.as_secs_f64() / f64::from(self.rate.requests.max(1)),
        )
    }

    /// Reads every page, compares and (with `--fix`) mends; then looks for the people the
    /// platform lacks, and records the run. An error part-way leaves every page before it
    /// compared and mended whole, and the run unrecorded. Only a run that mends is recorded.
    pub async fn run(&self, observer: &mut dyn Observer) -> anyhow::Result<Summary> {
        let started = now_ms();
        // What the bridge knew when the run began, before it records anyone.
        let here = self
            .db
            .read_async(crate::db::reconcile::count_subscribers)
            .await
            .context("cannot count the subscribers")? as u64;
        let mut summary = Summary {
            here,
            ..Summary::default()
        };
        let mut seen = Seen::default();
        let mut page = 1;
        let mut total = 1;
        let clock = Instant::now();
        while page <= total {
            let listed = listing::fetch(self, page, observer).await?;
            total = listed.total_pages;
            let fresh: Vec<_> = listed
                .subscribers
                .into_iter()
                .filter(|s| seen.insert(s.email.as_str()))
                .collect();
            let mending = self.mending;
            let compared = move |conn: &mut crate::db::DbConnection| {
                let refs: Vec<_> = fresh.iter().collect();
                compare::page(conn, &refs, mending, now_ms())
            };
            let (differences, queued) = if mending.fix {
                self.db.write_async(compared).await
            } else {
                self.db.read_async(compared).await
            }
            .with_context(|| format!("cannot compare page {page}"))?;
            summary.queued += queued;
            let mut people = std::collections::HashSet::new();
            for difference in &differences {
                summary.add(difference);
                if difference.kind == Kind::FieldsDiffer {
                    people.insert(difference.email.as_str());
                }
                observer.difference(difference)?;
            }
            summary.people_with_fields_differing += people.len() as u64;
            summary.pages = page;
            summary.platform_subscribers = seen.len() as u64;
            // At the pace, or as fast as it has gone when that is slower.
            let left = u64::from(total - page);
            let measured = clock.elapsed().mul_f64(left as f64 / f64::from(page));
            observer.page(
                page,
                total,
                summary.platform_subscribers,
                measured.max(self.time_for(left)),
            );
            page += 1;
        }
        let seen = Arc::new(seen);
        let mut after = 0;
        loop {
            let (mending, seen) = (self.mending, seen.clone());
            let walk = move |conn: &mut crate::db::DbConnection| {
                compare::missing(conn, &seen, after, started, mending, now_ms())
            };
            let (differences, queued, last) = if mending.fix {
                self.db.write_async(walk).await
            } else {
                self.db.read_async(walk).await
            }
            .context("cannot look for the subscribers the platform lacks")?;
            summary.queued += queued;
            for difference in &differences {
                summary.add(difference);
                observer.difference(difference)?;
            }
            match last {
                Some(last) => after = last,
                None => break,
            }
        }
        let run = Run {
            started_at: started,
            finished_at: now_ms(),
            fixed: self.mending.fix,
            platform_subscribers: summary.platform_subscribers as i64,
            here: summary.here as i64,
            missing_at_platform: summary.count(Kind::MissingAtPlatform) as i64,
            unsubscribed_here: summary.count(Kind::UnsubscribedHere) as i64,
            unknown_here: summary.count(Kind::UnknownHere) as i64,
            fields_differ: summary.count(Kind::FieldsDiffer) as i64,
            queued: summary.queued as i64,
        };
        // Without `--fix` a run writes nothing, its own record included.
        if self.mending.fix {
            self.db
                .write_async(move |conn| crate::db::reconcile::record_run(conn, &run))
                .await
                .context("cannot record the run")?;
        }
        Ok(summary)
    }
}
