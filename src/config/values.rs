//! The values of the configuration that are more than text: errors naming the variable,
//! secrets, the database URL, rate limits and durations.

use std::path::PathBuf;
use std::time::Duration;

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

pub(crate) fn invalid(variable: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        variable,
        reason: reason.into(),
    }
}

/// A credential: usable by the code that needs it (`expose_secret`), printed as
/// `[REDACTED]` by every `Debug`.
pub type Secret = secrecy::SecretString;

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

/// Reads a duration written like `500ms`, `30s`, `6h` or `30d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration like 500ms, 30s, 6h or 30d ({e})"))?;
    // Durations are added to unix milliseconds; a bound keeps every sum far from overflowing.
    if duration > MAX_DURATION {
        return Err(format!(
            "`{text}` is longer than the longest duration taken, 100 years"
        ));
    }
    Ok(duration)
}

/// The longest duration any variable takes.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// `duration` in whole milliseconds, as the database's times are kept (saturating, though
/// [`MAX_DURATION`] keeps configured ones far below the limit).
pub fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// How log lines are written (`BRIDGE_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// env_logger's text lines.
    #[default]
    Text,
    /// One JSON object a line: `ts`, `level`, `target`, `msg` and the line's structured fields.
    Json,
}

impl LogFormat {
    /// Reads `BRIDGE_LOG_FORMAT`: `text` or `json`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("`{text}` is neither `text` nor `json`")),
        }
    }
}

/// The value trimmed; `None` when unset or blank.
pub(super) fn non_empty(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The shortest admin token taken (DESIGN 3.11): it guards every operator action.
const MIN_ADMIN_TOKEN: usize = 32;

/// `BRIDGE_ADMIN_TOKEN`: unset (no admin API or dashboard), or at least 32 characters.
pub(super) fn admin_token(value: Option<String>) -> Result<Option<Secret>, ConfigError> {
    let token = non_empty(value);
    if token
        .as_ref()
        .is_some_and(|t| t.chars().count() < MIN_ADMIN_TOKEN)
    {
        return Err(invalid(
            "BRIDGE_ADMIN_TOKEN",
            format!(
                "it is shorter than {MIN_ADMIN_TOKEN} characters; make a long random one \
                 (`openssl rand -hex 32`)"
            ),
        ));
    }
    Ok(token.map(Secret::from))
}

/// A credential, unless unset or blank.
pub(super) fn secret(value: Option<String>) -> Option<Secret> {
    non_empty(value).map(Secret::from)
}

/// `url` when it is an http:// or https:// URL with a host.
pub(super) fn http_url(variable: &'static str, url: String) -> Result<String, ConfigError> {
    match reqwest::Url::parse(&url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => Ok(url),
        _ => Err(invalid(
            variable,
            format!("`{url}` is not an http:// or https:// URL"),
        )),
    }
}

/// A duration (`30s`, `5m`...), `default` when unset or blank.
pub(super) fn duration(
    variable: &'static str,
    value: Option<String>,
    default: &str,
) -> Result<Duration, ConfigError> {
    let text = non_empty(value).unwrap_or_else(|| default.into());
    parse_duration(&text).map_err(|reason| invalid(variable, reason))
}

/// `BRIDGE_RECONCILE_EVERY`: unset is off; a period of at least a second.
pub(super) fn reconcile_every(value: Option<String>) -> Result<Option<Duration>, ConfigError> {
    const VARIABLE: &str = "BRIDGE_RECONCILE_EVERY";
    let Some(text) = non_empty(value) else {
        return Ok(None);
    };
    let every = parse_duration(&text).map_err(|reason| invalid(VARIABLE, reason))?;
    if every < Duration::from_secs(1) {
        return Err(invalid(
            VARIABLE,
            "must be at least 1s (unset turns it off)",
        ));
    }
    Ok(Some(every))
}

/// `true` or `false` (unset: false).
pub(super) fn yes_no(variable: &'static str, value: Option<String>) -> Result<bool, ConfigError> {
    match non_empty(value)
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(invalid(
            variable,
            format!("`{other}` is neither `true` nor `false`"),
        )),
    }
}

/// A whole number in `range`, `default` when unset or blank.
pub(super) fn number(
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
