//! The admin API under `/admin/api/`: deliveries (filtered, paged, retried, cancelled), a
//! subscriber's fields and timeline, recent counts, the last reconciliation; the OpenAPI document of every endpoint is
//! [`crate::http::openapi`]. `Authorization: Bearer BRIDGE_ADMIN_TOKEN` only, checked by the
//! [`AdminAuth`] extractor before anything else of the request;
//! 404 while the token is unset, 401 for a wrong one. Errors are `application/problem+json`.

pub mod deliveries;
pub mod reconcile;
pub mod stats;
pub mod subscribers;

pub use deliveries::{
    cancel_delivery, get_delivery, list_deliveries, retry_dead, retry_delivery, retry_one, Delivery,
};
pub use stats::{get_stats, stats};
pub use subscribers::{get_subscriber, subscriber_view, SubscriberView};

use secrecy::ExposeSecret;
use std::time::{Duration, UNIX_EPOCH};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::{ready, Ready};

pub use crate::error::AdminError;
use crate::state::AppState;

/// Proof that a request carries the admin credentials; as a handler's first parameter, it is
/// checked before any other part of the request is read.
#[derive(Debug, Clone, Copy)]
pub struct AdminAuth;

impl FromRequest for AdminAuth {
    type Error = AdminError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let checked = match request.app_data::<web::Data<AppState>>() {
            Some(state) => authorize(request, state).map(|()| AdminAuth),
            // Without the state nothing can be checked: refuse rather than let it through.
            None => Err(AdminError::Off),
        };
        ready(checked)
    }
}

/// `BRIDGE_ADMIN_TOKEN`, or [`AdminError::Off`] (404) while it is unset.
pub fn admin_token(state: &AppState) -> Result<&str, AdminError> {
    Ok(state
        .settings
        .admin_token
        .as_ref()
        .ok_or(AdminError::Off)?
        .expose_secret())
}

/// Checks the admin credentials: the bearer token only (DESIGN 3.11: the dashboard's session
/// cookie is not accepted here, so that no other site can make a signed-in browser call the
/// API). The scheme is matched without regard to case (RFC 9110).
pub fn authorize(request: &HttpRequest, state: &AppState) -> Result<(), AdminError> {
    let token = admin_token(state)?;
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_start().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, credentials)| credentials.trim());
    match bearer {
        Some(bearer)
            if referral_bridge_adapters::secrets_match(bearer.as_bytes(), token.as_bytes()) =>
        {
            Ok(())
        }
        _ => Err(AdminError::Unauthorized),
    }
}

/// A time as RFC 3339 (UTC, seconds).
pub fn rfc3339(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Reads a time parameter: RFC 3339 with its offset (`2026-11-26T10:00:00Z`) or unix
/// milliseconds, exactly as the OpenAPI document declares them.
pub(crate) fn parse_time(name: &str, text: &str) -> Result<i64, AdminError> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let parsed = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<i64>().ok()
    } else {
        text.parse::<jiff::Timestamp>()
            .ok()
            .map(|t| t.as_millisecond())
    };
    parsed.ok_or_else(|| {
        AdminError::BadRequest(format!(
            "`{name}`: `{}` is not a time like 2026-11-26T10:00:00Z or unix milliseconds",
            referral_bridge_adapters::excerpt(text)
        ))
    })
}
