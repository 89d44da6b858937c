//! The job workers: claim due jobs with a lease, send each with no transaction or connection
//! held, then record the attempt and the job's new state. This file is the claim loop; sending
//! is in [`deliver`], field writes (which read the subscriber first) in [`field_write`], the
//! recording of outcomes in [`record`], the pacing of each peer in [`pace`] and the back-off in
//! [`retry`].

mod deliver;
mod field_write;
pub mod pace;
mod record;
pub mod retry;

use std::sync::Arc;
use std::time::Duration;

use referral_bridge_adapters::platform::OutboundPlatform;
use referral_bridge_adapters::EspAdapter;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::db::batch::BatchWriter;
use crate::db::jobs::{self, ClaimedJob};
use crate::db::{now_ms, referral, Db, StoreError};
use crate::fields;
use crate::metrics::Metrics;
use crate::peers::Peers;
use pace::SlidingWindow;
use record::Attempted;

/// Threads recording attempts, on either backend. One suffices: its batches grow with the
/// deliveries waiting to be recorded, and each batch of deliveries that all succeeded is one
/// call on Postgres. Several split the same deliveries into more, smaller batches, each a
/// transaction and a function call planned again: on Postgres four cost ingest 20% of its
/// throughput while deliveries ran (benches/README.md), and drained no faster.
pub const ATTEMPT_WRITERS: usize = 1;

/// Runs delivery jobs until shut down.
pub struct Worker {
    db: Db,
    settings: Settings,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    /// Calls the ESP.
    esp_client: reqwest::Client,
    /// Calls the platform.
    platform_client: reqwest::Client,
    /// Identifies this process's claims; a job recorded under another token was lost to a
    /// lease expiry and is left to its new owner.
    lease_token: String,
    /// Records attempts and outcomes in batched transactions.
    recorder: BatchWriter<Attempted, bool>,
    /// The ESP adapter, for field writes.
    esp: Arc<dyn EspAdapter>,
    /// Paces field writes to `ESP_RATE_LIMIT`.
    esp_pace: SlidingWindow,
    /// Caps the calls in flight to an ESP that limits connections (Mailchimp: 10).
    esp_connections: Option<Semaphore>,
    /// The platform ESP events go to.
    platform: Arc<dyn OutboundPlatform>,
    /// Paces the platform's API calls to its rate limits, if it has any.
    platform_pace: Option<Arc<SlidingWindow>>,
    /// Caps the calls in flight to a platform that limits connections (LoyaltySurf: 3).
    platform_connections: Option<Semaphore>,
}

impl Worker {
    /// The pace the platform's calls keep to, when they are paced: reconciliation inside
    /// `serve` pages through the same budget.
    pub fn platform_pace(&self) -> Option<Arc<SlidingWindow>> {
        self.platform_pace.clone()
    }

    /// A worker for the destinations `settings` make deliverable.
    pub fn new(
        db: Db,
        settings: Settings,
        peers: &Peers,
        metrics: Arc<Metrics>,
        wake: Arc<Notify>,
    ) -> anyhow::Result<Self> {
        let timeout = settings.worker.request_timeout;
        let lease_token = format!("{:032x}", rand::random::<u128>());
        let token = lease_token.clone();
        let write_delay = settings.esp.write_delay;
        let recorder = BatchWriter::start(
            "attempt-writer",
            db.clone(),
            ATTEMPT_WRITERS,
            4096,
            move |conn, batch: &[&Attempted]| {
                let batch_learned = batch;
                let batch: Vec<jobs::Attempted<'_>> = batch
                    .iter()
                    .map(|a| jobs::Attempted {
                        job: &a.job,
                        attempt: &a.attempt,
                        outcome: &a.outcome,
                        now: a.now,
                        written: a.written.as_ref(),
                    })
                    .collect();
                let changed = jobs::record_attempts(conn, &token, &batch)?;
                // What a platform answered of a person is theirs once the job is recorded done,
                // in the same transaction, and their fields are written with it.
                for (a, changed) in batch_learned.iter().zip(&changed) {
                    if let (Some(data), true) = (&a.learned, changed) {
                        let id = a.job.subscriber_id;
                        referral::apply_referral_to(conn, id, data, a.now)?;
                        jobs::queue_coalesced(
                            conn,
                            id,
                            fields::DESTINATION,
                            fields::KIND,
                            a.now,
                            a.now + crate::config::millis(write_delay),
                            None,
                        )?;
                    }
                }
                Ok(changed)
            },
        );
        let platform = peers.platform.clone();
        Ok(Worker {
            esp_pace: SlidingWindow::with_limits(&peers.esp_limits),
            esp_connections: peers.esp.max_connections().map(Semaphore::new),
            platform_pace: (platform.paced() && !peers.platform_limits.is_empty())
                .then(|| Arc::new(SlidingWindow::with_limits(&peers.platform_limits))),
            platform_connections: platform.max_connections().map(Semaphore::new),
            esp: peers.esp.clone(),
            platform,
            recorder,
            db,
            settings,
            metrics,
            wake,
            esp_client: crate::send::client(timeout)?,
            platform_client: crate::send::client(timeout)?,
            lease_token,
        })
    }

    /// The destinations this configuration can deliver to, after warning about the others,
    /// whose jobs wait in the queue.
    fn destinations(&self) -> Vec<&'static str> {
        let mut destinations = Vec::new();
        match self.platform.outbound_problem() {
            None => destinations.push(self.platform.destination()),
            Some(problem) => log::warn!("{problem}"),
        }
        match self.esp.outbound_problem() {
            None => destinations.push(fields::DESTINATION),
            Some(problem) => log::warn!("{problem}"),
        }
        destinations
    }

    /// Claims and sends jobs until `shutdown` is cancelled, then lets the calls in flight finish
    /// (each is bounded by the request timeout) and releases anything still claimed.
    pub async fn run(self, shutdown: CancellationToken) {
        let destinations = self.destinations();
        if destinations.is_empty() {
            shutdown.cancelled().await;
            return;
        }
        let concurrency = self.settings.worker.concurrency;
        let slots = Arc::new(Semaphore::new(concurrency));
        let this = Arc::new(self);
        loop {
            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                _ = shutdown.cancelled() => break,
            };
            let free = 1 + slots.available_permits();
            let claimed = this.claim(&destinations, free).await;
            let jobs = match claimed {
                Ok(jobs) => jobs,
                Err(e) => {
                    log::error!("cannot claim jobs: {e}");
                    drop(first);
                    this.idle(&shutdown, this.settings.worker.poll_interval)
                        .await;
                    continue;
                }
            };
            if jobs.is_empty() {
                drop(first);
                let wait = this.until_next_due(&destinations).await;
                this.idle(&shutdown, wait).await;
                continue;
            }
            let mut first = Some(first);
            let mut batch = Vec::new();
            for job in jobs {
                let permit = match first.take() {
                    Some(permit) => permit,
                    None => slots
                        .clone()
                        .try_acquire_owned()
                        .expect("a slot was counted free before claiming"),
                };
                // First tries of field writes go together where the ESP has a batch endpoint;
                // a job that failed once (perhaps alone in a batch) is sent on its own.
                if this.esp.max_batch() > 1
                    && job.destination == fields::DESTINATION
                    && job.attempts == 0
                {
                    batch.push((job, permit));
                    continue;
                }
                let this = this.clone();
                tokio::spawn(async move {
                    this.deliver(job).await;
                    drop(permit);
                });
            }
            while !batch.is_empty() {
                let size = batch.len().min(this.esp.max_batch());
                let part: Vec<_> = batch.drain(..size).collect();
                let this = this.clone();
                tokio::spawn(async move {
                    let (jobs, permits): (Vec<_>, Vec<_>) = part.into_iter().unzip();
                    this.deliver_batch(jobs).await;
                    drop(permits);
                });
            }
        }
        let grace = this.settings.worker.request_timeout + Duration::from_secs(5);
        if tokio::time::timeout(grace, slots.acquire_many(concurrency as u32))
            .await
            .is_err()
        {
            log::warn!("some deliveries did not finish within {grace:?}; releasing them");
        }
        let token = this.lease_token.clone();
        match this
            .db
            .write_async(move |conn| jobs::release_leases(conn, Some(&token)))
            .await
        {
            Ok(0) => {}
            Ok(n) => log::info!("released {n} claimed jobs"),
            Err(e) => log::error!(
                "cannot release claimed jobs (they are due again when their lease ends): {e}"
            ),
        }
    }

    async fn claim(
        &self,
        destinations: &[&'static str],
        limit: usize,
    ) -> Result<Vec<ClaimedJob>, crate::db::StoreError> {
        let destinations = destinations.to_vec();
        let token = self.lease_token.clone();
        let lease = crate::config::millis(self.settings.worker.lease);
        self.db
            .write_async(move |conn| {
                let now = now_ms();
                jobs::claim(conn, &destinations, limit as i64, &token, now, now + lease)
            })
            .await
    }

    /// How long to wait before looking at the queue again: until the next job is due, at most
    /// the poll interval (which also picks up jobs that other instances queued).
    async fn until_next_due(&self, destinations: &[&'static str]) -> Duration {
        let poll = self.settings.worker.poll_interval;
        let destinations = destinations.to_vec();
        match self
            .db
            .read_async(move |conn| jobs::next_run_at(conn, &destinations))
            .await
        {
            Ok(Some(run_at)) => Duration::from_millis(
                (run_at - now_ms()).clamp(1, crate::config::millis(poll)) as u64,
            ),
            Ok(None) => poll,
            Err(e) => {
                log::error!("cannot read the queue: {e}");
                poll
            }
        }
    }

    async fn idle(&self, shutdown: &CancellationToken, wait: Duration) {
        tokio::select! {
            _ = self.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => {}
        }
    }

    /// Makes sure a claim outlasts a call and its recording: extends it when it is short, or
    /// says why the job is no longer this worker's to send.
    async fn keep_claim(&self, job: &ClaimedJob) -> Result<(), ClaimLost> {
        let now = now_ms();
        let needed = (self.settings.worker.request_timeout + Duration::from_secs(1)).as_millis();
        if job.lease_expires_at - now >= needed as i64 {
            return Ok(());
        }
        let (claim, token) = (job.clone(), self.lease_token.clone());
        let until = now + crate::config::millis(self.settings.worker.lease);
        let renewed = self
            .db
            .write_async(move |conn| jobs::renew_lease(conn, &claim, &token, now, until))
            .await
            .map_err(ClaimLost::NotExtended)?;
        if renewed {
            Ok(())
        } else {
            Err(ClaimLost::RanOut)
        }
    }

    /// Waits until the peer's rate limit (`variable`) allows another call. A long wait must not
    /// outlast the claim: the call and its recording need a request timeout and more before the
    /// lease ends, or another claim might send the job too; so the claim is extended, or, if it
    /// has already ended, the job is left unsent (it is due again).
    async fn wait_for_turn(
        &self,
        job: &ClaimedJob,
        pace: &SlidingWindow,
        variable: &'static str,
    ) -> Result<(), UnsentWhileWaiting> {
        pace.acquire().await;
        self.keep_claim(job)
            .await
            .map_err(|lost| UnsentWhileWaiting { lost, variable })
    }
}

/// Why a claimed job can no longer be sent by this worker (it is due again, unsent).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClaimLost {
    /// Extending the claim failed.
    #[error("cannot extend its claim: {0}")]
    NotExtended(#[source] StoreError),
    /// The claim ended before it could be extended; another worker may hold the job now.
    #[error("its claim ran out while it waited for its turn")]
    RanOut,
}

/// A claim lost while waiting for the peer's rate limit.
#[derive(Debug, thiserror::Error)]
#[error("{lost} ({variable})")]
pub(crate) struct UnsentWhileWaiting {
    /// How the claim was lost.
    #[source]
    lost: ClaimLost,
    /// The rate-limit variable it waited on.
    variable: &'static str,
}
