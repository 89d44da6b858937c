//! Limits per source address, with `governor`'s keyed limiter (DESIGN 3.11): dashboard
//! sign-ins, and webhook requests (`BRIDGE_INBOUND_RATE_LIMIT`). Addresses not heard from for a
//! while are forgotten, so that the maps stay small.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use actix_web::HttpRequest;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::RateLimit;
use crate::error::{AdminError, WebhookError};

/// Sign-ins allowed from one address at once; then one a minute.
const SIGN_INS_PER_MINUTE: u32 = 5;

/// How many addresses a limiter remembers before it forgets those whose limit has recovered.
const ADDRESSES_KEPT: usize = 10_000;

/// A limit per source address.
struct PerAddress(DefaultKeyedRateLimiter<IpAddr>);

impl PerAddress {
    fn new(quota: Quota) -> Self {
        PerAddress(RateLimiter::keyed(quota))
    }

    /// Counts a request from the request's address; `Err` with the wait when it is one too many.
    /// A request without a peer address (none over TCP) is not limited.
    fn check(&self, request: &HttpRequest) -> Result<(), Duration> {
        let Some(address) = request.peer_addr().map(|a| a.ip()) else {
            return Ok(());
        };
        if self.0.len() > ADDRESSES_KEPT {
            self.0.retain_recent();
            self.0.shrink_to_fit();
        }
        self.0
            .check_key(&address)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// Sign-in attempts per source address: five at once, then one a minute, so that the sixth
/// wrong token within a minute is refused (429) whatever it is.
pub struct SignInLimiter(PerAddress);

impl Default for SignInLimiter {
    fn default() -> Self {
        let quota = Quota::with_period(Duration::from_secs(60))
            .expect("a minute is not zero")
            .allow_burst(NonZeroU32::new(SIGN_INS_PER_MINUTE).expect("not zero"));
        SignInLimiter(PerAddress::new(quota))
    }
}

impl SignInLimiter {
    /// Counts an attempt from the request's address; `Err` with the wait when it is one too
    /// many.
    pub fn attempt(&self, request: &HttpRequest) -> Result<(), AdminError> {
        self.0.check(request).map_err(AdminError::TooManyRequests)
    }
}

/// Webhook requests per source address (`BRIDGE_INBOUND_RATE_LIMIT`): `requests` at once, then
/// at that rate.
pub struct InboundLimiter(PerAddress);

impl InboundLimiter {
    /// The limiter for `limit`.
    pub fn new(limit: &RateLimit) -> Self {
        let requests = NonZeroU32::new(limit.requests.max(1)).expect("at least one");
        let period = limit.per / requests.get();
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
            .expect("not zero")
            .allow_burst(requests);
        InboundLimiter(PerAddress::new(quota))
    }

    /// Counts a webhook request; a 429 with the wait when it is one too many.
    pub fn check(&self, request: &HttpRequest) -> Result<(), WebhookError> {
        self.0
            .check(request)
            .map_err(|wait| WebhookError::TooManyRequests { wait })
    }
}
