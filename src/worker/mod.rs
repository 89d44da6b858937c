//! The job workers: claim due jobs with a lease, send each with no transaction or connection
//! held, then record the attempt and the job's new state.

pub mod retry;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use referral_bridge_adapters::outbound::{self, FieldUpdate, MessageId, WriteVerdict};
use referral_bridge_adapters::EspAdapter;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::{Platform, Settings, Upstream};
use crate::db::batch::BatchWriter;
use crate::db::jobs::{self, ClaimedJob, NewAttempt, Outcome};
use crate::db::{now_ms, subscribers, Db};
use crate::fields;
use crate::metrics::{DestinationLabels, JobLabels, Metrics};
use crate::pace::SlidingWindow;
use crate::sparkloop::{self, ApiCall};
use crate::upstream;
use retry::Verdict;

/// LoyaltySurf's limit of concurrent connections per client.
const LOYALTYSURF_CONNECTIONS: usize = 3;

/// How much of an answer's body is kept with an attempt.
const KEPT_BODY_BYTES: usize = 2048;

/// The most of a contact lookup's answer that is read.
const LOOKUP_BODY_BYTES: usize = 1 << 20;

/// Runs delivery jobs until shut down.
pub struct Worker {
    db: Db,
    settings: Settings,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    client: reqwest::Client,
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
    /// The platform's queue (`sparkloop`, `loyaltysurf`, `referralloop`).
    upstream: &'static str,
    /// Paces the platform's API calls to its rate limits, if it has any.
    upstream_pace: Option<SlidingWindow>,
    /// Caps the calls in flight to a platform that limits connections (LoyaltySurf: 3).
    upstream_connections: Option<Semaphore>,
}

/// An attempt to record, with the job's outcome.
struct Attempted {
    job: ClaimedJob,
    attempt: NewAttempt,
    outcome: Outcome,
    now: i64,
}

impl Worker {
    /// A worker for the destinations `settings` make deliverable.
    pub fn new(
        db: Db,
        settings: Settings,
        esp: Arc<dyn EspAdapter>,
        metrics: Arc<Metrics>,
        wake: Arc<Notify>,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(settings.worker.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("referral-bridge/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let lease_token = format!("{:032x}", rand::random::<u128>());
        let token = lease_token.clone();
        let writers = if db.is_sqlite() { 1 } else { 4 };
        let recorder = BatchWriter::start(
            "attempt-writer",
            db.clone(),
            writers,
            4096,
            move |conn, batch: &[&Attempted]| {
                let batch: Vec<jobs::Attempted<'_>> = batch
                    .iter()
                    .map(|a| jobs::Attempted {
                        job: &a.job,
                        attempt: &a.attempt,
                        outcome: &a.outcome,
                        now: a.now,
                    })
                    .collect();
                jobs::record_attempts(conn, &token, &batch)
            },
        );
        Ok(Worker {
            esp_pace: SlidingWindow::with_limits(&settings.esp.rate_limits),
            esp_connections: esp.max_connections().map(Semaphore::new),
            upstream: settings.upstream_destination(),
            upstream_pace: Some(settings.upstream_limits())
                .filter(|limits| !limits.is_empty())
                .map(|limits| SlidingWindow::with_limits(&limits)),
            upstream_connections: matches!(settings.platform, Platform::LoyaltySurf(_))
                .then(|| Semaphore::new(LOYALTYSURF_CONNECTIONS)),
            esp,
            recorder,
            db,
            settings,
            metrics,
            wake,
            client,
            lease_token,
        })
    }

    /// The destinations this configuration can deliver to, after warning about the others,
    /// whose jobs wait in the queue.
    fn destinations(&self) -> Vec<&'static str> {
        let mut destinations = Vec::new();
        let waiting = |variable: &str, platform: &str| {
            log::warn!(
                "{variable} is not set: ESP events are stored and queued for {platform}'s API, \
                 and are sent once it is"
            )
        };
        match (&self.settings.platform, &self.settings.sparkloop.upstream) {
            (Platform::SparkLoop, Upstream::Webhook { .. }) => {
                destinations.push(sparkloop::DESTINATION)
            }
            (Platform::SparkLoop, Upstream::Api) if self.settings.sparkloop.api_key.is_some() => {
                destinations.push(sparkloop::DESTINATION)
            }
            (Platform::SparkLoop, Upstream::Api) => waiting(
                "SPARKLOOP_API_KEY (or SPARKLOOP_INCOMING_WEBHOOK_URL for webhook mode)",
                "SparkLoop",
            ),
            (Platform::LoyaltySurf(api), _) if api.api_key.is_some() => {
                destinations.push(upstream::LOYALTYSURF)
            }
            (Platform::LoyaltySurf(_), _) => waiting("LOYALTYSURF_API_KEY", "LoyaltySurf"),
            (Platform::ReferralLoop(api), _) if api.api_key.is_some() => {
                destinations.push(upstream::REFERRALLOOP)
            }
            (Platform::ReferralLoop(_), _) => waiting("REFERRALLOOP_API_KEY", "ReferralLoop"),
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
        let lease = self.settings.worker.lease.as_millis() as i64;
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
            Ok(Some(run_at)) => {
                Duration::from_millis((run_at - now_ms()).clamp(1, poll.as_millis() as i64) as u64)
            }
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

    /// Sends one job and records the outcome.
    async fn deliver(&self, job: ClaimedJob) {
        let prepared = self.prepare(&job).await;
        // Paced calls wait for their turn right before they go, so that the peer sees them
        // spaced as they were counted.
        let pace = if job.destination == fields::DESTINATION {
            Some((&self.esp_pace, "ESP_RATE_LIMIT"))
        } else {
            let variable = match self.settings.platform {
                Platform::SparkLoop => "SPARKLOOP_RATE_LIMIT",
                Platform::LoyaltySurf(_) => "LOYALTYSURF_RATE_LIMIT",
                Platform::ReferralLoop(_) => "REFERRALLOOP_RATE_LIMIT",
            };
            self.upstream_pace.as_ref().map(|pace| (pace, variable))
        };
        // A connection first, then the turn: a call waiting for a connection when the peer
        // answers 429 must still see the pause.
        let connections = if job.destination == fields::DESTINATION {
            &self.esp_connections
        } else {
            &self.upstream_connections
        };
        let connection = match connections {
            Some(connections) => connections.acquire().await.ok(),
            None => None,
        };
        if let (Some((pace, variable)), Ok(_)) = (pace, &prepared) {
            if let Err(reason) = self.wait_for_turn(&job, pace, variable).await {
                log::warn!("job {} is due again, unsent: {reason}", job.id);
                return;
            }
        }
        let started_at = now_ms();
        let clock = Instant::now();
        let sent = match prepared {
            Ok(request) => match request.send().await {
                Ok(response) => {
                    let answer = Answer::read(response).await;
                    if let (Some((pace, _)), 429) = (pace, answer.status) {
                        pace.pause(answer.retry_after);
                    }
                    let verdict = self.verdict(&job, &answer);
                    Ok((answer, verdict))
                }
                Err(e) => Err(describe_send_error(&e)),
            },
            Err(SendError(error)) => Err(error),
        };
        let elapsed = clock.elapsed();
        drop(connection);
        self.metrics
            .attempt_seconds
            .get_or_create(&DestinationLabels {
                destination: job.destination.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.conclude(job, started_at, elapsed, sent).await;
    }

    /// Sends first tries of field writes in one batch call (one alone goes as usual), then
    /// records each with its own result: a contact the ESP refused in the batch is tried again
    /// later on its own, where its own answer (not there yet, invalid...) decides.
    async fn deliver_batch(&self, jobs: Vec<ClaimedJob>) {
        if jobs.len() < 2 {
            for job in jobs {
                self.deliver(job).await;
            }
            return;
        }
        // The pace counts the batch as one call; the states are read once it is its turn, so
        // that they are as fresh as they can be.
        self.esp_pace.acquire().await;
        let ids: Vec<i64> = jobs.iter().map(|job| job.subscriber_id).collect();
        let states = self
            .db
            .read_async(move |conn| {
                ids.iter()
                    .map(|id| subscribers::referral_state(conn, *id))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await;
        let states = match states {
            Ok(states) => states,
            Err(e) => {
                let error = format!("cannot read the subscribers: {e}");
                for job in jobs {
                    self.conclude(job, now_ms(), Duration::ZERO, Err(error.clone()))
                        .await;
                }
                return;
            }
        };
        // Every claim must outlast the call.
        let mut ready = Vec::new();
        for (job, state) in jobs.into_iter().zip(states) {
            let Some(state) = state else {
                let error = format!("subscriber {} is not in the database", job.subscriber_id);
                self.conclude(job, now_ms(), Duration::ZERO, Err(error))
                    .await;
                continue;
            };
            match self.keep_claim(&job).await {
                Ok(()) => ready.push((job, state)),
                Err(reason) => log::warn!("job {} is due again, unsent: {reason}", job.id),
            }
        }
        if ready.is_empty() {
            return;
        }
        let values: Vec<_> = ready
            .iter()
            .map(|(_, state)| self.settings.esp.fields.values(state))
            .collect();
        let esp_ids: Vec<Option<serde_json::Value>> = ready
            .iter()
            .map(|(_, state)| subscribers::esp_id_value(state.esp_id.as_deref()))
            .collect();
        let updates: Vec<FieldUpdate<'_>> = ready
            .iter()
            .zip(&values)
            .zip(&esp_ids)
            .map(|(((_, state), values), esp_id)| FieldUpdate {
                email: &state.email,
                esp_id: esp_id.as_ref(),
                fields: values,
            })
            .collect();
        let emails: Vec<&str> = updates.iter().map(|u| u.email).collect();
        let request = self.esp.batch_update(&updates).map(|r| self.outbound(r));
        let connection = match &self.esp_connections {
            Some(connections) => connections.acquire().await.ok(),
            None => None,
        };
        let started_at = now_ms();
        let clock = Instant::now();
        let sent = match request {
            Some(Ok(request)) => match request.send().await {
                Ok(response) => Ok(Answer::read_up_to(response, LOOKUP_BODY_BYTES).await),
                Err(e) => Err(describe_send_error(&e)),
            },
            Some(Err(SendError(e))) => Err(e),
            None => Err("the ESP has no batch endpoint".into()),
        };
        let elapsed = clock.elapsed();
        drop(connection);
        self.metrics
            .attempt_seconds
            .get_or_create(&DestinationLabels {
                destination: fields::DESTINATION.into(),
            })
            .observe(elapsed.as_secs_f64());
        let results: Vec<Result<(Answer, WriteVerdict), String>> = match &sent {
            Ok(answer) if (200..300).contains(&answer.status) => {
                let read = self.esp.read_batch(
                    &outbound::Answer {
                        status: answer.status,
                        retry_after: answer.retry_after,
                        body: &answer.body,
                    },
                    &emails,
                );
                let mut kept = answer.clone();
                kept.body.truncate(KEPT_BODY_BYTES);
                read.into_iter()
                    .map(|result| match result {
                        Ok(()) => Ok((kept.clone(), WriteVerdict::Done)),
                        Err(reason) => Err(format!(
                            "HTTP {} for the batch, refused for this contact: {reason}",
                            answer.status
                        )),
                    })
                    .collect()
            }
            Ok(answer) => {
                if answer.status == 429 {
                    self.esp_pace.pause(answer.retry_after);
                }
                let error = format!("HTTP {} for the batch", answer.status);
                emails.iter().map(|_| Err(error.clone())).collect()
            }
            Err(error) => emails.iter().map(|_| Err(error.clone())).collect(),
        };
        drop(updates);
        for ((job, _), result) in ready.into_iter().zip(results) {
            self.conclude(job, started_at, elapsed, result).await;
        }
    }

    /// Makes sure a claim outlasts a call and its recording: extends it when it is short, or
    /// says why the job is no longer this worker's to send.
    async fn keep_claim(&self, job: &ClaimedJob) -> Result<(), String> {
        let now = now_ms();
        let needed = (self.settings.worker.request_timeout + Duration::from_secs(1)).as_millis();
        if job.lease_expires_at - now >= needed as i64 {
            return Ok(());
        }
        let (claim, token) = (job.clone(), self.lease_token.clone());
        let until = now + self.settings.worker.lease.as_millis() as i64;
        let renewed = self
            .db
            .write_async(move |conn| jobs::renew_lease(conn, &claim, &token, now, until))
            .await
            .map_err(|e| format!("cannot extend its claim: {e}"))?;
        if renewed {
            Ok(())
        } else {
            Err("its claim ran out while it waited for its turn".into())
        }
    }

    /// Turns what came of an attempt into the job's outcome, and records both.
    async fn conclude(
        &self,
        job: ClaimedJob,
        started_at: i64,
        elapsed: Duration,
        sent: Result<(Answer, WriteVerdict), String>,
    ) {
        let now = now_ms();
        let failures = job.attempts as u32 + 1;
        let policy = self.settings.retry;
        let (status_code, error, response_body, outcome) = match sent {
            Ok((answer, verdict)) => {
                let error = format!("HTTP {}", answer.status);
                let outcome = match verdict {
                    WriteVerdict::Done => Outcome::Done,
                    WriteVerdict::NotThereYet => retry::after_failure(
                        &policy,
                        job.retry_from,
                        failures,
                        None,
                        now,
                        format!("{error}: the ESP does not have this contact yet"),
                    ),
                    WriteVerdict::RetryLater { after } => retry::after_failure(
                        &policy,
                        job.retry_from,
                        failures,
                        after,
                        now,
                        error.clone(),
                    ),
                    WriteVerdict::Failed => {
                        // The peer's own reason is what the operator needs to fix it.
                        let said = outbound::error_text(&answer.body);
                        let said = said.trim();
                        Outcome::Dead {
                            error: if said.is_empty() {
                                format!("{error}: refused, not retried")
                            } else {
                                format!("{error}: {said} (refused, not retried)")
                            },
                        }
                    }
                };
                let error = (outcome != Outcome::Done).then_some(error);
                (
                    Some(answer.status as i32),
                    error,
                    Some(answer.body),
                    outcome,
                )
            }
            Err(error) => {
                let outcome = retry::after_failure(
                    &policy,
                    job.retry_from,
                    failures,
                    None,
                    now,
                    error.clone(),
                );
                (None, Some(error), None, outcome)
            }
        };
        let label = match &outcome {
            Outcome::Done => "done",
            Outcome::Retry { .. } => "retry",
            Outcome::Dead { .. } => "dead",
        };
        self.metrics
            .jobs
            .get_or_create(&JobLabels {
                kind: job.kind.clone(),
                outcome: label,
            })
            .inc();
        match &outcome {
            Outcome::Done => log::info!(
                "job {} ({} to {}) delivered",
                job.id,
                job.kind,
                job.destination
            ),
            Outcome::Retry { run_at, error } => log::warn!(
                "job {} ({} to {}) failed ({error}); retrying in {:.1}s",
                job.id,
                job.kind,
                job.destination,
                (run_at - now) as f64 / 1000.0
            ),
            Outcome::Dead { error } => log::error!(
                "job {} ({} to {}) is dead: {error}",
                job.id,
                job.kind,
                job.destination
            ),
        }
        let attempt = NewAttempt {
            job_id: job.id,
            started_at,
            duration_ms: elapsed.as_millis() as i64,
            status_code,
            error,
            response_body,
        };
        let job_id = job.id;
        let recorded = self
            .recorder
            .write(Attempted {
                job,
                attempt,
                outcome,
                now,
            })
            .await;
        match recorded {
            Ok(true) => {}
            Ok(false) => log::warn!(
                "job {job_id} was claimed by another worker after its lease ran out; its state is theirs"
            ),
            // The lease runs out and the job is sent again: at-least-once, never lost.
            Err(e) => log::error!("cannot record the attempt of job {job_id}: {e}"),
        }
        if label == "done" {
            // The subscriber's next job may be waiting for this one.
            self.wake.notify_one();
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
        variable: &str,
    ) -> Result<(), String> {
        pace.acquire().await;
        self.keep_claim(job)
            .await
            .map_err(|reason| format!("{reason} ({variable})"))
    }

    /// The request that sends a job, or what stopped it from being made.
    async fn prepare(&self, job: &ClaimedJob) -> Result<reqwest::RequestBuilder, SendError> {
        if job.destination == fields::DESTINATION {
            return self.prepare_field_write(job).await;
        }
        if job.destination != self.upstream {
            unreachable!("only deliverable destinations are claimed");
        }
        let (call, bearer) = match &self.settings.platform {
            Platform::SparkLoop => return self.prepare_sparkloop(job),
            Platform::LoyaltySurf(api) => (
                upstream::loyaltysurf_call(api, &job.kind, &job.payload),
                &api.api_key,
            ),
            Platform::ReferralLoop(api) => (
                upstream::referralloop_call(api, &job.kind, &job.payload),
                &api.api_key,
            ),
        };
        let mut request = self.api_request(call.map_err(SendError)?)?;
        if let Some(key) = bearer {
            request = request.bearer_auth(key.expose());
        }
        Ok(request)
    }

    /// An API call as a request, with a JSON body when it has one.
    fn api_request(&self, call: ApiCall) -> Result<reqwest::RequestBuilder, SendError> {
        let method = reqwest::Method::from_bytes(call.method.as_bytes())
            .map_err(|_| SendError(format!("no HTTP method {}", call.method)))?;
        let mut request = self
            .client
            .request(method, &call.url)
            .header(reqwest::header::ACCEPT, "application/json");
        if !call.body.is_empty() {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(call.body);
        }
        Ok(request)
    }

    /// The request that sends a job to SparkLoop, by webhook or API as configured.
    fn prepare_sparkloop(&self, job: &ClaimedJob) -> Result<reqwest::RequestBuilder, SendError> {
        match &self.settings.sparkloop.upstream {
            Upstream::Webhook { url } => Ok(self
                .client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(job.payload.clone())),
            Upstream::Api => {
                let settings = &self.settings.sparkloop;
                let call = sparkloop::api_call(&settings.api_url, &job.kind, &job.payload)
                    .map_err(SendError)?;
                let mut request = self.api_request(call)?;
                if let Some(key) = &settings.api_key {
                    request = request.header("X-Api-Key", key.expose());
                }
                Ok(request)
            }
        }
    }

    /// How to take a job's answer, as its destination reads it.
    fn verdict(&self, job: &ClaimedJob, answer: &Answer) -> WriteVerdict {
        if job.destination == fields::DESTINATION {
            return self.esp.read_answer(&outbound::Answer {
                status: answer.status,
                retry_after: answer.retry_after,
                body: &answer.body,
            });
        }
        let platform = &self.settings.platform;
        let api = matches!(self.settings.sparkloop.upstream, Upstream::Api);
        if matches!(platform, Platform::SparkLoop)
            && api
            && sparkloop::already_done(&job.kind, answer.status, &answer.body)
        {
            return WriteVerdict::Done;
        }
        if let Some(verdict) = upstream::special_verdict(platform, &job.kind, answer.status) {
            return verdict;
        }
        match retry::verdict(answer.status) {
            Verdict::Delivered => WriteVerdict::Done,
            Verdict::Retryable => WriteVerdict::RetryLater {
                after: answer.retry_after,
            },
            Verdict::Refused => WriteVerdict::Failed,
        }
    }

    /// The request that writes the subscriber's referral fields as they are now (so that one
    /// job carries every change made since it was queued).
    async fn prepare_field_write(
        &self,
        job: &ClaimedJob,
    ) -> Result<reqwest::RequestBuilder, SendError> {
        let id = job.subscriber_id;
        let state = self
            .db
            .read_async(move |conn| subscribers::referral_state(conn, id))
            .await
            .map_err(|e| SendError(format!("cannot read the subscriber: {e}")))?
            .ok_or_else(|| SendError(format!("subscriber {id} is not in the database")))?;
        let values = self.settings.esp.fields.values(&state);
        if self.esp.needs_field_ids() {
            self.learn_field_ids().await?;
        }
        if let Some(read) = self.esp.read_before_write(&state.email) {
            return self.merged_write(job, &state, &values, read).await;
        }
        let mut esp_id = subscribers::esp_id_value(state.esp_id.as_deref());
        if esp_id.is_none() {
            if let Some(lookup) = self.esp.id_lookup(&state.email) {
                esp_id = Some(self.look_up_id(job.subscriber_id, lookup).await?);
            }
        }
        let update = FieldUpdate {
            email: &state.email,
            esp_id: esp_id.as_ref(),
            fields: &values,
        };
        let message = message_id(job.id, &update);
        self.outbound(self.esp.field_update(&update, &message))
    }

    /// An adapter's request, ready to send.
    fn outbound(
        &self,
        request: outbound::OutboundRequest,
    ) -> Result<reqwest::RequestBuilder, SendError> {
        http_request(&self.client, request).map_err(SendError)
    }

    /// Reads the contact (paced like any call), then makes the write that merges the fields
    /// into what it holds; no contact yet, or a failed read, leaves the job to be tried again.
    async fn merged_write(
        &self,
        job: &ClaimedJob,
        state: &subscribers::ReferralState,
        values: &[(String, serde_json::Value)],
        read: outbound::OutboundRequest,
    ) -> Result<reqwest::RequestBuilder, SendError> {
        self.esp_pace.acquire().await;
        let response =
            self.outbound(read)?.send().await.map_err(|e| {
                SendError(format!("reading the contact: {}", describe_send_error(&e)))
            })?;
        let answer = Answer::read_up_to(response, LOOKUP_BODY_BYTES).await;
        if answer.status == 429 {
            self.esp_pace.pause(answer.retry_after);
        }
        let esp_id = subscribers::esp_id_value(state.esp_id.as_deref());
        let update = FieldUpdate {
            email: &state.email,
            esp_id: esp_id.as_ref(),
            fields: values,
        };
        let message = message_id(job.id, &update);
        let current = outbound::Answer {
            status: answer.status,
            retry_after: answer.retry_after,
            body: &answer.body,
        };
        match self.esp.merged_update(&update, &message, &current) {
            Ok(request) => self.outbound(request),
            Err(outbound::MergeError::NotThereYet) => Err(SendError(
                "the ESP has no contact with this address yet".into(),
            )),
            Err(outbound::MergeError::Failed(reason)) => Err(SendError(reason)),
        }
    }

    /// Reads the ESP's field ids (ActiveCampaign's writes go by id), paced like any call.
    async fn learn_field_ids(&self) -> Result<(), SendError> {
        let Some(list) = self.esp.list_fields() else {
            return Ok(());
        };
        self.esp_pace.acquire().await;
        let response = self.outbound(list)?.send().await.map_err(|e| {
            SendError(format!(
                "listing the ESP's fields: {}",
                describe_send_error(&e)
            ))
        })?;
        let answer = Answer::read_up_to(response, LOOKUP_BODY_BYTES).await;
        if answer.status == 429 {
            self.esp_pace.pause(answer.retry_after);
        }
        self.esp
            .learn_fields(&outbound::Answer {
                status: answer.status,
                retry_after: answer.retry_after,
                body: &answer.body,
            })
            .map_err(SendError)
    }

    /// Finds the ESP's id of a subscriber with the adapter's `lookup` call (paced like any
    /// call to the ESP), and keeps it. No contact yet is an error, so that the write is tried
    /// again later with the usual back-off.
    async fn look_up_id(
        &self,
        subscriber_id: i64,
        lookup: outbound::OutboundRequest,
    ) -> Result<serde_json::Value, SendError> {
        self.esp_pace.acquire().await;
        let response = self.outbound(lookup)?.send().await.map_err(|e| {
            SendError(format!(
                "looking up the contact: {}",
                describe_send_error(&e)
            ))
        })?;
        // The whole answer is read: the id may come after a lot of other data.
        let answer = Answer::read_up_to(response, LOOKUP_BODY_BYTES).await;
        if answer.status == 429 {
            self.esp_pace.pause(answer.retry_after);
        }
        let id = self.esp.read_id(&outbound::Answer {
            status: answer.status,
            retry_after: answer.retry_after,
            body: &answer.body,
        });
        match id {
            Some(id) => {
                let literal = id.to_string();
                self.db
                    .write_async(move |conn| subscribers::set_esp_id(conn, subscriber_id, &literal))
                    .await
                    .map_err(|e| SendError(format!("cannot keep the contact's id: {e}")))?;
                Ok(id)
            }
            None if (200..300).contains(&answer.status) => Err(SendError(
                "the ESP has no contact with this address yet".into(),
            )),
            None => Err(SendError(format!(
                "HTTP {} looking up the contact",
                answer.status
            ))),
        }
    }
}

/// An adapter's request as a reqwest request on `client` (headers, and the body when it has one).
pub fn http_request(
    client: &reqwest::Client,
    request: outbound::OutboundRequest,
) -> Result<reqwest::RequestBuilder, String> {
    let method = reqwest::Method::from_bytes(request.method.as_bytes())
        .map_err(|_| format!("the adapter asked for method {}", request.method))?;
    let mut call = client.request(method, &request.url);
    if !request.body.is_empty() {
        call = call.body(request.body);
    }
    for (name, value) in &request.headers {
        call = call.header(name, value);
    }
    Ok(call)
}

/// The id of the message that writes `update` for job `job_id`: the same for the same job and
/// content, so that a receiver may drop a repeat.
fn message_id(job_id: i64, update: &FieldUpdate<'_>) -> MessageId {
    let digest = Sha256::digest(format!("{update:?}").as_bytes());
    MessageId {
        id: format!("msg_{job_id}_{}", &hex::encode(digest)[..16]),
        timestamp: now_ms() / 1000,
    }
}

/// Why a job got no answer (a network error, the database), in words for the operator; the
/// job is tried again later.
struct SendError(String);

/// What came back from a call.
#[derive(Clone)]
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    body: String,
}

impl Answer {
    /// Reads the status, `Retry-After` and the start of the body (what is kept with an attempt).
    async fn read(response: reqwest::Response) -> Answer {
        Self::read_up_to(response, KEPT_BODY_BYTES).await
    }

    /// Reads the status, `Retry-After` and the body up to `limit` bytes.
    async fn read_up_to(mut response: reqwest::Response, limit: usize) -> Answer {
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        // Brevo says when its window resets instead of sending Retry-After; LoyaltySurf how
        // long each of its windows has left, of which the longest holds.
        let retry_after = header("retry-after")
            .and_then(|v| retry::parse_retry_after(&v, SystemTime::now()))
            .or_else(|| {
                header("x-sib-ratelimit-reset")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs)
            })
            .or_else(|| {
                ["Second", "Minute", "Hour"]
                    .iter()
                    .filter_map(|window| {
                        header(&format!("loyaltysurf-retry-after-{window}-milliseconds"))
                    })
                    .filter_map(|v| v.trim().parse::<u64>().ok())
                    .max()
                    .map(Duration::from_millis)
            });
        let mut body = Vec::new();
        while body.len() < limit {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                // The status is what matters; a body cut short is kept as far as it came.
                Err(_) => break,
            }
        }
        body.truncate(limit);
        Answer {
            status,
            retry_after,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

/// A network error in words an operator can act on, without the URL (which may hold a token).
fn describe_send_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}
