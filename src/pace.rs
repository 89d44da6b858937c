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
/// evenly spaced than they started (scheduling, connection set-up), counts no more either.
pub struct SlidingWindow {
    limit: RateLimit,
    window: Duration,
    state: Mutex<State>,
}

struct State {
    /// When the last `limit.requests` calls started, oldest first.
    started: VecDeque<Instant>,
    /// Nothing starts before this (after the peer answered 429).
    paused_until: Option<Instant>,
}

impl SlidingWindow {
    /// A pacer for `limit`.
    pub fn new(limit: RateLimit) -> Self {
        let margin = (limit.per / 100).max(Duration::from_millis(50));
        SlidingWindow {
            limit,
            window: limit.per + margin,
            state: Mutex::new(State {
                started: VecDeque::with_capacity(limit.requests as usize),
                paused_until: None,
            }),
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
                        while state
                            .started
                            .front()
                            .is_some_and(|&at| now.duration_since(at) >= self.window)
                        {
                            state.started.pop_front();
                        }
                        if state.started.len() < self.limit.requests as usize {
                            state.started.push_back(now);
                            return;
                        }
                        self.window - now.duration_since(state.started[0])
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Starts nothing for `delay` (the peer answered 429; with no `Retry-After`, a whole window).
    pub fn pause(&self, delay: Option<Duration>) {
        let until = Instant::now() + delay.unwrap_or(self.limit.per);
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
