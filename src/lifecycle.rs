//! The data's lifecycle (DESIGN 3.10): retention, run in the background by `serve` and once by
//! `referral-bridge prune`; and erasure (`forget`, the admin API, erase-on-delete). A pass walks the finished jobs, then the stored bodies, in batches of
//! [`BATCH`] rows, each its own short transaction, so that an ingest waiting for SQLite's writer
//! waits for one batch at most; then SQLite gives the freed pages back to the file system.

use std::time::Duration;

use referral_bridge_adapters::platform::{deletion_payload, OutboundPlatform, DELETE};
use referral_bridge_adapters::Email;

use crate::config::{millis, Settings};
use crate::db::erase::{self, Erased};
use crate::db::prune::{self, Removed, Walk};
use crate::db::{jobs, referral};
use crate::db::{now_ms, Db, StoreError};
use crate::metrics::{Metrics, TableLabels};

/// Rows read per batch (and so, at most, deleted per transaction).
pub const BATCH: i64 = 200;

/// Free pages given back per vacuum step (1 MiB of 4 KiB pages).
const VACUUM_PAGES: i64 = 256;

/// The pause between two of a pass's transactions, at least: the writers waiting (ingest, the
/// workers) take their turn at SQLite's one write lock before the next batch does.
const BREATHER: Duration = Duration::from_millis(5);

/// The pause after a batch, in multiples of the time the batch held the database: at least
/// twice (a pass takes at most about a third of the writing time), at most nine times (a tenth).
const YIELD: std::ops::RangeInclusive<f64> = 2.0..=9.0;

/// The other writers' share of the pauses (their write time added up, over the pause) at and
/// below which a pass yields least, and from which it yields most; in between, in proportion.
const BUSY: std::ops::RangeInclusive<f64> = 0.3..=0.6;

/// Paces a pass's transactions by how busy the other writers are. After each batch the pass
/// pauses for a multiple of the batch's hold; the busier the others were during the last
/// pauses (a burst of ingest, which pruning must not slow), the longer, down to a tenth of the
/// writing time for the pass; while they leave the database mostly idle it takes a third, so
/// that a pass still keeps pace with a steady load.
///
/// Only SQLite's writers wait for the pass (they take turns at one write lock), so only there is
/// their write time a measure of what the pass keeps waiting. On Postgres writers do not wait
/// for each other's transactions, and their write times, added up, overlap and include each
/// commit's flush: read as demand, they would slow a pass below the pace of a moderate load.
/// There the pause stays at the least.
struct Pacer {
    /// Whether the others' writing is measured (SQLite).
    measures: bool,
    /// The others' share of the recent pauses, smoothed.
    busy: f64,
    /// All pauses, and the others' writing during them, for the report.
    paused: Duration,
    others: Duration,
}

impl Pacer {
    fn new(measures: bool) -> Self {
        Pacer {
            measures,
            busy: 0.0,
            paused: Duration::ZERO,
            others: Duration::ZERO,
        }
    }

    /// Pauses after a batch that held `db` for `held`, and adjusts the next pause.
    fn pause(&mut self, db: &Db, held: Duration) {
        let pause = self.after(held);
        if !self.measures {
            std::thread::sleep(pause);
            return;
        }
        let before = db.write_time();
        std::thread::sleep(pause);
        self.saw(pause, db.write_time().saturating_sub(before));
    }

    /// The pause after a batch that held the database for `held`.
    fn after(&self, held: Duration) -> Duration {
        let busier = ((self.busy - BUSY.start()) / (BUSY.end() - BUSY.start())).clamp(0.0, 1.0);
        let factor = YIELD.start() + busier * (YIELD.end() - YIELD.start());
        held.mul_f64(factor).max(BREATHER)
    }

    /// During a `pause` the other writers wrote for `others` (added up over writers).
    fn saw(&mut self, pause: Duration, others: Duration) {
        let share = others.as_secs_f64() / pause.as_secs_f64().max(1e-6);
        // Smoothed over a few pauses: one batch of ingest more or less is not a burst.
        self.busy = 0.5 * self.busy + 0.5 * share.min(1.0);
        self.paused += pause;
        self.others += others;
    }

    /// The others' share of all the pass's pauses, in percent, where it is measured.
    fn busy_percent(&self) -> Option<u64> {
        self.measures.then(|| {
            (100.0 * self.others.as_secs_f64() / self.paused.as_secs_f64().max(1e-6)).round() as u64
        })
    }
}

/// What a pass removed (or, dry, would remove), and the bytes the file gave back.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PruneReport {
    /// Rows by kind.
    pub removed: Removed,
    /// Bytes given back to the file system (SQLite; 0 on Postgres and in a dry run).
    pub reclaimed_bytes: i64,
    /// The longest a batch held the database (ms): what an ingest could have waited.
    pub slowest_batch_ms: u64,
    /// How busy the other writers were during the pass's pauses (percent of the pauses, their
    /// write time added up): the higher, the more the pass yielded to them. SQLite only (see
    /// [`Pacer`]); `None` on Postgres and in a dry run.
    pub others_busy_percent: Option<u64>,
    /// Whether the pass vacuumed the tables itself: Postgres, when the server's autovacuum is
    /// off ([`prune::vacuum_unless_autovacuum`]).
    pub vacuumed: bool,
}

/// The time before which stored rows are old: `BRIDGE_RETENTION` ago, but never less than
/// `DEDUPE_WINDOW` ago (dedupe reads the bodies' hashes and times).
pub fn cutoff(settings: &Settings, now: i64) -> i64 {
    now - millis(settings.retention.max(settings.dedupe_window))
}

/// One whole pass; `progress` sees the running total after each batch, and stops the pass
/// (between two batches) by answering `false`. Blocking: run it on a blocking thread.
pub fn prune_pass(
    db: &Db,
    cutoff: i64,
    dry_run: bool,
    mut progress: impl FnMut(&Removed) -> bool,
) -> Result<PruneReport, StoreError> {
    let mut report = PruneReport::default();
    let mut pacer = Pacer::new(db.is_sqlite() && !dry_run);
    // The jobs first: a body goes only once no job points at it.
    type Batch = fn(
        &mut crate::db::DbConnection,
        i64,
        i64,
        i64,
        bool,
    ) -> Result<(Removed, Walk), StoreError>;
    for batch in [prune::jobs_batch as Batch, prune::bodies_batch as Batch] {
        let mut after = 0;
        loop {
            // The whole turn, its commit included: a commit that frees many pages writes them
            // all to the log, and may checkpoint it, while the writers queued behind it wait.
            let ((removed, walk), held) = if dry_run {
                (
                    db.read(|conn| batch(conn, after, cutoff, BATCH, true))?,
                    Duration::ZERO,
                )
            } else {
                db.write_held(|conn| batch(conn, after, cutoff, BATCH, false))?
            };
            report.slowest_batch_ms = report.slowest_batch_ms.max(held.as_millis() as u64);
            if !dry_run {
                pacer.pause(db, held);
            }
            report.removed += removed;
            if !progress(&report.removed) {
                report.others_busy_percent = pacer.busy_percent();
                return Ok(report);
            }
            match walk {
                Walk::After(id) => after = id,
                Walk::Done => break,
            }
        }
    }
    let now = now_ms();
    report.removed.sessions = if dry_run {
        db.read(|conn| prune::expired_sessions(conn, now, true))?
    } else {
        db.write(|conn| prune::expired_sessions(conn, now, false))?
    };
    if !dry_run {
        report.vacuumed = db.read(prune::vacuum_unless_autovacuum)?;
        loop {
            let (given_back, held) =
                db.write_held(|conn| prune::incremental_vacuum(conn, VACUUM_PAGES))?;
            report.slowest_batch_ms = report.slowest_batch_ms.max(held.as_millis() as u64);
            report.reclaimed_bytes += given_back;
            if given_back == 0 {
                break;
            }
            pacer.pause(db, held);
        }
    }
    report.others_busy_percent = pacer.busy_percent();
    Ok(report)
}

/// Counts a pass in the metrics.
pub fn record(metrics: &Metrics, report: &PruneReport) {
    let removed = &report.removed;
    for (table, rows) in [
        ("inbound_events", removed.bodies),
        ("jobs", removed.jobs),
        ("attempts", removed.attempts),
        ("admin_sessions", removed.sessions),
    ] {
        metrics
            .pruned_rows
            .get_or_create(&TableLabels { table })
            .inc_by(rows);
    }
    metrics
        .reclaimed_bytes
        .inc_by(report.reclaimed_bytes.max(0) as u64);
}

/// How often `serve` prunes: hourly, or more often for a retention shorter than four hours.
pub fn interval(settings: &Settings) -> Duration {
    (settings.retention.max(settings.dedupe_window) / 4)
        .clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// `serve`'s pruning: a pass every [`interval`] until `stop`.
pub async fn run(
    db: Db,
    settings: Settings,
    metrics: std::sync::Arc<Metrics>,
    stop: tokio_util::sync::CancellationToken,
) {
    let every = interval(&settings);
    // Passes start `every` apart (a pass longer than that is followed at once by the next), so
    // that pruning keeps pace with a steady load rather than falling behind by its own length.
    let mut next = tokio::time::Instant::now() + every;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
        }
        next = tokio::time::Instant::now() + every;
        let cutoff = cutoff(&settings, now_ms());
        let pass_db = db.clone();
        let started = std::time::Instant::now();
        // A pass stops between two batches at shutdown: the next start goes on with the rest.
        let stopping = stop.clone();
        let pass = tokio::task::spawn_blocking(move || {
            prune_pass(&pass_db, cutoff, false, |_| !stopping.is_cancelled())
        })
        .await;
        match pass {
            Ok(Ok(report)) => {
                record(&metrics, &report);
                let r = report.removed;
                if r.bodies + r.jobs + r.attempts > 0 {
                    log::info!(
                        "retention: pruned {} bodies, {} jobs, {} attempts in {} ms (slowest batch {} ms{}); {} bytes given back{}",
                        r.bodies,
                        r.jobs,
                        r.attempts,
                        started.elapsed().as_millis(),
                        report.slowest_batch_ms,
                        report.others_busy_percent.map_or_else(String::new, |busy| format!(
                            ", other writers busy {busy}% of its pauses"
                        )),
                        report.reclaimed_bytes,
                        if report.vacuumed {
                            "; tables vacuumed (the server's autovacuum is off)"
                        } else {
                            ""
                        }
                    );
                }
            }
            Ok(Err(e)) => log::warn!(
                "retention: the pass stopped: {e}; it runs again in {}",
                humantime::format_duration(every)
            ),
            Err(e) => log::error!("retention: the pass panicked: {e}"),
        }
    }
}

/// What [`forget`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forgotten {
    /// Erased here, now.
    Erased(Erased),
    /// The platform's deletion is queued as job `job_id`; the local erasure follows once the
    /// platform has answered it.
    Queued {
        /// The deletion's job.
        job_id: i64,
        /// Whom it erases.
        subscriber_id: i64,
    },
}

/// Why [`forget`] did nothing.
#[derive(Debug, thiserror::Error)]
pub enum ForgetError {
    /// No subscriber has the address.
    #[error("no subscriber has that address")]
    NotFound,
    /// The platform cannot delete them (SparkLoop in webhook mode; ReferralLoop before it has
    /// told the bridge their signup id): the reason, for the operator.
    #[error("{0}")]
    PlatformCannot(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Erases the subscriber with address `email` now, or, `with_platform`, queues the platform's
/// deletion first (in the subscriber's line, after what is already queued for them there); the
/// erasure then follows it ([`erase_after_deletion`]). Logs by subscriber id, never by address.
pub fn forget(
    db: &Db,
    platform: &dyn OutboundPlatform,
    metrics: &Metrics,
    email: &Email,
    with_platform: bool,
) -> Result<Forgotten, ForgetError> {
    let email = email.as_str().to_string();
    if with_platform {
        platform.deletes().map_err(ForgetError::PlatformCannot)?;
        // The platform must be able to name them (ReferralLoop deletes by the signup id its
        // webhooks told the bridge): refused now, rather than a job that cannot be sent.
        let known = db.read(|conn| match erase::subscriber_id(conn, &email)? {
            Some(id) => Ok(Some(referral::platform_id(conn, id)?)),
            None => Ok(None),
        })?;
        if let Some(platform_id) = known {
            platform
                .request(DELETE, &deletion_payload(&email, platform_id.as_deref()))
                .map_err(|why| {
                    ForgetError::PlatformCannot(format!(
                        "{why}; without --platform they are erased here only"
                    ))
                })?;
        }
    }
    let done = db.write(|conn| {
        // The row lock (Postgres) orders this against an ingest of the same person (which then
        // finds no one, and records them anew) and a line's head finishing.
        crate::db::subscribers::lock_by_emails(conn, &[email.as_str()])?;
        let Some(id) = erase::subscriber_id(conn, &email)? else {
            return Ok(None);
        };
        if !with_platform {
            return Ok(Some(Forgotten::Erased(erase::subscriber(
                conn, id, &email,
            )?)));
        }
        let destination = platform.destination();
        let mut open = jobs::open_lines(conn, &[id], destination)?;
        let status = jobs::place_in_line(&mut open, id);
        // The platform's id is added when it is sent: the latest heard by then.
        let payload = deletion_payload(&email, None);
        let now = now_ms();
        let job = jobs::NewJob {
            subscriber_id: id,
            destination,
            kind: DELETE,
            payload: &payload,
            created_at: now,
            retry_from: now,
            run_at: now,
            inbound_event_id: None,
        };
        jobs::insert_all(conn, &[(job, status)])?;
        let job_id = jobs::latest_of(conn, id, DELETE)?;
        Ok(Some(Forgotten::Queued {
            job_id,
            subscriber_id: id,
        }))
    })?;
    let done = done.ok_or(ForgetError::NotFound)?;
    match done {
        Forgotten::Erased(erased) => finish_erasure(db, metrics, &erased, "forget"),
        Forgotten::Queued {
            job_id,
            subscriber_id,
        } => log::info!(
            "subscriber {subscriber_id}: deletion queued for {} as job {job_id}; erased here once it is done",
            platform.destination()
        ),
    }
    Ok(done)
}

/// The local erasure after the platform has deleted subscriber `subscriber_id` (job kind
/// [`DELETE`] done). Nothing when they are gone already.
pub fn erase_after_deletion(
    db: &Db,
    metrics: &Metrics,
    subscriber_id: i64,
) -> Result<(), StoreError> {
    let erased = db.write(|conn| {
        let Some(email) = crate::db::subscribers::email_of(conn, subscriber_id)? else {
            return Ok(None);
        };
        crate::db::subscribers::lock_by_emails(conn, &[email.as_str()])?;
        erase::subscriber(conn, subscriber_id, &email).map(Some)
    })?;
    if let Some(erased) = erased {
        finish_erasure(db, metrics, &erased, "the platform's deletion");
    }
    Ok(())
}

/// Checkpoints SQLite's log (no erased page stays in it), counts and logs the erasure.
fn finish_erasure(db: &Db, metrics: &Metrics, erased: &Erased, after: &str) {
    match db.read(erase::checkpoint) {
        Ok(true) => {}
        Ok(false) => log::warn!(
            "erasure: another checkpoint held the WAL for a second; the log is emptied at the \
             next automatic one"
        ),
        Err(e) => log::warn!(
            "erasure: the WAL checkpoint failed ({e}); it happens at the next automatic one"
        ),
    }
    metrics.erasures.inc();
    log::info!(
        "subscriber {} erased after {after}: {} bodies, {} jobs, {} attempts, {} redemptions",
        erased.subscriber_id,
        erased.bodies,
        erased.jobs,
        erased.attempts,
        erased.redemptions
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pass yields more the busier the other writers were during its last pauses, down to
    /// a tenth of the writing time, and takes a third again once they leave the database idle.
    #[test]
    fn a_pass_yields_to_busy_writers() {
        let mut pacer = Pacer::new(true);
        let held = Duration::from_millis(10);
        assert_eq!(pacer.after(held), Duration::from_millis(20));
        let mut pauses = vec![];
        for _ in 0..4 {
            let pause = pacer.after(held);
            pacer.saw(pause, pause); // writers busy throughout
            pauses.push(pacer.after(held).as_millis());
        }
        // Smoothed: busy half, then three quarters, then more, of the recent pauses.
        assert_eq!(pauses, [66, 90, 90, 90]);
        for _ in 0..3 {
            pacer.saw(Duration::from_millis(90), Duration::ZERO);
        }
        assert_eq!(pacer.after(held), Duration::from_millis(20));
        // A batch that held the database hardly at all still leaves the others a turn.
        assert_eq!(pacer.after(Duration::from_micros(100)), BREATHER);
        // Busy for 267 of the 537 ms paused.
        assert_eq!(pacer.busy_percent(), Some(50));
        assert_eq!(Pacer::new(false).busy_percent(), None);
    }

    /// On a Postgres server whose autovacuum is off a pass vacuums the tables itself (else the
    /// space of what it deleted is never reused); with autovacuum on, and on SQLite, it does not.
    /// A dry run never does.
    #[test]
    fn a_pass_vacuums_where_the_server_does_not() {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            flag: bool,
        }
        let test = crate::db::test_db::TestDb::default();
        let flag = |sql: &'static str| {
            test.db
                .read(|conn| {
                    Ok(diesel::RunQueryDsl::get_result::<Row>(diesel::sql_query(sql), conn)?.flag)
                })
                .unwrap()
        };
        let dry = prune_pass(&test.db, now_ms(), true, |_| true).unwrap();
        assert!(!dry.vacuumed);
        let report = prune_pass(&test.db, now_ms(), false, |_| true).unwrap();
        if test.db.is_sqlite() {
            assert!(!report.vacuumed);
            return;
        }
        let server_vacuums = flag(
            "SELECT current_setting('autovacuum') = 'on' \
                AND current_setting('track_counts') = 'on' AS flag",
        );
        assert_eq!(report.vacuumed, !server_vacuums);
        let vacuumed_jobs =
            flag("SELECT vacuum_count > 0 AS flag FROM pg_stat_user_tables WHERE relname = 'jobs'");
        assert_eq!(vacuumed_jobs, !server_vacuums);
    }
}
