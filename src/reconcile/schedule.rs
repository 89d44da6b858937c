//! `BRIDGE_RECONCILE_EVERY`: `serve` runs `reconcile --fix` on that period. Instances sharing a
//! database take turns through one row of `schedules` ([`crate::db::reconcile::take_turn`]):
//! whichever moves its due time on runs, the others find it not due.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Difference, Observer, Reconciler};
use crate::db::{now_ms, Db};

/// The schedule's name in `schedules`.
const NAME: &str = "reconcile";

/// Logs a periodic run's progress: a line every tenth of the pages; differences (which name
/// people) at debug level only.
struct Logged {
    next_share: u32,
}

impl Observer for Logged {
    fn page(&mut self, page: u32, total: u32, rows: u64, left: Duration) {
        if page * 10 >= self.next_share * total {
            log::info!(
                "reconcile: page {page}/{total}, {rows} platform subscribers, about {} left",
                humantime::format_duration(Duration::from_secs(left.as_secs()))
            );
            self.next_share = page * 10 / total.max(1) + 1;
        }
    }

    fn paused(&mut self, delay: Duration) {
        log::info!("reconcile: SparkLoop answered 429; waiting {delay:?}");
    }

    fn difference(&mut self, d: &Difference) -> anyhow::Result<()> {
        log::debug!(
            "reconcile: {} {} {} here={:?} platform={:?}",
            d.email,
            d.kind.as_str(),
            d.field.as_deref().unwrap_or(""),
            d.here,
            d.platform
        );
        Ok(())
    }
}

/// Runs `reconciler` (which mends) whenever it is this instance's turn, until `stop`; a run in
/// progress at shutdown stops between two pages.
pub async fn run(reconciler: Reconciler, db: Db, every: Duration, stop: CancellationToken) {
    let holder = format!("{:016x}", rand::random::<u64>());
    // Often enough that the period is kept to within a tenth; the turn is taken in the database.
    let check = (every / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let period = crate::config::millis(every);
    loop {
        let (turn_db, me) = (db.clone(), holder.clone());
        let turn = turn_db
            .write_async(move |conn| {
                crate::db::reconcile::take_turn(conn, NAME, &me, now_ms(), period)
            })
            .await;
        match turn {
            Ok(true) => {
                let mut observer = Logged { next_share: 1 };
                tokio::select! {
                    () = stop.cancelled() => return,
                    done = reconciler.run(&mut observer) => match done {
                        Ok(summary) => log::info!(
                            "reconcile: {} platform subscribers, {} here, {} differences \
                             (missing_at_platform {}, unsubscribed_here {}, unknown_here {}, \
                             fields_differ {}); {} jobs queued; next in {}",
                            summary.platform_subscribers,
                            summary.here,
                            summary.differences(),
                            summary.count(super::Kind::MissingAtPlatform),
                            summary.count(super::Kind::UnsubscribedHere),
                            summary.count(super::Kind::UnknownHere),
                            summary.count(super::Kind::FieldsDiffer),
                            summary.queued,
                            humantime::format_duration(every)
                        ),
                        Err(e) => log::warn!(
                            "reconcile: the run stopped: {e:#}; it runs again in {}",
                            humantime::format_duration(every)
                        ),
                    },
                }
            }
            Ok(false) => {}
            Err(e) => log::warn!("reconcile: cannot read its schedule: {e}"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(check) => {}
        }
    }
}
