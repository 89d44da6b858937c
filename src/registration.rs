//! `referral-bridge sparkloop webhooks ...`: SparkLoop's webhook subscriptions of a campaign,
//! through its API (`/v1/campaigns/{campaign}/webhooks` with `X-Api-Key`), and `ensure`, which
//! registers the bridge's callback URL once however often it runs.

use std::fmt;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::Settings;

/// The events SparkLoop's webhook API can switch on for a webhook.
pub const EVENTS: &[&str] = &["new_referral", "reward_unlocked"];

/// Why a call to SparkLoop's webhook API failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// A setting the command needs is missing.
    #[error("{0} must be set to manage SparkLoop's webhooks")]
    NotConfigured(&'static str),
    /// The URL cannot be a SparkLoop webhook; nothing was sent.
    #[error("{0}")]
    BadUrl(String),
    /// An event name SparkLoop does not know.
    #[error("unknown event `{0}`; expected new_referral or reward_unlocked")]
    UnknownEvent(String),
    /// SparkLoop could not be reached.
    #[error("cannot reach SparkLoop: {0}")]
    Transport(String),
    /// SparkLoop refused: its status and its own message.
    #[error("SparkLoop answered HTTP {status}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// SparkLoop's `error` text, or the start of the body.
        message: String,
    },
}

/// One webhook subscription, as SparkLoop describes it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Webhook {
    /// SparkLoop's id (`webhook_ac06a45cb5`).
    pub uuid: String,
    /// Where it posts.
    pub url: String,
    /// Which events it sends (`null` counts as off).
    #[serde(default)]
    pub events: std::collections::BTreeMap<String, Option<bool>>,
}

impl Webhook {
    /// The events switched on, in [`EVENTS`] order.
    pub fn enabled(&self) -> Vec<&'static str> {
        EVENTS
            .iter()
            .copied()
            .filter(|event| self.events.get(*event).copied().flatten() == Some(true))
            .collect()
    }
}

impl fmt::Display for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let enabled = self.enabled();
        let events = if enabled.is_empty() {
            "no events".to_string()
        } else {
            enabled.join(",")
        };
        write!(f, "{}  {}  {events}", self.uuid, self.url)
    }
}

/// What `ensure` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Ensured {
    /// A webhook with the URL and the events was there already.
    Unchanged(Webhook),
    /// A webhook with the URL was there, with other events: it now has the wanted ones.
    Updated(Webhook),
    /// There was none with the URL: one was created.
    Created(Webhook),
}

/// Reads `--events`: a comma-separated list of [`EVENTS`], returned in [`EVENTS`] order.
pub fn parse_events(text: &str) -> Result<Vec<&'static str>, RegistrationError> {
    let names: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    if let Some(unknown) = names.iter().find(|n| !EVENTS.contains(n)) {
        return Err(RegistrationError::UnknownEvent(unknown.to_string()));
    }
    Ok(EVENTS
        .iter()
        .copied()
        .filter(|e| names.contains(e))
        .collect())
}

/// Refuses a URL SparkLoop would refuse (it wants `https://`) or that cannot be one, before any
/// call.
pub fn check_url(url: &str) -> Result<(), RegistrationError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| RegistrationError::BadUrl(format!("`{url}` is not a URL: {e}")))?;
    if parsed.scheme() != "https" {
        return Err(RegistrationError::BadUrl(format!(
            "`{url}`: SparkLoop only calls https:// URLs; give the bridge's public https address"
        )));
    }
    if parsed.host_str().is_none() {
        return Err(RegistrationError::BadUrl(format!("`{url}` has no host")));
    }
    Ok(())
}

/// A client of one campaign's webhooks.
pub struct WebhookApi {
    client: reqwest::Client,
    base: String,
    api_key: String,
}

impl WebhookApi {
    /// The campaign's webhooks as the settings name them (`SPARKLOOP_API_URL`,
    /// `SPARKLOOP_API_KEY`, `SPARKLOOP_CAMPAIGN_ID`).
    pub fn new(settings: &Settings) -> Result<Self, RegistrationError> {
        let sparkloop = &settings.sparkloop;
        let api_key = sparkloop
            .api_key
            .as_ref()
            .ok_or(RegistrationError::NotConfigured("SPARKLOOP_API_KEY"))?;
        let campaign = sparkloop
            .campaign_id
            .as_deref()
            .ok_or(RegistrationError::NotConfigured("SPARKLOOP_CAMPAIGN_ID"))?;
        let client = reqwest::Client::builder()
            .timeout(settings.worker.request_timeout)
            .build()
            .map_err(|e| RegistrationError::Transport(e.to_string()))?;
        Ok(WebhookApi {
            client,
            base: format!(
                "{}/v1/campaigns/{}/webhooks",
                sparkloop.api_url.trim_end_matches('/'),
                referral_bridge_adapters::encode_component(campaign)
            ),
            api_key: api_key.expose().to_string(),
        })
    }

    /// Sends one call and reads SparkLoop's answer, its `error` text when it refuses.
    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Value, RegistrationError> {
        let response = request
            .header("X-Api-Key", &self.api_key)
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| RegistrationError::Transport(e.without_url().to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| RegistrationError::Transport(e.without_url().to_string()))?;
        if !(200..300).contains(&status) {
            return Err(RegistrationError::Refused {
                status,
                message: referral_bridge_adapters::outbound::error_text(&String::from_utf8_lossy(
                    &body,
                )),
            });
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&body).map_err(|e| RegistrationError::Refused {
            status,
            message: format!("an answer that is not JSON ({e})"),
        })
    }

    fn url_of(&self, uuid: &str) -> String {
        format!(
            "{}/{}",
            self.base,
            referral_bridge_adapters::encode_component(uuid)
        )
    }

    /// The body that subscribes `url` to `events` and nothing else.
    fn body(url: Option<&str>, events: &[&str]) -> Value {
        let mut body = json!({});
        if let Some(url) = url {
            body["url"] = url.into();
        }
        for event in EVENTS {
            body[*event] = events.contains(event).into();
        }
        body
    }

    fn webhook(answer: Value) -> Result<Webhook, RegistrationError> {
        serde_json::from_value(answer.get("webhook").cloned().unwrap_or(answer)).map_err(|e| {
            RegistrationError::Refused {
                status: 200,
                message: format!("an answer without the webhook ({e})"),
            }
        })
    }

    /// The campaign's webhooks, newest first (SparkLoop's order).
    pub async fn list(&self) -> Result<Vec<Webhook>, RegistrationError> {
        let answer = self.call(self.client.get(&self.base)).await?;
        serde_json::from_value(answer.get("webhooks").cloned().unwrap_or(json!([]))).map_err(|e| {
            RegistrationError::Refused {
                status: 200,
                message: format!("an answer that is not a list of webhooks ({e})"),
            }
        })
    }

    /// Creates a webhook posting `events` to `url`.
    pub async fn create(&self, url: &str, events: &[&str]) -> Result<Webhook, RegistrationError> {
        check_url(url)?;
        let body = Self::body(Some(url), events);
        Self::webhook(self.call(self.client.post(&self.base).json(&body)).await?)
    }

    /// Changes webhook `uuid`: its URL when given, and its events.
    pub async fn update(
        &self,
        uuid: &str,
        url: Option<&str>,
        events: &[&str],
    ) -> Result<Webhook, RegistrationError> {
        if let Some(url) = url {
            check_url(url)?;
        }
        let body = Self::body(url, events);
        Self::webhook(
            self.call(self.client.put(self.url_of(uuid)).json(&body))
                .await?,
        )
    }

    /// Deletes webhook `uuid`; returns SparkLoop's message.
    pub async fn delete(&self, uuid: &str) -> Result<String, RegistrationError> {
        let answer = self.call(self.client.delete(self.url_of(uuid))).await?;
        Ok(answer
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| format!("deleted webhook {uuid}"), str::to_string))
    }

    /// Makes sure one webhook posts `events` to `url`: the one already posting there is kept
    /// (and given the events if it has others), else one is created.
    pub async fn ensure(&self, url: &str, events: &[&str]) -> Result<Ensured, RegistrationError> {
        check_url(url)?;
        let existing = self.list().await?;
        let wanted = |w: &Webhook| w.url.trim_end_matches('/') == url.trim_end_matches('/');
        match existing.into_iter().find(wanted) {
            Some(webhook) if webhook.enabled() == events => Ok(Ensured::Unchanged(webhook)),
            Some(webhook) => Ok(Ensured::Updated(
                self.update(&webhook.uuid, None, events).await?,
            )),
            None => Ok(Ensured::Created(self.create(url, events).await?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls_and_known_events() {
        assert!(check_url("https://bridge.example.com/webhooks/sparkloop").is_ok());
        let refused = check_url("http://bridge.example.com/webhooks/sparkloop").unwrap_err();
        assert!(refused.to_string().contains("https://"), "{refused}");
        assert!(check_url("bridge.example.com").is_err());
        assert_eq!(
            parse_events("reward_unlocked, new_referral,new_referral").unwrap(),
            vec!["new_referral", "reward_unlocked"]
        );
        assert!(parse_events("sync_subscriber").is_err());
    }

    #[test]
    fn webhooks_read_as_sparkloop_writes_them() {
        let webhook: Webhook = serde_json::from_value(json!({"uuid": "webhook_ac06a45cb5",
            "url": "https://webhook.site/x", "events": {"new_referral": true, "reward_unlocked": null}}))
        .unwrap();
        assert_eq!(webhook.enabled(), vec!["new_referral"]);
        assert_eq!(
            webhook.to_string(),
            "webhook_ac06a45cb5  https://webhook.site/x  new_referral"
        );
    }
}
