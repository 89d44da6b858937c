//! Sending a claimed job: its turn at the peer's pace and connection cap, the call, and how
//! its answer is taken.

use std::time::{Duration, Instant, SystemTime};

use referral_bridge_adapters::outbound::{FieldUpdate, WriteVerdict};
use referral_bridge_adapters::platform::{deletion_payload, CallError, JobSubscriber, DELETE};

use super::Worker;
use crate::db::jobs::{ClaimedJob, Written};
use crate::db::{now_ms, referral, StoreError};
use crate::fields;
use crate::metrics::DestinationLabels;
use crate::send::{describe, http_request, Answer, SendError};
use sha2::{Digest, Sha256};

/// How much of an answer's body is kept with an attempt.
pub(super) const KEPT_BODY_BYTES: usize = 2048;

/// The most of a contact lookup's answer that is read.
pub(super) const LOOKUP_BODY_BYTES: usize = 1 << 20;

/// Why a job got no answer (a network error, the database, a request that cannot be made), in
/// words for the operator; the job is tried again later.
#[derive(Debug, thiserror::Error)]
pub(super) enum Unsent {
    /// The platform's call cannot be made from the job.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The call got no answer.
    #[error(transparent)]
    Send(#[from] SendError),
    /// A call made before the write (reading the contact, its id, the field ids) got no answer.
    #[error("{what}: {source}")]
    Before {
        /// The call, as the operator reads it (`reading the contact`).
        what: &'static str,
        /// Why it got no answer.
        source: SendError,
    },
    /// The database could not be read or written.
    #[error("{what}: {source}")]
    Store {
        /// What was being done (`cannot read the subscriber`).
        what: &'static str,
        /// The database's error.
        source: StoreError,
    },
    /// The job's subscriber is gone.
    #[error("subscriber {0} is not in the database")]
    NoSubscriber(i64),
    /// The ESP does not have the contact yet.
    #[error("the ESP has no contact with this address yet")]
    NotThereYet,
    /// The peer or the adapter refused, for this reason.
    #[error("{0}")]
    Refused(String),
    /// A field write would send byte for byte what was last written: it is not sent.
    #[error("skipped: the same body as the last write to the ESP")]
    Unchanged,
}

/// A job ready to go: the call (with a field write's body), or a field write with nothing new
/// to send.
// One lives on the stack for each job sent, and is moved once: boxing would cost more.
#[allow(clippy::large_enum_variant)]
pub(super) enum Prepared {
    /// The call to make.
    Call(reqwest::RequestBuilder, Option<Written>),
    /// The body is byte for byte the one last written: not sent.
    Unchanged(Written),
}

impl Worker {
    /// Sends one job and records the outcome.
    pub(super) async fn deliver(&self, job: ClaimedJob) {
        let (prepared, written) = match self.prepare(&job).await {
            Ok(Prepared::Call(request, written)) => (Ok(request), written),
            Ok(Prepared::Unchanged(written)) => {
                // Nothing is sent, so no turn at the ESP's pace is taken.
                let unsent = Err(Unsent::Unchanged);
                self.conclude(job, now_ms(), Duration::ZERO, unsent, Some(written))
                    .await;
                return;
            }
            Err(unsent) => (Err(unsent), None),
        };
        // Paced calls wait for their turn right before they go, so that the peer sees them
        // spaced as they were counted.
        let to_esp = job.destination == fields::DESTINATION;
        let pace = if to_esp {
            Some((&self.esp_pace, "ESP_RATE_LIMIT"))
        } else {
            let variable = self.platform.rate_limit_variable();
            self.platform_pace.as_deref().map(|pace| (pace, variable))
        };
        // A connection first, then the turn: a call waiting for a connection when the peer
        // answers 429 must still see the pause.
        let connections = if to_esp {
            &self.esp_connections
        } else {
            &self.platform_connections
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
                    let answer = self.read_answer(&job, response, KEPT_BODY_BYTES).await;
                    if let (Some((pace, _)), 429) = (pace, answer.status) {
                        pace.pause(answer.retry_after);
                    }
                    let verdict = self.verdict(&job, &answer);
                    match self.follow_up(&job, &answer, pace).await {
                        None => Ok((answer, verdict)),
                        Some(followed) => followed,
                    }
                }
                Err(e) => Err(Unsent::Send(e.into())),
            },
            Err(unsent) => Err(unsent),
        };
        let elapsed = clock.elapsed();
        drop(connection);
        self.metrics
            .attempt_seconds
            .get_or_create(&DestinationLabels {
                destination: job.destination.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.conclude(job, started_at, elapsed, sent, written).await;
    }

    /// Sends first tries of field writes in one batch call (one alone goes as usual), then
    /// records each with its own result: a contact the ESP refused in the batch is tried again
    /// later on its own, where its own answer (not there yet, invalid...) decides.
    pub(super) async fn deliver_batch(&self, jobs: Vec<ClaimedJob>) {
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
                    .map(|id| referral::referral_state(conn, *id))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await;
        let states = match states {
            Ok(states) => states,
            Err(e) => {
                let error = format!("cannot read the subscribers: {e}");
                for job in jobs {
                    let unsent = Unsent::Refused(error.clone());
                    self.conclude(job, now_ms(), Duration::ZERO, Err(unsent), None)
                        .await;
                }
                return;
            }
        };
        // Every claim must outlast the call.
        let mut ready = Vec::new();
        for (job, state) in jobs.into_iter().zip(states) {
            let Some(state) = state else {
                let unsent = Unsent::NoSubscriber(job.subscriber_id);
                self.conclude(job, now_ms(), Duration::ZERO, Err(unsent), None)
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
            .map(|(_, state)| {
                crate::fields::values(
                    &self.settings.esp.fields,
                    state,
                    self.settings.sparkloop.reflink_template.as_deref(),
                )
            })
            .collect();
        let esp_ids: Vec<Option<serde_json::Value>> = ready
            .iter()
            .map(|(_, state)| referral::esp_id_value(state.esp_id.as_deref()))
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
        // Each contact's body as a write of its own would send it: what is kept, and what tells
        // a no-op (the same body as the last write) from a change.
        let written: Vec<Written> = updates
            .iter()
            .zip(&ready)
            .map(|(update, (job, _))| {
                let single = self
                    .esp
                    .field_update(update, &super::field_write::message_id(job.id, update));
                Written {
                    body: String::from_utf8_lossy(&single.body).into_owned(),
                    sha256: hex::encode(Sha256::digest(&single.body)),
                }
            })
            .collect();
        let unchanged: Vec<bool> = ready
            .iter()
            .zip(&written)
            .map(|((_, state), w)| state.esp_written_sha256.as_deref() == Some(w.sha256.as_str()))
            .collect();
        let updates: Vec<FieldUpdate<'_>> = updates
            .into_iter()
            .zip(&unchanged)
            .filter(|(_, unchanged)| !**unchanged)
            .map(|(update, _)| update)
            .collect();
        let emails: Vec<&str> = updates.iter().map(|u| u.email).collect();
        let request = (!updates.is_empty())
            .then(|| self.esp.batch_update(&updates))
            .flatten()
            .map(|r| http_request(&self.esp_client, r));
        let connection = match &self.esp_connections {
            Some(connections) => connections.acquire().await.ok(),
            None => None,
        };
        let started_at = now_ms();
        let clock = Instant::now();
        let sent = match request {
            Some(Ok(request)) => match request.send().await {
                Ok(response) => Ok(self.read_esp_answer(response, LOOKUP_BODY_BYTES).await),
                Err(e) => Err(describe(&e)),
            },
            Some(Err(e)) => Err(e.to_string()),
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
        let results: Vec<Result<(Answer, WriteVerdict), Unsent>> = match &sent {
            Ok(answer) if (200..300).contains(&answer.status) => {
                let read = self.esp.read_batch(&answer.as_adapter(), &emails);
                let mut kept = answer.clone();
                kept.body.truncate(KEPT_BODY_BYTES);
                read.into_iter()
                    .map(|result| match result {
                        Ok(()) => Ok((kept.clone(), WriteVerdict::Done)),
                        Err(reason) => Err(Unsent::Refused(format!(
                            "HTTP {} for the batch, refused for this contact: {reason}",
                            answer.status
                        ))),
                    })
                    .collect()
            }
            Ok(answer) => {
                if answer.status == 429 {
                    self.esp_pace.pause(answer.retry_after);
                }
                let error = format!("HTTP {} for the batch", answer.status);
                emails
                    .iter()
                    .map(|_| Err(Unsent::Refused(error.clone())))
                    .collect()
            }
            Err(error) => emails
                .iter()
                .map(|_| Err(Unsent::Refused(error.clone())))
                .collect(),
        };
        drop(updates);
        let mut results = results.into_iter();
        for (((job, _), written), unchanged) in ready.into_iter().zip(written).zip(unchanged) {
            if unchanged {
                let unsent = Err(Unsent::Unchanged);
                self.conclude(job, now_ms(), Duration::ZERO, unsent, Some(written))
                    .await;
                continue;
            }
            let result = results.next().expect("one result per contact sent");
            self.conclude(job, started_at, elapsed, result, Some(written))
                .await;
        }
    }

    /// The request that sends a job (with a field write's body), or what stopped it from being
    /// made.
    async fn prepare(&self, job: &ClaimedJob) -> Result<Prepared, Unsent> {
        if job.destination == fields::DESTINATION {
            return self.prepare_field_write(job).await;
        }
        if job.destination != self.platform.destination() {
            unreachable!("only deliverable destinations are claimed");
        }
        let request = if job.kind == DELETE {
            self.platform
                .request(&job.kind, &self.deletion_with_id(job).await?)?
        } else {
            self.platform.request(&job.kind, &job.payload)?
        };
        Ok(Prepared::Call(
            http_request(&self.platform_client, request)?,
            None,
        ))
    }

    /// A deletion's body with the platform's id of the person as stored now (some platforms
    /// delete by it), which may have arrived after the job was queued.
    async fn deletion_with_id(&self, job: &ClaimedJob) -> Result<String, Unsent> {
        let email = JobSubscriber::read(&job.payload)?.email;
        let id = job.subscriber_id;
        let platform_id = self
            .db
            .read_async(move |conn| referral::platform_id(conn, id))
            .await
            .map_err(|source| Unsent::Store {
                what: "cannot read the subscriber's platform id",
                source,
            })?;
        Ok(deletion_payload(&email, platform_id.as_deref()))
    }

    /// The platform's second call for a job whose first answer asks for one (SparkLoop's
    /// confirming `PUT`), at the same pace; its answer and verdict are the job's.
    async fn follow_up(
        &self,
        job: &ClaimedJob,
        answer: &Answer,
        pace: Option<(&super::pace::SlidingWindow, &'static str)>,
    ) -> Option<Result<(Answer, WriteVerdict), Unsent>> {
        if job.destination == fields::DESTINATION {
            return None;
        }
        let request = self
            .platform
            .follow_up(&job.kind, &job.payload, &answer.as_adapter())?;
        let request = match request {
            Ok(request) => http_request(&self.platform_client, request),
            Err(e) => return Some(Err(e.into())),
        };
        let request = match request {
            Ok(request) => request,
            Err(e) => return Some(Err(Unsent::Send(e))),
        };
        if let Some((pace, variable)) = pace {
            if let Err(reason) = self.wait_for_turn(job, pace, variable).await {
                return Some(Err(Unsent::Refused(reason.to_string())));
            }
        }
        Some(match request.send().await {
            Ok(response) => {
                let answer = self.read_answer(job, response, KEPT_BODY_BYTES).await;
                if let (Some((pace, _)), 429) = (pace, answer.status) {
                    pace.pause(answer.retry_after);
                }
                let verdict = self.platform.read_answer("confirm", &answer.as_adapter());
                Ok((answer, verdict))
            }
            Err(e) => Err(Unsent::Send(e.into())),
        })
    }

    /// Reads a job's answer, the peer's delay as its adapter reads the headers.
    async fn read_answer(
        &self,
        job: &ClaimedJob,
        response: reqwest::Response,
        limit: usize,
    ) -> Answer {
        if job.destination == fields::DESTINATION {
            return self.read_esp_answer(response, limit).await;
        }
        Answer::read(response, limit, |headers| {
            self.platform.retry_after(headers, SystemTime::now())
        })
        .await
    }

    /// Reads an answer of the ESP's, its delay as the ESP's adapter reads the headers.
    pub(super) async fn read_esp_answer(
        &self,
        response: reqwest::Response,
        limit: usize,
    ) -> Answer {
        Answer::read(response, limit, |headers| {
            self.esp.retry_after(headers, SystemTime::now())
        })
        .await
    }

    /// How to take a job's answer, as its destination reads it.
    fn verdict(&self, job: &ClaimedJob, answer: &Answer) -> WriteVerdict {
        if job.destination == fields::DESTINATION {
            self.esp.read_answer(&answer.as_adapter())
        } else {
            self.platform.read_answer(&job.kind, &answer.as_adapter())
        }
    }
}
