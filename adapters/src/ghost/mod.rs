//! Ghost (Admin API v5). In ([`inbound`]): member webhooks (`member.added`, `member.edited`,
//! `member.deleted`: `{"member": {"current", "previous"}}`), signed with
//! `X-Ghost-Signature: sha256=<hex HMAC-SHA256 of body followed by t>, t=<unix ms>`. Out
//! ([`admin`]): Ghost has no custom fields, so the referral data goes into the member's `note`
//! (one line, `referral-bridge: {…}`, the rest of the note kept; Ghost allows 2,000 characters)
//! and/or `labels` (`RH_CODE: ab12cd`, the member's other labels kept), as `ESP_WRITE_TO` says:
//! the member is read (`GET /members/?filter=email:'…'`) and written back merged
//! (`PUT /members/{id}/`), with a short-lived Admin API JWT (`ESP_API_KEY` = `id:secret`).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::outbound::EspConfig;

pub mod admin;
pub mod inbound;

pub use admin::{admin_token, NOTE_LIMIT, NOTE_PREFIX};
pub use inbound::{parse_webhook, verify_signature};

/// The `ESP_RATE_LIMIT` used unless one is set. Ghost's Admin API: a modest pace (it publishes no limit).
pub const DEFAULT_RATE_LIMIT: &str = "10/1s";

/// The Ghost adapter.
#[derive(Debug, Default, Clone)]
pub struct Ghost {
    config: EspConfig,
}

impl Ghost {
    /// The adapter, reaching Ghost as `config` says (`api_url`: the site's admin URL).
    pub fn new(config: EspConfig) -> Self {
        Ghost { config }
    }
}

/// Now, in unix milliseconds.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
