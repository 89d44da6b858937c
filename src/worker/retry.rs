//! What a failed attempt means for its job: another try later, or dead.

use std::time::Duration;

use rand::Rng;

use crate::config::RetryPolicy;
use crate::db::jobs::Outcome;

/// How an HTTP answer is to be read, for destinations that follow the usual rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx.
    Delivered,
    /// 408, 429, 5xx: the peer may accept it later.
    Retryable,
    /// Any other status: sending it again would fail the same way.
    Refused,
}

/// Reads a status code: 2xx delivered; 408, 429 and 5xx retried; the rest refused.
pub fn verdict(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 429 | 500..=599 => Verdict::Retryable,
        _ => Verdict::Refused,
    }
}

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

/// Reads a `Retry-After` value: seconds, or an HTTP date.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    httpdate::parse_http_date(value)
        .ok()
        .map(|at| at.duration_since(now).unwrap_or(Duration::ZERO))
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
    let deadline = retry_from.saturating_add(policy.max_age.as_millis() as i64);
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
    let run_at = now.saturating_add(delay.as_millis() as i64).min(deadline);
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
    fn statuses() {
        assert_eq!(verdict(200), Verdict::Delivered);
        assert_eq!(verdict(204), Verdict::Delivered);
        for s in [408, 429, 500, 502, 503] {
            assert_eq!(verdict(s), Verdict::Retryable);
        }
        for s in [301, 400, 401, 404, 422] {
            assert_eq!(verdict(s), Verdict::Refused);
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn the_horizon_caps_the_next_run_and_then_kills() {
        let p = policy();
        let created = 0;
        let deadline = p.max_age.as_millis() as i64;
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
            Outcome::Retry { run_at, .. } => assert_eq!(run_at, p.max_delay.as_millis() as i64),
            other => panic!("{other:?}"),
        }
    }
}
