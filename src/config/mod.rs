//! One `Settings` tree, read from defaults, an optional TOML file named by `BRIDGE_CONFIG`, a
//! `.env` file and the environment (the environment wins), and checked before anything starts.

pub mod fields;
mod raw;
mod values;

use secrecy::ExposeSecret;
use std::collections::HashMap;
use std::time::Duration;

use referral_bridge_adapters::loyaltysurf::LoyaltySurfApi;
use referral_bridge_adapters::referralloop::ReferralLoopApi;

use raw::Raw;
use values::invalid;
pub use values::{
    millis, parse_duration, ConfigError, DatabaseUrl, LogFormat, RateLimit, Secret, MAX_DURATION,
};

/// How ESP events reach SparkLoop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// `subscribe` / `update` / `unsubscribe` POSTed to the incoming webhook URL.
    Webhook {
        /// `SPARKLOOP_INCOMING_WEBHOOK_URL`.
        url: String,
    },
    /// SparkLoop API v2 calls.
    Api,
}

/// Where ESP events go (`BRIDGE_PLATFORM`).
#[derive(Debug, Clone)]
pub enum Platform {
    /// SparkLoop, through its incoming webhook or API ([`SparkLoopSettings`]).
    SparkLoop,
    /// LoyaltySurf's API.
    LoyaltySurf {
        /// `LOYALTYSURF_*`, as the adapter takes them.
        api: LoyaltySurfApi,
        /// `LOYALTYSURF_RATE_LIMIT`: every window holds.
        rate_limits: Vec<RateLimit>,
    },
    /// ReferralLoop's API.
    ReferralLoop {
        /// `REFERRALLOOP_*`, as the adapter takes them.
        api: ReferralLoopApi,
        /// `REFERRALLOOP_RATE_LIMIT`.
        rate_limit: RateLimit,
    },
}

/// The SparkLoop side of the configuration.
#[derive(Debug, Clone)]
pub struct SparkLoopSettings {
    /// How ESP events are delivered.
    pub upstream: Upstream,
    /// `SPARKLOOP_API_URL`.
    pub api_url: String,
    /// `SPARKLOOP_API_KEY`.
    pub api_key: Option<Secret>,
    /// `SPARKLOOP_WEBHOOK_TOKEN`: callbacks are refused while unset.
    pub webhook_token: Option<Secret>,
    /// `SPARKLOOP_RATE_LIMIT`: calls to the SparkLoop API per window.
    pub rate_limit: RateLimit,
    /// `SPARKLOOP_CAMPAIGN_ID`: the campaign whose webhooks `sparkloop webhooks` manages.
    pub campaign_id: Option<String>,
    /// `SPARKLOOP_REFLINK_TEMPLATE`: the link made from a code (`{code}`) for people whose link
    /// is not known.
    pub reflink_template: Option<String>,
}

/// The ESP side of the configuration.
#[derive(Debug, Clone)]
pub struct EspSettings {
    /// `ESP_ADAPTER`, one of the known adapter names.
    pub adapter: String,
    /// `ESP_WEBHOOK_SECRET`: ESP webhooks are refused while unset.
    pub webhook_secret: Option<Secret>,
    /// `ESP_API_URL`.
    pub api_url: Option<String>,
    /// `ESP_API_KEY`.
    pub api_key: Option<Secret>,
    /// `ESP_SIGNING_SECRET`.
    pub signing_secret: Option<Secret>,
    /// `ESP_LIST_ID` (Mailchimp: the audience).
    pub list_id: Option<String>,
    /// `ESP_WRITE_TO` (Ghost): `note`, `labels` or both.
    pub write_to: Option<String>,
    /// `ESP_FIELD_IN_*`: the ESP fields read as a signup's attribution, by attribution key.
    pub attribution_fields: Vec<(&'static str, String)>,
    /// `ESP_POLL_INTERVAL` (listmonk): how often the ESP is read for changes.
    pub poll_interval: Duration,
    /// `ESP_RATE_LIMIT`: field writes are paced to all of these at once (`75/1s,750/60s`).
    pub rate_limits: Vec<RateLimit>,
    /// Of [`EspSettings::rate_limits`], the one that binds over a long backlog.
    pub rate_limit: RateLimit,
    /// `ESP_FIELD_*`: the fields written and their names.
    pub fields: super::fields::FieldMap,
    /// `ESP_WRITE_DELAY`: how long a queued field write waits for further changes, so that a
    /// burst of callbacks for one person costs one write.
    pub write_delay: Duration,
}

impl EspSettings {
    /// What the adapter needs to reach the ESP.
    pub fn adapter_config(&self) -> referral_bridge_adapters::outbound::EspConfig {
        referral_bridge_adapters::outbound::EspConfig {
            api_url: self.api_url.clone(),
            api_key: self.api_key.as_ref().map(|s| s.expose_secret().into()),
            signing_secret: self
                .signing_secret
                .as_ref()
                .map(|s| s.expose_secret().into()),
            list_id: self.list_id.clone(),
            write_to: self.write_to.clone(),
            attribution_fields: self.attribution_fields.clone(),
        }
    }
}

/// When and how long failed deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// `RETRY_BASE_DELAY`: the first retry's delay, doubled for each further attempt.
    pub base_delay: Duration,
    /// `RETRY_MAX_DELAY`: no single delay is longer.
    pub max_delay: Duration,
    /// `RETRY_MAX_AGE`: a job still failing this long after its creation is dead.
    pub max_age: Duration,
}

/// The job workers' knobs.
#[derive(Debug, Clone, Copy)]
pub struct WorkerSettings {
    /// `BRIDGE_WORKERS`: how many deliveries may be in flight at once in this process.
    pub concurrency: usize,
    /// `BRIDGE_POLL_INTERVAL`: how often the queue is looked at when nothing wakes the workers.
    pub poll_interval: Duration,
    /// `BRIDGE_LEASE`: how long a claimed job stays claimed without an outcome.
    pub lease: Duration,
    /// `BRIDGE_REQUEST_TIMEOUT`: the longest one outgoing HTTP call may take.
    pub request_timeout: Duration,
}

/// The whole configuration of one bridge process.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `DATABASE_URL`.
    pub database_url: DatabaseUrl,
    /// `BRIDGE_DB_POOL_SIZE`: connections in the pool; unset, what the process needs
    /// (`startup::serving_pool_size`).
    pub db_pool_size: Option<u32>,
    /// `BRIDGE_DB_TIMEOUT`: how long a request waits for a connection before a 503.
    pub db_timeout: Duration,
    /// `BRIDGE_LISTEN`.
    pub listen: String,
    /// `BRIDGE_ADMIN_TOKEN` (at least 32 characters).
    pub admin_token: Option<Secret>,
    /// `BRIDGE_ADMIN_SESSION_TTL`: how long a dashboard sign-in lasts.
    pub admin_session_ttl: Duration,
    /// `BRIDGE_MAX_BODY`, in bytes.
    pub max_body: usize,
    /// `BRIDGE_LOG_FORMAT`.
    pub log_format: LogFormat,
    /// `BRIDGE_INBOUND_RATE_LIMIT`: webhook requests allowed per source address (unset: off).
    pub inbound_rate_limit: Option<RateLimit>,
    /// `BRIDGE_BODY_TIMEOUT`: how long a webhook's body may take to arrive (then 408).
    pub body_timeout: Duration,
    /// `BRIDGE_PLATFORM`: where ESP events go.
    pub platform: Platform,
    /// `SPARKLOOP_*`.
    pub sparkloop: SparkLoopSettings,
    /// `ESP_*`.
    pub esp: EspSettings,
    /// `RETRY_*`.
    pub retry: RetryPolicy,
    /// `DEDUPE_WINDOW`.
    pub dedupe_window: Duration,
    /// `BRIDGE_RETENTION`: stored bodies, attempts and finished jobs older than this are pruned
    /// (never sooner than `DEDUPE_WINDOW`).
    pub retention: Duration,
    /// `BRIDGE_ERASE_ON_DELETE`: an ESP event deleting a contact erases them here and at the
    /// platform.
    pub erase_on_delete: bool,
    /// `BRIDGE_RECONCILE_EVERY`: `serve` runs `reconcile --fix` this often (one instance at a
    /// time); `None`: never.
    pub reconcile_every: Option<Duration>,
    /// Job workers.
    pub worker: WorkerSettings,
    /// `REFERRALLOOP_WEBHOOK_SECRET`: ReferralLoop's webhooks are refused while unset.
    pub referralloop_secret: Option<Secret>,
    /// `LOYALTYSURF_WEBHOOK_SECRET`: LoyaltySurf's webhooks are refused while unset.
    pub loyaltysurf_secret: Option<Secret>,
    /// `LOYALTYSURF_SIGNATURE_TOLERANCE`: how far a LoyaltySurf signature's `ts` may be from now.
    pub loyaltysurf_tolerance: Duration,
}

/// Loads `.env` from the working directory only (never from a parent folder, DESIGN 3.11), or
/// the file `BRIDGE_ENV_FILE` names, which must exist; values already in the environment are
/// kept. Returns the file loaded, if any.
pub fn load_env_file() -> Result<Option<std::path::PathBuf>, ConfigError> {
    let named = std::env::var_os("BRIDGE_ENV_FILE").filter(|name| !name.is_empty());
    let path = std::path::PathBuf::from(named.clone().unwrap_or_else(|| ".env".into()));
    if !path.is_file() {
        return match named {
            Some(_) => Err(invalid(
                "BRIDGE_ENV_FILE",
                format!("the file `{}` does not exist", path.display()),
            )),
            None => Ok(None),
        };
    }
    dotenvy::from_path(&path)
        .map_err(|e| ConfigError::Source(format!("{}: {e}", path.display())))?;
    Ok(Some(path))
}

impl Settings {
    /// Reads the process environment, after loading the `.env` file ([`load_env_file`]).
    pub fn load() -> Result<Self, ConfigError> {
        load_env_file()?;
        Self::from_vars(std::env::vars().collect())
    }

    /// Reads the given variables as if they were the whole environment (and the TOML file that
    /// `BRIDGE_CONFIG` in them names).
    pub fn from_vars(vars: HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = vars.get("BRIDGE_CONFIG").filter(|p| !p.trim().is_empty()) {
            if !std::path::Path::new(path).is_file() {
                return Err(invalid(
                    "BRIDGE_CONFIG",
                    format!("the configuration file `{path}` does not exist"),
                ));
            }
            let file = config::File::new(path, config::FileFormat::Toml).required(true);
            let unknown = config::Config::builder()
                .add_source(file.clone())
                .build()
                .and_then(Raw::read)
                .map_err(|e| ConfigError::Source(format!("configuration file `{path}`: {e}")))?
                .unknown_keys();
            if let Some(key) = unknown.first() {
                return Err(invalid(
                    "BRIDGE_CONFIG",
                    format!(
                        "the configuration file `{path}` has a key the bridge does not know: \
                         `{key}` (keys are the variables' names in lower case, without tables)"
                    ),
                ));
            }
            builder = builder.add_source(file);
        }
        let raw = builder
            .add_source(config::Environment::default().source(Some(vars)))
            .build()
            .and_then(Raw::read)
            .map_err(|e| ConfigError::Source(format!("configuration: {e}")))?;
        Self::check(raw)
    }
}

#[cfg(test)]
mod tests;
