//! What a failed attempt means for its job: another try later, or dead.

use std::time::Duration;

use rand::Rng;

use crate::config::RetryPolicy;
use crate::db::jobs::Outcome;

/// The delay before retry number `attempt` (1 for the first retry): the base delay doubled per
/// attempt, capped at the maximum, with "equal jitter" (a random point in its upper half) so that
/// a burst of failures does not come back all at once. Never longer than `max_delay`.
pub fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(32);
    let delay = policy
        .base_delay
        .saturating_mul(1u32 << exponent.min(31))
        .min(policy.max_delay);
    let half = delay / 2;
    half + rand::rng().random_range(Duration::ZERO..=delay - half)
}

/// The outcome of a failed attempt of a job whose retry horizon began at `retry_from` and which
/// has now failed `failures` times: retried after the back-off (or the peer's `Retry-After`,
/// within `max_delay`), but never past the horizon; dead once the horizon is reached.
pub fn after_failure(
    policy: &RetryPolicy,
    retry_from: i64,
    failures: u32,
    retry_after: Option<Duration>,
    now: i64,
    error: String,
) -> Outcome {
    let deadline = retry_from.saturating_add(crate::config::millis(policy.max_age));
    if now >= deadline {
        return Outcome::Dead {
            error: format!(
                "gave up after {}: {error}",
                humantime::format_duration(policy.max_age)
            ),
        };
    }
    let delay = match retry_after {
        Some(asked) => asked.min(policy.max_delay),
        None => backoff(policy, failures),
    };
    let run_at = now
        .saturating_add(crate::config::millis(delay))
        .min(deadline);
    Outcome::Retry { run_at, error }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(6 * 3600),
            max_age: Duration::from_secs(30 * 86400),
        }
    }

    #[test]
    fn backoff_doubles_within_jitter_and_never_passes_the_maximum() {
        let p = policy();
        for attempt in 1..40 {
            let nominal = (p.base_delay * 2u32.saturating_pow(attempt - 1)).min(p.max_delay);
            for _ in 0..50 {
                let d = backoff(&p, attempt);
                assert!(d >= nominal / 2 && d <= nominal, "attempt {attempt}: {d:?}");
                assert!(d <= p.max_delay);
            }
        }
    }

    #[test]
    fn the_horizon_caps_the_next_run_and_then_kills() {
        let p = policy();
        let created = 0;
        let deadline = crate::config::millis(p.max_age);
        match after_failure(&p, created, 50, None, deadline - 1000, "503".into()) {
            Outcome::Retry { run_at, .. } => assert_eq!(run_at, deadline),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            after_failure(&p, created, 51, None, deadline, "503".into()),
            Outcome::Dead { .. }
        ));
        match after_failure(
            &p,
            created,
            1,
            Some(Duration::from_secs(86400)),
            0,
            "429".into(),
        ) {
            Outcome::Retry { run_at, .. } => assert_eq!(run_at, crate::config::millis(p.max_delay)),
            other => panic!("{other:?}"),
        }
    }
}
