//! One `Settings` tree, read from defaults, an optional TOML file named by `BRIDGE_CONFIG`, a
//! `.env` file and the environment (the environment wins), and checked before anything starts.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use referral_bridge_adapters::loyaltysurf::{self, LoyaltySurfApi, OnUnsubscribe};
use referral_bridge_adapters::referralloop::{self, ReferralLoopApi};
use referral_bridge_adapters::sparkloop;
use secrecy::SecretString;
use serde::Deserialize;

/// A configuration value that is missing or cannot be used; the message names the variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable holds a value that cannot be used.
    #[error("{variable}: {reason}")]
    Invalid {
        /// The variable's name, as in the environment.
        variable: &'static str,
        /// What is wrong and what is expected; never the value of a secret.
        reason: String,
    },
    /// The TOML file or the sources as a whole could not be read.
    #[error("{0}")]
    Source(String),
}

fn invalid(variable: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        variable,
        reason: reason.into(),
    }
}

/// A credential: usable by the code that needs it, printed as `[redacted]` everywhere else.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for comparing or sending; never for logging.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where the bridge keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A SQLite file, created on first use.
    Sqlite(PathBuf),
    /// A Postgres connection URL.
    Postgres(String),
}

impl DatabaseUrl {
    /// Reads `DATABASE_URL`: `postgres://` / `postgresql://` URLs, else a SQLite path with an
    /// optional `sqlite://` or `sqlite:` prefix.
    pub fn parse(raw: &str) -> Result<Self, ConfigError> {
        let raw = raw.trim();
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(raw.to_string()));
        }
        let path = raw
            .strip_prefix("sqlite://")
            .or_else(|| raw.strip_prefix("sqlite:"))
            .unwrap_or(raw);
        if path.is_empty() || path == ":memory:" || path.contains("mode=memory") {
            return Err(invalid(
                "DATABASE_URL",
                "expected a SQLite file path (in-memory databases lose acknowledged events) or a postgres:// URL",
            ));
        }
        if let Some((scheme, _)) = path.split_once("://") {
            return Err(invalid(
                "DATABASE_URL",
                format!(
                    "unsupported scheme `{scheme}://`: use a SQLite file path or a postgres:// URL"
                ),
            ));
        }
        Ok(DatabaseUrl::Sqlite(PathBuf::from(path)))
    }

    /// The backend's name, for logs and messages.
    pub fn backend(&self) -> &'static str {
        match self {
            DatabaseUrl::Sqlite(_) => "sqlite",
            DatabaseUrl::Postgres(_) => "postgres",
        }
    }

    /// The URL with any password masked, for logs and messages.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(path) => path.display().to_string(),
            DatabaseUrl::Postgres(url) => match (url.find("://"), url.rfind('@')) {
                (Some(scheme_end), Some(at)) if at > scheme_end => {
                    let userinfo = &url[scheme_end + 3..at];
                    match userinfo.split_once(':') {
                        Some((user, _)) => {
                            format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
                        }
                        None => url.clone(),
                    }
                }
                _ => url.clone(),
            },
        }
    }
}

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
}

/// At most `requests` calls in any `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Calls allowed in a window.
    pub requests: u32,
    /// The window.
    pub per: Duration,
}

impl RateLimit {
    /// How long `calls` calls take at this rate.
    pub fn time_for(&self, calls: u64) -> Duration {
        let windows = calls.div_ceil(self.requests as u64);
        self.per.saturating_mul(windows.min(u32::MAX as u64) as u32)
    }

    /// Reads several limits that all hold, comma-separated: `30/5s,200/60s`.
    pub fn parse_all(text: &str) -> Result<Vec<Self>, String> {
        let limits = text
            .split(',')
            .filter(|part| !part.trim().is_empty())
            .map(Self::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if limits.is_empty() {
            return Err(format!("`{text}` names no rate, like 30/5s,200/60s"));
        }
        Ok(limits)
    }

    /// The limit that binds over a long backlog: the fewest calls per second.
    pub fn slowest(limits: &[RateLimit]) -> Option<RateLimit> {
        limits.iter().copied().min_by(|a, b| {
            let rate = |l: &RateLimit| l.requests as f64 / l.per.as_secs_f64();
            rate(a).total_cmp(&rate(b))
        })
    }

    /// Reads `120/60s`, `10/1s` or `5/s`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not a rate like 10/1s or 120/60s");
        let (requests, per) = text.trim().split_once('/').ok_or_else(bad)?;
        let requests: u32 = requests
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(bad)?;
        let per = per.trim();
        let per = if per.starts_with(|c: char| c.is_ascii_digit()) {
            parse_duration(per).map_err(|_| bad())?
        } else {
            parse_duration(&format!("1{per}")).map_err(|_| bad())?
        };
        if per.is_zero() {
            return Err(bad());
        }
        Ok(RateLimit { requests, per })
    }
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
    /// `ESP_POLL_INTERVAL` (listmonk): how often the ESP is read for changes.
    pub poll_interval: Duration,
    /// `ESP_RATE_LIMIT`: field writes are paced to all of these at once (`75/1s,750/60s`).
    pub rate_limits: Vec<RateLimit>,
    /// Of [`EspSettings::rate_limits`], the one that binds over a long backlog.
    pub rate_limit: RateLimit,
    /// `ESP_FIELD_*`: the fields written and their names.
    pub fields: crate::fields::FieldMap,
    /// `ESP_WRITE_DELAY`: how long a queued field write waits for further changes, so that a
    /// burst of callbacks for one person costs one write.
    pub write_delay: Duration,
}

impl EspSettings {
    /// What the adapter needs to reach the ESP.
    pub fn adapter_config(&self) -> referral_bridge_adapters::outbound::EspConfig {
        referral_bridge_adapters::outbound::EspConfig {
            api_url: self.api_url.clone(),
            api_key: self.api_key.as_ref().map(|s| s.expose().to_string()),
            signing_secret: self.signing_secret.as_ref().map(|s| s.expose().to_string()),
            list_id: self.list_id.clone(),
            write_to: self.write_to.clone(),
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
    /// `BRIDGE_DB_POOL_SIZE`: connections in the pool.
    pub db_pool_size: u32,
    /// `BRIDGE_DB_TIMEOUT`: how long a request waits for a connection before a 503.
    pub db_timeout: Duration,
    /// `BRIDGE_LISTEN`.
    pub listen: String,
    /// `BRIDGE_ADMIN_TOKEN`.
    pub admin_token: Option<Secret>,
    /// `BRIDGE_MAX_BODY`, in bytes.
    pub max_body: usize,
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
    /// Job workers.
    pub worker: WorkerSettings,
    /// `REFERRALLOOP_WEBHOOK_SECRET`: ReferralLoop's webhooks are refused while unset.
    pub referralloop_secret: Option<Secret>,
    /// `LOYALTYSURF_WEBHOOK_SECRET`: LoyaltySurf's webhooks are refused while unset.
    pub loyaltysurf_secret: Option<Secret>,
    /// `LOYALTYSURF_SIGNATURE_TOLERANCE`: how far a LoyaltySurf signature's `ts` may be from now.
    pub loyaltysurf_tolerance: Duration,
}

/// Every variable as text, before checking; keys are the variables' names in lower case, which
/// is also how they are written in the TOML file.
#[derive(Debug, Default, Deserialize)]
struct Raw {
    database_url: Option<String>,
    bridge_db_pool_size: Option<String>,
    bridge_db_timeout: Option<String>,
    bridge_listen: Option<String>,
    bridge_admin_token: Option<String>,
    bridge_max_body: Option<String>,
    bridge_platform: Option<String>,
    sparkloop_upstream: Option<String>,
    sparkloop_incoming_webhook_url: Option<String>,
    sparkloop_api_url: Option<String>,
    sparkloop_api_key: Option<String>,
    sparkloop_webhook_token: Option<String>,
    sparkloop_rate_limit: Option<String>,
    sparkloop_campaign_id: Option<String>,
    loyaltysurf_api_url: Option<String>,
    loyaltysurf_api_key: Option<String>,
    loyaltysurf_campaign_id: Option<String>,
    loyaltysurf_rate_limit: Option<String>,
    loyaltysurf_unsubscribe: Option<String>,
    referralloop_api_url: Option<String>,
    referralloop_api_key: Option<String>,
    referralloop_waitlist_id: Option<String>,
    referralloop_rate_limit: Option<String>,
    esp_adapter: Option<String>,
    esp_webhook_secret: Option<String>,
    esp_api_url: Option<String>,
    esp_api_key: Option<String>,
    esp_signing_secret: Option<String>,
    esp_list_id: Option<String>,
    esp_write_to: Option<String>,
    esp_poll_interval: Option<String>,
    esp_rate_limit: Option<String>,
    esp_write_delay: Option<String>,
    esp_field_subid: Option<String>,
    esp_field_code: Option<String>,
    esp_field_reflink: Option<String>,
    esp_field_isref: Option<String>,
    esp_field_totref: Option<String>,
    esp_field_coupon: Option<String>,
    esp_field_lastreward: Option<String>,
    esp_field_nextreward: Option<String>,
    esp_field_lastref: Option<String>,
    esp_field_partner_status: Option<String>,
    esp_field_position: Option<String>,
    esp_field_removed: Option<String>,
    esp_field_rank: Option<String>,
    esp_field_winner: Option<String>,
    esp_field_fraud_risk: Option<String>,
    referralloop_webhook_secret: Option<String>,
    loyaltysurf_webhook_secret: Option<String>,
    loyaltysurf_signature_tolerance: Option<String>,
    retry_base_delay: Option<String>,
    retry_max_delay: Option<String>,
    retry_max_age: Option<String>,
    dedupe_window: Option<String>,
    bridge_workers: Option<String>,
    bridge_poll_interval: Option<String>,
    bridge_lease: Option<String>,
    bridge_request_timeout: Option<String>,
}

impl Raw {
    /// The value of an `ESP_FIELD_*` variable.
    fn field(&self, variable: &str) -> Option<String> {
        match variable {
            "ESP_FIELD_SUBID" => self.esp_field_subid.clone(),
            "ESP_FIELD_CODE" => self.esp_field_code.clone(),
            "ESP_FIELD_REFLINK" => self.esp_field_reflink.clone(),
            "ESP_FIELD_ISREF" => self.esp_field_isref.clone(),
            "ESP_FIELD_TOTREF" => self.esp_field_totref.clone(),
            "ESP_FIELD_COUPON" => self.esp_field_coupon.clone(),
            "ESP_FIELD_LASTREWARD" => self.esp_field_lastreward.clone(),
            "ESP_FIELD_NEXTREWARD" => self.esp_field_nextreward.clone(),
            "ESP_FIELD_LASTREF" => self.esp_field_lastref.clone(),
            "ESP_FIELD_PARTNER_STATUS" => self.esp_field_partner_status.clone(),
            "ESP_FIELD_POSITION" => self.esp_field_position.clone(),
            "ESP_FIELD_REMOVED" => self.esp_field_removed.clone(),
            "ESP_FIELD_RANK" => self.esp_field_rank.clone(),
            "ESP_FIELD_WINNER" => self.esp_field_winner.clone(),
            "ESP_FIELD_FRAUD_RISK" => self.esp_field_fraud_risk.clone(),
            _ => None,
        }
    }

    /// The fields switched on: each `ESP_FIELD_*` is a name, `off`, or unset for its default.
    fn field_map(&self) -> Result<crate::fields::FieldMap, ConfigError> {
        let mut map: Vec<(crate::fields::Field, String)> = Vec::new();
        for (field, variable, default) in crate::fields::FIELDS {
            let name = match non_empty(self.field(variable)) {
                Some(off) if off.eq_ignore_ascii_case("off") => continue,
                Some(name) => name,
                None => match default {
                    Some(name) => name.to_string(),
                    None => continue,
                },
            };
            if name.len() > 100 || name.chars().any(|c| c.is_control()) {
                return Err(invalid(
                    variable,
                    "a field name is at most 100 characters, without control characters",
                ));
            }
            if map.iter().any(|(_, taken)| *taken == name) {
                return Err(invalid(
                    variable,
                    format!(
                        "the field name `{name}` is already used by another ESP_FIELD_* variable"
                    ),
                ));
            }
            map.push((*field, name));
        }
        Ok(crate::fields::FieldMap(map))
    }
}

impl Settings {
    /// Reads the process environment, after loading `.env` from the working directory (values
    /// already in the environment are kept).
    pub fn load() -> Result<Self, ConfigError> {
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => return Err(ConfigError::Source(format!(".env: {e}"))),
        }
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
            builder = builder
                .add_source(config::File::new(path, config::FileFormat::Toml).required(true));
        }
        let raw: Raw = builder
            .add_source(config::Environment::default().source(Some(vars)))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError::Source(format!("configuration: {e}")))?;
        Self::check(raw)
    }

    fn check(raw: Raw) -> Result<Self, ConfigError> {
        let fields = raw.field_map()?;
        let database_url = DatabaseUrl::parse(
            non_empty(raw.database_url)
                .as_deref()
                .unwrap_or("referral-bridge.db"),
        )?;

        let platform_name = non_empty(raw.bridge_platform).unwrap_or_else(|| "sparkloop".into());
        let required = |variable: &'static str, value: Option<String>| {
            non_empty(value).ok_or_else(|| {
                invalid(
                    variable,
                    format!("must be set when BRIDGE_PLATFORM={platform_name}"),
                )
            })
        };
        let platform = match platform_name.as_str() {
            "sparkloop" => Platform::SparkLoop,
            "loyaltysurf" => Platform::LoyaltySurf {
                api: LoyaltySurfApi {
                    api_url: http_url(
                        "LOYALTYSURF_API_URL",
                        non_empty(raw.loyaltysurf_api_url)
                            .unwrap_or_else(|| loyaltysurf::DEFAULT_API_URL.into()),
                    )?,
                    api_key: secret_string(raw.loyaltysurf_api_key),
                    campaign_id: required("LOYALTYSURF_CAMPAIGN_ID", raw.loyaltysurf_campaign_id)?,
                    on_unsubscribe: match non_empty(raw.loyaltysurf_unsubscribe).as_deref() {
                        None | Some("keep") => OnUnsubscribe::Keep,
                        Some("delete") => OnUnsubscribe::Delete,
                        Some(other) => {
                            return Err(invalid(
                                "LOYALTYSURF_UNSUBSCRIBE",
                                format!("unknown action `{other}`; expected `keep` or `delete`"),
                            ))
                        }
                    },
                },
                rate_limits: RateLimit::parse_all(
                    non_empty(raw.loyaltysurf_rate_limit)
                        .as_deref()
                        .unwrap_or(loyaltysurf::DEFAULT_RATE_LIMIT),
                )
                .map_err(|reason| invalid("LOYALTYSURF_RATE_LIMIT", reason))?,
            },
            "referralloop" => Platform::ReferralLoop {
                api: ReferralLoopApi {
                    api_url: http_url(
                        "REFERRALLOOP_API_URL",
                        non_empty(raw.referralloop_api_url)
                            .unwrap_or_else(|| referralloop::DEFAULT_API_URL.into()),
                    )?,
                    api_key: secret_string(raw.referralloop_api_key),
                    waitlist_id: required(
                        "REFERRALLOOP_WAITLIST_ID",
                        raw.referralloop_waitlist_id,
                    )?,
                },
                rate_limit: RateLimit::parse(
                    non_empty(raw.referralloop_rate_limit)
                        .as_deref()
                        .unwrap_or(referralloop::DEFAULT_RATE_LIMIT),
                )
                .map_err(|reason| invalid("REFERRALLOOP_RATE_LIMIT", reason))?,
            },
            other => {
                return Err(invalid(
                    "BRIDGE_PLATFORM",
                    format!(
                    "unknown platform `{other}`; expected sparkloop, loyaltysurf or referralloop"
                ),
                ))
            }
        };

        let webhook_url = non_empty(raw.sparkloop_incoming_webhook_url)
            .map(|url| http_url("SPARKLOOP_INCOMING_WEBHOOK_URL", url))
            .transpose()?;
        let upstream = match (non_empty(raw.sparkloop_upstream).as_deref(), webhook_url) {
            (None | Some("webhook"), Some(url)) => Upstream::Webhook { url },
            (Some("webhook"), None) => {
                return Err(invalid(
                    "SPARKLOOP_INCOMING_WEBHOOK_URL",
                    "must be set when SPARKLOOP_UPSTREAM=webhook (find it on SparkLoop's Integrations page)",
                ))
            }
            (None | Some("api"), _) => Upstream::Api,
            (Some(other), _) => {
                return Err(invalid(
                    "SPARKLOOP_UPSTREAM",
                    format!("unknown mode `{other}`; expected `webhook` or `api`"),
                ))
            }
        };
        let sparkloop = SparkLoopSettings {
            upstream,
            api_url: http_url(
                "SPARKLOOP_API_URL",
                non_empty(raw.sparkloop_api_url)
                    .unwrap_or_else(|| sparkloop::outbound::DEFAULT_API_URL.into()),
            )?,
            api_key: secret(raw.sparkloop_api_key),
            webhook_token: secret(raw.sparkloop_webhook_token.clone()),
            rate_limit: RateLimit::parse(
                non_empty(raw.sparkloop_rate_limit.clone())
                    .as_deref()
                    .unwrap_or(sparkloop::outbound::DEFAULT_RATE_LIMIT),
            )
            .map_err(|reason| invalid("SPARKLOOP_RATE_LIMIT", reason))?,
            campaign_id: non_empty(raw.sparkloop_campaign_id.clone()),
        };

        let adapter = non_empty(raw.esp_adapter).unwrap_or_else(|| "custom".into());
        if !referral_bridge_adapters::KNOWN_ESP_ADAPTERS.contains(&adapter.as_str()) {
            return Err(invalid(
                "ESP_ADAPTER",
                format!(
                    "unknown adapter `{adapter}`; known adapters: {}",
                    referral_bridge_adapters::KNOWN_ESP_ADAPTERS.join(", ")
                ),
            ));
        }
        let default_rate = referral_bridge_adapters::default_rate_limit(&adapter);
        let esp_limits = RateLimit::parse_all(
            non_empty(raw.esp_rate_limit.clone())
                .as_deref()
                .unwrap_or(default_rate),
        )
        .map_err(|reason| invalid("ESP_RATE_LIMIT", reason))?;
        let esp = EspSettings {
            adapter,
            webhook_secret: secret(raw.esp_webhook_secret),
            api_url: non_empty(raw.esp_api_url)
                .map(|url| http_url("ESP_API_URL", url))
                .transpose()?,
            api_key: secret(raw.esp_api_key.clone()),
            signing_secret: secret(raw.esp_signing_secret.clone()),
            list_id: non_empty(raw.esp_list_id.clone()),
            write_to: match non_empty(raw.esp_write_to.clone()) {
                None => None,
                Some(places) => {
                    let wanted: Vec<String> = places
                        .split(',')
                        .map(|p| p.trim().to_lowercase())
                        .filter(|p| !p.is_empty())
                        .collect();
                    if wanted.is_empty() || wanted.iter().any(|p| p != "note" && p != "labels") {
                        return Err(invalid(
                            "ESP_WRITE_TO",
                            format!("`{places}`: expected note, labels, or note,labels"),
                        ));
                    }
                    Some(wanted.join(","))
                }
            },
            poll_interval: duration("ESP_POLL_INTERVAL", raw.esp_poll_interval.clone(), "1m")?,
            rate_limit: RateLimit::slowest(&esp_limits).expect("at least one limit"),
            rate_limits: esp_limits,
            fields,
            write_delay: duration("ESP_WRITE_DELAY", raw.esp_write_delay.clone(), "1s")?,
        };

        let retry = RetryPolicy {
            base_delay: duration("RETRY_BASE_DELAY", raw.retry_base_delay, "10s")?,
            max_delay: duration("RETRY_MAX_DELAY", raw.retry_max_delay, "6h")?,
            max_age: duration("RETRY_MAX_AGE", raw.retry_max_age, "30d")?,
        };
        if retry.base_delay.is_zero() {
            return Err(invalid("RETRY_BASE_DELAY", "must be longer than 0"));
        }
        if retry.max_delay < retry.base_delay {
            return Err(invalid(
                "RETRY_MAX_DELAY",
                "must not be shorter than RETRY_BASE_DELAY",
            ));
        }

        let worker = WorkerSettings {
            concurrency: number("BRIDGE_WORKERS", raw.bridge_workers, 16, 1..=1024)? as usize,
            poll_interval: duration("BRIDGE_POLL_INTERVAL", raw.bridge_poll_interval, "1s")?,
            lease: duration("BRIDGE_LEASE", raw.bridge_lease, "30s")?,
            request_timeout: duration("BRIDGE_REQUEST_TIMEOUT", raw.bridge_request_timeout, "10s")?,
        };
        if worker.poll_interval.is_zero() {
            return Err(invalid("BRIDGE_POLL_INTERVAL", "must be longer than 0"));
        }
        if worker.lease <= worker.request_timeout + Duration::from_secs(1) {
            return Err(invalid(
                "BRIDGE_LEASE",
                "must be longer than BRIDGE_REQUEST_TIMEOUT plus one second, or a slow call would lose its claim",
            ));
        }

        let max_body = non_empty(raw.bridge_max_body).unwrap_or_else(|| "2MiB".into());
        let max_body = max_body
            .parse::<bytesize::ByteSize>()
            .ok()
            .filter(|size| size.as_u64() > 0 && size.as_u64() <= 1 << 30)
            .ok_or_else(|| {
                invalid(
                    "BRIDGE_MAX_BODY",
                    format!(
                        "`{max_body}` is not a size between 1 byte and 1GiB, like 512KiB or 2MiB"
                    ),
                )
            })?
            .as_u64() as usize;

        let listen = non_empty(raw.bridge_listen).unwrap_or_else(|| "127.0.0.1:8080".into());
        if listen
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .is_none()
        {
            return Err(invalid(
                "BRIDGE_LISTEN",
                format!("`{listen}` is not an address with a port, like 127.0.0.1:8080"),
            ));
        }

        Ok(Settings {
            platform,
            database_url,
            db_pool_size: number("BRIDGE_DB_POOL_SIZE", raw.bridge_db_pool_size, 10, 1..=500)?
                as u32,
            db_timeout: duration("BRIDGE_DB_TIMEOUT", raw.bridge_db_timeout, "2s")?,
            listen,
            admin_token: secret(raw.bridge_admin_token),
            max_body,
            sparkloop,
            esp,
            retry,
            dedupe_window: duration("DEDUPE_WINDOW", raw.dedupe_window, "1h")?,
            worker,
            referralloop_secret: secret(raw.referralloop_webhook_secret),
            loyaltysurf_secret: secret(raw.loyaltysurf_webhook_secret),
            loyaltysurf_tolerance: duration(
                "LOYALTYSURF_SIGNATURE_TOLERANCE",
                raw.loyaltysurf_signature_tolerance,
                "5m",
            )?,
        })
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn secret(value: Option<String>) -> Option<Secret> {
    non_empty(value).map(Secret)
}

fn secret_string(value: Option<String>) -> Option<SecretString> {
    non_empty(value).map(SecretString::from)
}

fn http_url(variable: &'static str, url: String) -> Result<String, ConfigError> {
    match reqwest::Url::parse(&url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => Ok(url),
        _ => Err(invalid(
            variable,
            format!("`{url}` is not an http:// or https:// URL"),
        )),
    }
}

/// Reads a duration written like `500ms`, `30s`, `6h` or `30d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration like 500ms, 30s, 6h or 30d ({e})"))
}

fn duration(
    variable: &'static str,
    value: Option<String>,
    default: &str,
) -> Result<Duration, ConfigError> {
    let text = non_empty(value).unwrap_or_else(|| default.into());
    parse_duration(&text).map_err(|reason| invalid(variable, reason))
}

fn number(
    variable: &'static str,
    value: Option<String>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    let Some(text) = non_empty(value) else {
        return Ok(default);
    };
    text.parse::<u64>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            invalid(
                variable,
                format!(
                    "`{text}` is not a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_vars(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_need_nothing() {
        let s = settings(&[]).unwrap();
        assert_eq!(
            s.database_url,
            DatabaseUrl::Sqlite("referral-bridge.db".into())
        );
        assert_eq!(s.listen, "127.0.0.1:8080");
        assert_eq!(s.max_body, 2 * 1024 * 1024);
        assert_eq!(s.retry.base_delay, Duration::from_secs(10));
        assert_eq!(s.retry.max_delay, Duration::from_secs(6 * 3600));
        assert_eq!(s.retry.max_age, Duration::from_secs(30 * 86400));
        assert_eq!(s.dedupe_window, Duration::from_secs(3600));
        assert_eq!(s.sparkloop.upstream, Upstream::Api);
    }

    #[test]
    fn webhook_url_selects_webhook_mode() {
        let s = settings(&[("SPARKLOOP_INCOMING_WEBHOOK_URL", "http://127.0.0.1:9/hook")]).unwrap();
        assert_eq!(
            s.sparkloop.upstream,
            Upstream::Webhook {
                url: "http://127.0.0.1:9/hook".into()
            }
        );
    }

    #[test]
    fn errors_name_the_variable() {
        for (pairs, variable) in [
            (vec![("RETRY_BASE_DELAY", "soon")], "RETRY_BASE_DELAY"),
            (vec![("BRIDGE_MAX_BODY", "lots")], "BRIDGE_MAX_BODY"),
            (vec![("ESP_ADAPTER", "nope")], "ESP_ADAPTER"),
            (
                vec![("SPARKLOOP_UPSTREAM", "webhook")],
                "SPARKLOOP_INCOMING_WEBHOOK_URL",
            ),
            (
                vec![("SPARKLOOP_INCOMING_WEBHOOK_URL", "ftp://x")],
                "SPARKLOOP_INCOMING_WEBHOOK_URL",
            ),
            (vec![("DATABASE_URL", "mysql://x")], "DATABASE_URL"),
            (vec![("BRIDGE_LISTEN", "localhost")], "BRIDGE_LISTEN"),
            (vec![("BRIDGE_WORKERS", "0")], "BRIDGE_WORKERS"),
            (vec![("BRIDGE_PLATFORM", "viral_loops")], "BRIDGE_PLATFORM"),
            (vec![("ESP_WRITE_TO", "note,tags")], "ESP_WRITE_TO"),
            (
                vec![("BRIDGE_PLATFORM", "loyaltysurf")],
                "LOYALTYSURF_CAMPAIGN_ID",
            ),
            (
                vec![
                    ("BRIDGE_PLATFORM", "loyaltysurf"),
                    ("LOYALTYSURF_CAMPAIGN_ID", "c"),
                    ("LOYALTYSURF_RATE_LIMIT", "30/5s,lots"),
                ],
                "LOYALTYSURF_RATE_LIMIT",
            ),
            (
                vec![
                    ("BRIDGE_PLATFORM", "loyaltysurf"),
                    ("LOYALTYSURF_CAMPAIGN_ID", "c"),
                    ("LOYALTYSURF_UNSUBSCRIBE", "archive"),
                ],
                "LOYALTYSURF_UNSUBSCRIBE",
            ),
            (
                vec![("BRIDGE_PLATFORM", "referralloop")],
                "REFERRALLOOP_WAITLIST_ID",
            ),
            (
                vec![("LOYALTYSURF_SIGNATURE_TOLERANCE", "a while")],
                "LOYALTYSURF_SIGNATURE_TOLERANCE",
            ),
            (
                vec![("BRIDGE_CONFIG", "/nonexistent/bridge.toml")],
                "BRIDGE_CONFIG",
            ),
        ] {
            let message = settings(&pairs).unwrap_err().to_string();
            assert!(message.starts_with(variable), "{pairs:?}: {message}");
        }
    }

    #[test]
    fn esp_adapter_error_lists_known_adapters() {
        let message = settings(&[("ESP_ADAPTER", "nope")])
            .unwrap_err()
            .to_string();
        assert!(message.contains("custom"), "{message}");
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bridge.toml");
        std::fs::write(
            &file,
            "retry_base_delay = \"1m\"\nbridge_workers = 3\ndedupe_window = \"5m\"\n",
        )
        .unwrap();
        let s = settings(&[
            ("BRIDGE_CONFIG", file.to_str().unwrap()),
            ("DEDUPE_WINDOW", "2h"),
        ])
        .unwrap();
        assert_eq!(s.retry.base_delay, Duration::from_secs(60));
        assert_eq!(s.worker.concurrency, 3);
        assert_eq!(s.dedupe_window, Duration::from_secs(7200));
    }

    #[test]
    fn durations_and_urls() {
        assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86400)
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite://data/x.db").unwrap(),
            DatabaseUrl::Sqlite("data/x.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("postgres://u:pw@h/db")
                .unwrap()
                .redacted(),
            "postgres://u:***@h/db"
        );
    }

    #[test]
    fn secrets_are_not_printed() {
        let s = settings(&[("ESP_WEBHOOK_SECRET", "hunter2")]).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn rates_are_read_in_their_usual_forms() {
        let rate = |text| RateLimit::parse(text);
        assert_eq!(
            rate("120/60s"),
            Ok(RateLimit {
                requests: 120,
                per: Duration::from_secs(60)
            })
        );
        assert_eq!(rate("5/s").unwrap().per, Duration::from_secs(1));
        assert_eq!(rate(" 10 / 1m ").unwrap().per, Duration::from_secs(60));
        for bad in ["", "10", "0/1s", "x/1s", "10/0s", "10/soon"] {
            assert!(rate(bad).is_err(), "{bad}");
        }
    }
}
