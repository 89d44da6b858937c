//! Reading the configuration: every variable as text ([`Raw`]), then checked into [`Settings`]
//! with an error that names the variable.

use std::collections::BTreeMap;
use std::time::Duration;

use referral_bridge_adapters::loyaltysurf::{self, LoyaltySurfApi, OnUnsubscribe};
use referral_bridge_adapters::referralloop::{self, ReferralLoopApi};
use referral_bridge_adapters::sparkloop;
use serde::Deserialize;

use super::values::{
    admin_token, duration, http_url, invalid, non_empty, number, reconcile_every, secret, yes_no,
};
use super::{
    ConfigError, DatabaseUrl, EspSettings, LogFormat, Platform, RateLimit, RetryPolicy, Settings,
    SparkLoopSettings, Upstream, WorkerSettings,
};

/// Every variable as text, before checking; keys are the variables' names in lower case, which
/// is also how they are written in the TOML file.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Raw {
    database_url: Option<String>,
    bridge_db_pool_size: Option<String>,
    bridge_db_timeout: Option<String>,
    bridge_listen: Option<String>,
    bridge_admin_token: Option<String>,
    bridge_admin_session_ttl: Option<String>,
    bridge_max_body: Option<String>,
    bridge_inbound_rate_limit: Option<String>,
    bridge_log_format: Option<String>,
    bridge_body_timeout: Option<String>,
    bridge_retention: Option<String>,
    bridge_erase_on_delete: Option<String>,
    bridge_reconcile_every: Option<String>,
    bridge_platform: Option<String>,
    sparkloop_upstream: Option<String>,
    sparkloop_incoming_webhook_url: Option<String>,
    sparkloop_api_url: Option<String>,
    sparkloop_api_key: Option<String>,
    sparkloop_webhook_token: Option<String>,
    sparkloop_rate_limit: Option<String>,
    sparkloop_campaign_id: Option<String>,
    sparkloop_reflink_template: Option<String>,
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
    esp_field_in_referrer_code: Option<String>,
    esp_field_in_utm_source: Option<String>,
    esp_field_in_utm_campaign: Option<String>,
    esp_field_in_country_code: Option<String>,
    esp_poll_interval: Option<String>,
    esp_rate_limit: Option<String>,
    esp_write_delay: Option<String>,
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
    /// Every other key: the `ESP_FIELD_*` variables, read through the field catalogue
    /// ([`super::fields::FIELDS`]) so that each field is declared there only; and, from the
    /// environment, whatever else it holds (`PATH`...). Filled by [`Raw::read`].
    #[serde(skip)]
    other: BTreeMap<String, config::Value>,
}

impl Raw {
    /// Reads a built configuration: its fields, and every other key.
    pub(super) fn read(config: config::Config) -> Result<Self, config::ConfigError> {
        let other = config.clone().try_deserialize()?;
        Ok(Raw {
            other,
            ..config.try_deserialize()?
        })
    }

    /// The keys the bridge does not read: in a configuration file, each is a mistake (a typo, or
    /// a table the file format does not have).
    pub(super) fn unknown_keys(&self) -> Vec<String> {
        let known = Self::keys();
        self.other
            .keys()
            .filter(|key| {
                !known.contains(&key.as_str())
                    && !super::fields::FIELDS
                        .iter()
                        .any(|(_, variable, _)| variable.eq_ignore_ascii_case(key))
            })
            .cloned()
            .collect()
    }

    /// The names of the keys read as fields, as serde sees them (asked of serde, so that the
    /// list cannot drift from the struct): a deserializer that records the field names it is
    /// asked for, then stops.
    pub(super) fn keys() -> &'static [&'static str] {
        use serde::de::{self, Deserialize, Visitor};

        struct Names(&'static [&'static str]);

        #[derive(Debug)]
        struct Stop;
        impl std::fmt::Display for Stop {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("stop")
            }
        }
        impl std::error::Error for Stop {}
        impl de::Error for Stop {
            fn custom<T: std::fmt::Display>(_: T) -> Self {
                Stop
            }
        }

        impl<'de> de::Deserializer<'de> for &mut Names {
            type Error = Stop;
            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
                Err(Stop)
            }
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Stop> {
                self.0 = fields;
                Err(Stop)
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
                byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
                identifier ignored_any
            }
        }

        let mut names = Names(&[]);
        let _ = Raw::deserialize(&mut names);
        names.0
    }

    /// The value of an `ESP_FIELD_*` variable, trimmed; an empty value is refused, since it can
    /// only be a mistake (a field is switched off with `off`, and left unset for its default).
    fn field(&self, variable: &'static str) -> Result<Option<String>, ConfigError> {
        let Some(value) = self.other.get(&variable.to_ascii_lowercase()) else {
            return Ok(None);
        };
        let text = value
            .clone()
            .into_string()
            .map_err(|_| invalid(variable, "a field name is text"))?;
        let text = text.trim();
        if text.is_empty() {
            return Err(invalid(
                variable,
                "it is empty: set a field name, `off` to switch the field off, or leave it \
                 unset for its default",
            ));
        }
        Ok(Some(text.to_string()))
    }

    /// The fields switched on: each `ESP_FIELD_*` is a name, `off`, or unset for its default.
    fn field_map(&self) -> Result<super::fields::FieldMap, ConfigError> {
        let mut map: Vec<(super::fields::Field, String)> = Vec::new();
        for (field, variable, default) in super::fields::FIELDS {
            let name = match self.field(variable)? {
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
        Ok(super::fields::FieldMap(map))
    }
}

impl Settings {
    pub(super) fn check(raw: Raw) -> Result<Self, ConfigError> {
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
                    api_key: secret(raw.loyaltysurf_api_key),
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
                    api_key: secret(raw.referralloop_api_key),
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
            reflink_template: non_empty(raw.sparkloop_reflink_template)
                .map(|template| {
                    if !template.contains("{code}") {
                        return Err(invalid(
                            "SPARKLOOP_REFLINK_TEMPLATE",
                            format!("`{template}` has no `{{code}}` for the referral code"),
                        ));
                    }
                    http_url(
                        "SPARKLOOP_REFLINK_TEMPLATE",
                        template.replace("{code}", "code"),
                    )?;
                    Ok(template)
                })
                .transpose()?,
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
            attribution_fields: [
                ("referrer_code", raw.esp_field_in_referrer_code.clone()),
                ("utm_source", raw.esp_field_in_utm_source.clone()),
                ("utm_campaign", raw.esp_field_in_utm_campaign.clone()),
                ("country_code", raw.esp_field_in_country_code.clone()),
            ]
            .into_iter()
            .filter_map(|(key, name)| Some((key, non_empty(name)?)))
            .collect(),
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
            db_pool_size: non_empty(raw.bridge_db_pool_size.clone())
                .map(|_| number("BRIDGE_DB_POOL_SIZE", raw.bridge_db_pool_size, 10, 1..=500))
                .transpose()?
                .map(|n| n as u32),
            db_timeout: duration("BRIDGE_DB_TIMEOUT", raw.bridge_db_timeout, "2s")?,
            listen,
            inbound_rate_limit: non_empty(raw.bridge_inbound_rate_limit)
                .map(|text| {
                    RateLimit::parse(&text)
                        .map_err(|reason| invalid("BRIDGE_INBOUND_RATE_LIMIT", reason))
                })
                .transpose()?,
            body_timeout: duration("BRIDGE_BODY_TIMEOUT", raw.bridge_body_timeout, "30s")?,
            log_format: non_empty(raw.bridge_log_format)
                .map(|text| {
                    LogFormat::parse(&text).map_err(|reason| invalid("BRIDGE_LOG_FORMAT", reason))
                })
                .transpose()?
                .unwrap_or_default(),
            admin_token: admin_token(raw.bridge_admin_token)?,
            admin_session_ttl: duration(
                "BRIDGE_ADMIN_SESSION_TTL",
                raw.bridge_admin_session_ttl,
                "12h",
            )?,
            max_body,
            sparkloop,
            esp,
            retry,
            dedupe_window: duration("DEDUPE_WINDOW", raw.dedupe_window, "1h")?,
            retention: duration("BRIDGE_RETENTION", raw.bridge_retention, "30d")?,
            erase_on_delete: yes_no("BRIDGE_ERASE_ON_DELETE", raw.bridge_erase_on_delete)?,
            reconcile_every: reconcile_every(raw.bridge_reconcile_every)?,
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
