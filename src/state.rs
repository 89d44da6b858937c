//! What the HTTP handlers share, apart from the start-up that builds it, so that the handlers
//! and `startup.rs` (which mounts them) do not import each other.

use std::sync::Arc;

use referral_bridge_adapters::platform::PlatformCallbacks;
use referral_bridge_adapters::EspAdapter;
use tokio::sync::Notify;

use crate::config::Settings;
use crate::db::Db;
use crate::metrics::Metrics;
use crate::peers::Peers;

/// What the HTTP handlers share.
pub struct AppState {
    /// The database.
    pub db: Db,
    /// The configuration.
    pub settings: Settings,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// The configured ESP adapter.
    pub esp: Arc<dyn EspAdapter>,
    /// The ESP and the platform as configured, and their paces.
    pub peers: Peers,
    /// SparkLoop's callbacks.
    pub sparkloop: Box<dyn PlatformCallbacks>,
    /// ReferralLoop's webhooks.
    pub referralloop: Box<dyn PlatformCallbacks>,
    /// LoyaltySurf's webhooks.
    pub loyaltysurf: Box<dyn PlatformCallbacks>,
    /// Writes inbound deliveries in batched transactions.
    pub ingest: crate::inbound::ingest::IngestQueue,
    /// Writes platform callbacks in batched transactions.
    pub callbacks: crate::inbound::callbacks::CallbackQueue,
    /// Wakes the workers when a job is queued.
    pub wake_workers: Arc<Notify>,
    /// Whether the workers send the platform's jobs (its URL or key is configured): only then
    /// does a stored ESP event wake them. Waking them for jobs they cannot send made every
    /// ingest batch cost a claim, a write transaction that competed with ingest for SQLite's one
    /// writer: configuring the ESP alone halved ingest.
    pub platform_deliverable: bool,
    /// Whether the workers write ESP fields: only then does a stored callback wake them.
    pub esp_deliverable: bool,
    /// Dashboard sign-ins per source address.
    pub sign_ins: crate::http::limits::SignInLimiter,
    /// Webhook requests per source address (`BRIDGE_INBOUND_RATE_LIMIT`).
    pub inbound_limit: Option<crate::http::limits::InboundLimiter>,
}
