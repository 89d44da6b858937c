//! SparkLoop's webhook subscriptions of a campaign, through its API
//! (`/v1/campaigns/{campaign}/webhooks` with `X-Api-Key`): the calls, their answers, and the
//! plan of `ensure`, which registers the bridge's callback URL once however often it runs.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::outbound::{error_text, Answer, OutboundRequest};

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
    let parsed = url::Url::parse(url)
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

/// The calls to one campaign's webhooks.
pub struct WebhookApi {
    base: String,
    api_key: SecretString,
}

/// What `ensure` has to do, given the webhooks there are.
#[derive(Debug, Clone, PartialEq)]
pub enum EnsurePlan {
    /// The webhook posting to the URL has the events already.
    Keep(Webhook),
    /// The webhook posting to the URL (this id) needs the events.
    Update(String),
    /// No webhook posts to the URL.
    Create,
}

impl WebhookApi {
    /// The webhooks of `campaign` at SparkLoop's API `api_url`, called with `api_key`.
    pub fn new(api_url: &str, api_key: SecretString, campaign: &str) -> Self {
        WebhookApi {
            base: format!(
                "{}/v1/campaigns/{}/webhooks",
                api_url.trim_end_matches('/'),
                crate::encode_component(campaign)
            ),
            api_key,
        }
    }

    fn call(&self, method: &'static str, url: String, body: Option<Value>) -> OutboundRequest {
        let mut headers = vec![
            (
                "X-Api-Key".to_string(),
                self.api_key.expose_secret().to_string(),
            ),
            ("Accept".to_string(), "application/json".to_string()),
        ];
        if body.is_some() {
            headers.push(("Content-Type".to_string(), "application/json".to_string()));
        }
        OutboundRequest {
            method,
            url,
            headers,
            body: body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
        }
    }

    fn url_of(&self, uuid: &str) -> String {
        format!("{}/{}", self.base, crate::encode_component(uuid))
    }

    /// The body that subscribes `url` to `events` and nothing else.
    /// A webhook's body: the URL when given, every event switched on or off when `events` is
    /// given (an update without them leaves the events as they are).
    fn body(url: Option<&str>, events: Option<&[&str]>) -> Value {
        let mut body = json!({});
        if let Some(url) = url {
            body["url"] = url.into();
        }
        for event in EVENTS.iter().filter(|_| events.is_some()) {
            body[*event] = events.is_some_and(|events| events.contains(event)).into();
        }
        body
    }

    /// The call that lists the campaign's webhooks (read with [`WebhookApi::read_list`]).
    pub fn list(&self) -> OutboundRequest {
        self.call("GET", self.base.clone(), None)
    }

    /// The call that creates a webhook posting `events` to `url` (read with
    /// [`WebhookApi::read_webhook`]); a URL SparkLoop would refuse is refused first.
    pub fn create(&self, url: &str, events: &[&str]) -> Result<OutboundRequest, RegistrationError> {
        check_url(url)?;
        Ok(self.call(
            "POST",
            self.base.clone(),
            Some(Self::body(Some(url), Some(events))),
        ))
    }

    /// The call that changes webhook `uuid`: its URL when given, and its events.
    pub fn update(
        &self,
        uuid: &str,
        url: Option<&str>,
        events: Option<&[&str]>,
    ) -> Result<OutboundRequest, RegistrationError> {
        if let Some(url) = url {
            check_url(url)?;
        }
        Ok(self.call("PUT", self.url_of(uuid), Some(Self::body(url, events))))
    }

    /// The call that deletes webhook `uuid` (read with [`WebhookApi::read_deleted`]).
    pub fn delete(&self, uuid: &str) -> OutboundRequest {
        self.call("DELETE", self.url_of(uuid), None)
    }

    /// SparkLoop's answer as JSON (`null` for an empty body), or its own `error` text when it
    /// refused.
    pub fn read(answer: &Answer<'_>) -> Result<Value, RegistrationError> {
        if !(200..300).contains(&answer.status) {
            return Err(RegistrationError::Refused {
                status: answer.status,
                message: error_text(answer.body),
            });
        }
        if answer.body.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(answer.body).map_err(|e| RegistrationError::Refused {
            status: answer.status,
            message: format!("an answer that is not JSON ({e})"),
        })
    }

    /// The webhooks in an answer to [`WebhookApi::list`], newest first (SparkLoop's order).
    pub fn read_list(answer: Value) -> Result<Vec<Webhook>, RegistrationError> {
        serde_json::from_value(answer.get("webhooks").cloned().unwrap_or(json!([]))).map_err(|e| {
            RegistrationError::Refused {
                status: 200,
                message: format!("an answer that is not a list of webhooks ({e})"),
            }
        })
    }

    /// The webhook in an answer to a create or an update.
    pub fn read_webhook(answer: Value) -> Result<Webhook, RegistrationError> {
        serde_json::from_value(answer.get("webhook").cloned().unwrap_or(answer)).map_err(|e| {
            RegistrationError::Refused {
                status: 200,
                message: format!("an answer without the webhook ({e})"),
            }
        })
    }

    /// SparkLoop's message in an answer to [`WebhookApi::delete`] of `uuid`.
    pub fn read_deleted(answer: &Value, uuid: &str) -> String {
        answer
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| format!("deleted webhook {uuid}"), str::to_string)
    }

    /// What makes one webhook post `events` to `url`, given the `existing` ones: the one
    /// already posting there is kept (and given the events if it has others), else one is
    /// created.
    pub fn plan_ensure(
        existing: Vec<Webhook>,
        url: &str,
        events: &[&str],
    ) -> Result<EnsurePlan, RegistrationError> {
        check_url(url)?;
        let wanted = |w: &Webhook| w.url.trim_end_matches('/') == url.trim_end_matches('/');
        Ok(match existing.into_iter().find(wanted) {
            Some(webhook) if webhook.enabled() == events => EnsurePlan::Keep(webhook),
            Some(webhook) => EnsurePlan::Update(webhook.uuid),
            None => EnsurePlan::Create,
        })
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
