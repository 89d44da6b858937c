//! Pacing outgoing calls to a peer's rate limit, as the peer counts it: at most N calls in any
//! window of the given length (a rolling window).
//!
//! governor's GCRA would let a full burst through and then the steady rate, so one window could
//! see nearly twice the limit; rate-limited APIs (SparkLoop's 120 per 60 s, the ESPs') count
//! calls in a rolling window, so the times of the last N calls are kept instead.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::RateLimit;

/// Lets at most `limit.requests` calls start in any window of `limit.per` plus a margin (1% of
/// the window, at least 50 ms), so that the peer, which sees the calls a little later and less
/// evenly spaced than they started (scheduling, connection set-up), counts no more either. With
/// several limits (LoyaltySurf: 30 per 5 s and 200 per minute) every one holds.
pub struct SlidingWindow {
    /// Each limit with its window, margin included.
    limits: Vec<(RateLimit, Duration)>,
    state: Mutex<State>,
}

struct State {
    /// For each limit, when the last `requests` calls started, oldest first.
    started: Vec<VecDeque<Instant>>,
    /// Nothing starts before this (after the peer answered 429).
    paused_until: Option<Instant>,
}

impl SlidingWindow {
    /// A pacer for `limit`.
    pub fn new(limit: RateLimit) -> Self {
        Self::with_limits(&[limit])
    }

    /// A pacer keeping to every one of `limits` at once.
    pub fn with_limits(limits: &[RateLimit]) -> Self {
        let limits: Vec<(RateLimit, Duration)> = limits
            .iter()
            .map(|limit| {
                let margin = (limit.per / 100).max(Duration::from_millis(50));
                (*limit, limit.per + margin)
            })
            .collect();
        SlidingWindow {
            state: Mutex::new(State {
                started: limits
                    .iter()
                    .map(|(limit, _)| VecDeque::with_capacity(limit.requests as usize))
                    .collect(),
                paused_until: None,
            }),
            limits,
        }
    }

    /// Waits until a call may start, and counts it as started.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                match state.paused_until {
                    Some(until) if until > now => until - now,
                    _ => {
                        // The longest wait any full window imposes; none when all have room.
                        let mut wait = Duration::ZERO;
                        for ((limit, window), started) in
                            self.limits.iter().zip(state.started.iter_mut())
                        {
                            while started
                                .front()
                                .is_some_and(|&at| now.duration_since(at) >= *window)
                            {
                                started.pop_front();
                            }
                            if started.len() >= limit.requests as usize {
                                wait = wait.max(*window - now.duration_since(started[0]));
                            }
                        }
                        if wait.is_zero() {
                            // Counted in every window at the same instant, as the peer sees it.
                            for started in state.started.iter_mut() {
                                started.push_back(now);
                            }
                            return;
                        }
                        wait
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Starts nothing for `delay` (the peer answered 429; with no `Retry-After`, the longest
    /// window).
    pub fn pause(&self, delay: Option<Duration>) {
        let longest = self.limits.iter().map(|(limit, _)| limit.per).max();
        let until = Instant::now() + delay.or(longest).unwrap_or(Duration::from_secs(1));
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.paused_until = Some(state.paused_until.map_or(until, |p| p.max(until)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn no_window_holds_more_than_the_limit() {
        let pace = SlidingWindow::new(RateLimit {
            requests: 3,
            per: Duration::from_secs(1),
        });
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..7 {
            pace.acquire().await;
            times.push(start.elapsed());
        }
        // Three at once, three a window later, one more a window after that.
        let window = Duration::from_millis(1050);
        assert_eq!(&times[..3], &[Duration::ZERO; 3]);
        assert!(times[3..6].iter().all(|t| *t == window));
        assert_eq!(times[6], window * 2);
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..].iter().filter(|u| **u - *t < window).count();
            assert!(in_window <= 3);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_limit_holds_at_once() {
        // LoyaltySurf's 30 per 5 s and 200 per minute, scaled down: 3 per 1 s and 5 per 10 s.
        let limits = [
            RateLimit::parse("3/1s").unwrap(),
            RateLimit::parse("5/10s").unwrap(),
        ];
        let pace = SlidingWindow::with_limits(&limits);
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..8 {
            pace.acquire().await;
            times.push(start.elapsed());
        }
        for (limit, window) in [
            (3, Duration::from_millis(1050)),
            (5, Duration::from_millis(10100)),
        ] {
            for (i, t) in times.iter().enumerate() {
                let in_window = times[i..].iter().filter(|u| **u - *t < window).count();
                assert!(in_window <= limit, "{times:?}");
            }
        }
        // Three at once, two a short window later, then the long window holds the rest back.
        assert_eq!(times[4], Duration::from_millis(1050));
        assert_eq!(times[5], Duration::from_millis(10100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_everything_back() {
        let pace = SlidingWindow::new(RateLimit {
            requests: 10,
            per: Duration::from_secs(1),
        });
        let start = Instant::now();
        pace.pause(Some(Duration::from_secs(5)));
        pace.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }
}
