//! Recording what came of an attempt: the job's outcome (done, retried after the back-off,
//! dead), its metrics and log line, and the attempt, written in batches.

use std::time::Duration;

use referral_bridge_adapters::outbound::{self, WriteVerdict};
use referral_bridge_adapters::platform::{ReferralData, DELETE};

use super::deliver::Unsent;
use super::retry;
use super::Worker;
use crate::db::jobs::{ClaimedJob, NewAttempt, Outcome, Written};
use crate::db::now_ms;
use crate::metrics::JobLabels;
use crate::send::Answer;

/// An attempt to record, with the job's outcome.
pub(super) struct Attempted {
    pub(super) job: ClaimedJob,
    pub(super) attempt: NewAttempt,
    pub(super) outcome: Outcome,
    pub(super) now: i64,
    /// A field write's body, kept once it is done.
    pub(super) written: Option<Written>,
    /// What the platform's answer says of the person, kept with the outcome (DESIGN 3.9).
    pub(super) learned: Option<ReferralData>,
}

impl Worker {
    /// Turns what came of an attempt into the job's outcome, and records both (with the body
    /// of a field write, `written`).
    pub(super) async fn conclude(
        &self,
        job: ClaimedJob,
        started_at: i64,
        elapsed: Duration,
        sent: Result<(Answer, WriteVerdict), Unsent>,
        written: Option<Written>,
    ) {
        let now = now_ms();
        let failures = job.attempts as u32 + 1;
        let policy = self.settings.retry;
        let mut learned = None;
        let (status_code, error, response_body, outcome) = match sent {
            Ok((answer, verdict)) => {
                if verdict == WriteVerdict::Done && job.destination != crate::fields::DESTINATION {
                    learned = self
                        .platform
                        .learned(&job.kind, &answer.as_adapter())
                        .map(|update| update.data);
                }
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
            Err(Unsent::Unchanged) => (
                None,
                Some(Unsent::Unchanged.to_string()),
                None,
                Outcome::Skipped,
            ),
            Err(unsent) => {
                let error = unsent.to_string();
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
            Outcome::Skipped => "skipped",
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
            Outcome::Skipped => log::info!(
                "job {} ({} to {}) not sent: {}",
                job.id,
                job.kind,
                job.destination,
                Unsent::Unchanged
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
        let erase = (label == "done" && job.kind == DELETE).then_some(job.subscriber_id);
        let recorded = self
            .recorder
            .write(Attempted {
                job,
                attempt,
                outcome,
                now,
                written,
                learned,
            })
            .await;
        match recorded {
            Ok(true) => {
                if let Some(subscriber_id) = erase {
                    // The platform has forgotten them: now everything here goes too.
                    let (db, metrics) = (self.db.clone(), self.metrics.clone());
                    let erased = tokio::task::spawn_blocking(move || {
                        crate::lifecycle::erase_after_deletion(&db, &metrics, subscriber_id)
                    })
                    .await;
                    match erased {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => log::error!(
                            "subscriber {subscriber_id}: deleted at the platform, but the local erasure failed ({e}); `referral-bridge forget` finishes it"
                        ),
                        Err(e) => log::error!("subscriber {subscriber_id}: the erasure panicked: {e}"),
                    }
                }
            }
            Ok(false) => log::warn!(
                "job {job_id} was claimed by another worker after its lease ran out; its state is theirs"
            ),
            // The lease runs out and the job is sent again: at-least-once, never lost.
            Err(e) => log::error!("cannot record the attempt of job {job_id}: {e}"),
        }
        if matches!(label, "done" | "skipped") {
            // The subscriber's next job may be waiting for this one.
            self.wake.notify_one();
        }
    }
}
