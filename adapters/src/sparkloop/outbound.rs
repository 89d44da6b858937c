//! SparkLoop as a destination. Jobs carry the `subscribe` / `update` / `unsubscribe` bodies of
//! its custom integration document (optional keys left out when unknown), which webhook mode
//! posts as they are and API mode translates into API v2 calls when it sends them, so that a
//! queue filled in one mode can be delivered in the other.

use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Map, Value};

use crate::outbound::{Answer, OutboundRequest, WriteVerdict};
use crate::platform::{
    api_url, json_call, usual_platform_verdict, CallError, OutboundPlatform, PersonUpdate,
    ALL_KINDS,
};
use crate::EspEvent;

/// The destination name of jobs for SparkLoop.
pub const DESTINATION: &str = "sparkloop";

/// SparkLoop's API base.
pub const DEFAULT_API_URL: &str = "https://api.sparkloop.app";

/// `SPARKLOOP_RATE_LIMIT` unless set: calls to the SparkLoop API.
pub const DEFAULT_RATE_LIMIT: &str = "120/60s";

/// The job kind and JSON body that forward `event` to SparkLoop's incoming webhook, or `None`
/// for an event SparkLoop is not told about.
pub fn webhook_payload(event: &EspEvent) -> Option<(&'static str, String)> {
    // Attribution rides beside the seed's shape, for API mode; webhook mode leaves it out.
    let mut extra = None;
    let (kind, subscriber) = match event {
        EspEvent::Subscribed {
            person,
            created_at,
            attribution,
        } => {
            extra = (!attribution.0.is_empty()).then(|| {
                Value::Object(
                    attribution
                        .0
                        .iter()
                        .map(|(k, v)| (k.to_string(), json!(v)))
                        .collect(),
                )
            });
            let mut s = Map::new();
            s.insert("email".into(), json!(person.email.as_str()));
            insert_some(&mut s, "id", person.esp_id.clone());
            insert_some(
                &mut s,
                "first_name",
                person.first_name.clone().map(Value::from),
            );
            insert_some(&mut s, "name", person.name.clone().map(Value::from));
            insert_some(&mut s, "created_at", created_at.map(Value::from));
            ("subscribe", s)
        }
        EspEvent::Updated {
            person,
            previous_email,
            updated_at,
        } => {
            let mut s = Map::new();
            s.insert("email".into(), json!(person.email.as_str()));
            insert_some(
                &mut s,
                "previous_email",
                previous_email.as_ref().map(|e| json!(e.as_str())),
            );
            insert_some(
                &mut s,
                "first_name",
                person.first_name.clone().map(Value::from),
            );
            insert_some(&mut s, "name", person.name.clone().map(Value::from));
            insert_some(&mut s, "updated_at", updated_at.map(Value::from));
            ("update", s)
        }
        // A deletion at the ESP is a departure for the platform; the erasure, when asked for,
        // is a job of its own.
        EspEvent::Unsubscribed { email } | EspEvent::Deleted { email } => {
            let mut s = Map::new();
            s.insert("email".into(), json!(email.as_str()));
            ("unsubscribe", s)
        }
        EspEvent::Ignored { .. } => return None,
    };
    let mut body = json!({"type": kind, "subscriber": subscriber});
    if let Some(attribution) = extra {
        body[ATTRIBUTION] = attribution;
    }
    Some((kind, body.to_string()))
}

/// How ESP events reach SparkLoop.
#[derive(Debug, Clone)]
pub enum SparkLoopOutbound {
    /// `subscribe` / `update` / `unsubscribe` POSTed as they are to the incoming webhook URL
    /// (`SPARKLOOP_INCOMING_WEBHOOK_URL`), unpaced.
    Webhook {
        /// The incoming webhook's URL.
        url: String,
    },
    /// SparkLoop API v2 calls with `X-Api-Key`.
    Api {
        /// `SPARKLOOP_API_URL`.
        api_url: String,
        /// `SPARKLOOP_API_KEY`; events wait while it is unset.
        api_key: Option<SecretString>,
    },
}

impl OutboundPlatform for SparkLoopOutbound {
    fn destination(&self) -> &'static str {
        DESTINATION
    }

    fn rate_limit_variable(&self) -> &'static str {
        "SPARKLOOP_RATE_LIMIT"
    }

    fn forwards(&self, kind: &str) -> bool {
        ALL_KINDS.contains(&kind)
    }

    fn outbound_problem(&self) -> Option<String> {
        match self {
            SparkLoopOutbound::Api { api_key: None, .. } => Some(
                "SPARKLOOP_API_KEY (or SPARKLOOP_INCOMING_WEBHOOK_URL for webhook mode) is not \
                 set: ESP events are stored and queued for SparkLoop's API, and are sent once it is"
                    .into(),
            ),
            _ => None,
        }
    }

    fn paced(&self) -> bool {
        matches!(self, SparkLoopOutbound::Api { .. })
    }

    /// API mode: `DELETE /v2/subscribers/{email}`. The incoming webhook has no deletion.
    fn deletes(&self) -> Result<(), String> {
        match self {
            SparkLoopOutbound::Api { .. } => Ok(()),
            SparkLoopOutbound::Webhook { .. } => Err(
                "SparkLoop's incoming webhook (SPARKLOOP_INCOMING_WEBHOOK_URL) has no deletion:                  set SPARKLOOP_API_KEY to delete subscribers there, or erase here only"
                    .into(),
            ),
        }
    }

    fn request(&self, kind: &str, payload: &str) -> Result<OutboundRequest, CallError> {
        match self {
            SparkLoopOutbound::Webhook { url } => Ok(OutboundRequest {
                method: "POST",
                url: url.clone(),
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: seed_shape(payload)?.into_bytes(),
            }),
            SparkLoopOutbound::Api { api_url, api_key } => {
                let (method, url, body) = api_call(api_url, kind, payload)?;
                let key = api_key
                    .as_ref()
                    .map(|k| k.expose_secret())
                    .unwrap_or_default();
                Ok(json_call(method, url, body, ("X-Api-Key", key.to_string())))
            }
        }
    }

    /// API mode: a subscribe SparkLoop already has (its site script tracked the signup, or the
    /// person comes back) is confirmed with `PUT /v2/subscribers/{email}`
    /// `{"status": "confirmed"}` and the name when known.
    fn follow_up(
        &self,
        kind: &str,
        payload: &str,
        answer: &Answer<'_>,
    ) -> Option<Result<OutboundRequest, CallError>> {
        let SparkLoopOutbound::Api { api_url, api_key } = self else {
            return None;
        };
        if kind != "subscribe" || !already_taken(answer) {
            return None;
        }
        let key = api_key
            .as_ref()
            .map(|k| k.expose_secret())
            .unwrap_or_default();
        Some(
            api_call(api_url, "confirm", payload).map(|(method, url, body)| {
                json_call(method, url, body, ("X-Api-Key", key.to_string()))
            }),
        )
    }

    /// API mode: SparkLoop answers a subscribe (and its confirming `PUT`) with the subscriber,
    /// their `uuid` and `ref_code` among it (DESIGN 3.9).
    fn learned(&self, kind: &str, answer: &Answer<'_>) -> Option<PersonUpdate> {
        let api = matches!(self, SparkLoopOutbound::Api { .. });
        (api && kind == "subscribe" && (200..300).contains(&answer.status))
            .then(|| super::subscribers::created(answer.body))
            .flatten()
    }

    /// In API mode, a refusal whose effect is already there is done: a subscribe for an
    /// address SparkLoop has ("Email has already been taken"), an unsubscribe of someone
    /// already unsubscribed (409).
    fn read_answer(&self, kind: &str, answer: &Answer<'_>) -> WriteVerdict {
        let already_done = match (kind, answer.status) {
            ("subscribe", _) => already_taken(answer),
            ("unsubscribe", 409) => true,
            // Already gone is what a deletion asks for.
            ("delete", 404) => true,
            _ => false,
        };
        if already_done && matches!(self, SparkLoopOutbound::Api { .. }) {
            return WriteVerdict::Done;
        }
        usual_platform_verdict(answer)
    }
}

/// The API v2 call (method, URL, JSON body) that carries a job's webhook-shaped `payload`
/// (DESIGN 3.4): subscribe is `POST /v2/subscribers` with `email`, `name` and `created_at`
/// (ISO 8601, in the past for an import); an email change `PUT /v2/subscribers/{previous email}`
/// with the new `email`; a name change `PUT /v2/subscribers/{email}`; unsubscribe
/// `PUT /v2/subscribers/{email}/unsubscribe`.
fn api_call(
    api: &str,
    kind: &str,
    payload: &str,
) -> Result<(&'static str, String, String), CallError> {
    let body: Value =
        serde_json::from_str(payload).map_err(|e| CallError::NotJson(e.to_string()))?;
    let subscriber = &body["subscriber"];
    let text = |key: &str| subscriber[key].as_str().map(str::to_string);
    let email = text("email").ok_or(CallError::NoEmail)?;
    let name = text("name").or_else(|| text("first_name"));
    let url = |segments: &[&str]| {
        let mut path = vec!["v2", "subscribers"];
        path.extend_from_slice(segments);
        api_url(api, "SPARKLOOP_API_URL", &path)
    };
    let mut fields = Map::new();
    Ok(match kind {
        "subscribe" => {
            fields.insert("email".into(), json!(email));
            insert_some(&mut fields, "name", name.map(Value::from));
            let created_at = subscriber["created_at"]
                .as_i64()
                .and_then(|s| u64::try_from(s).ok())
                .map(|s| {
                    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
                    humantime::format_rfc3339_seconds(at).to_string()
                });
            insert_some(&mut fields, "created_at", created_at.map(Value::from));
            for (key, value) in body[ATTRIBUTION].as_object().into_iter().flatten() {
                fields.insert(key.clone(), value.clone());
            }
            ("POST", url(&[])?, Value::Object(fields).to_string())
        }
        "update" => {
            let identifier = text("previous_email").unwrap_or_else(|| email.clone());
            fields.insert("email".into(), json!(email));
            insert_some(&mut fields, "name", name.map(Value::from));
            (
                "PUT",
                url(&[&identifier])?,
                Value::Object(fields).to_string(),
            )
        }
        "unsubscribe" => ("PUT", url(&[&email, "unsubscribe"])?, "{}".into()),
        "delete" => ("DELETE", url(&[&email])?, String::new()),
        "confirm" => {
            fields.insert("status".into(), json!("confirmed"));
            insert_some(&mut fields, "name", name.map(Value::from));
            ("PUT", url(&[&email])?, Value::Object(fields).to_string())
        }
        other => {
            return Err(CallError::NoCall {
                platform: "SparkLoop",
                kind: other.into(),
            })
        }
    })
}

/// The key of a job's payload that holds the signup's attribution (API mode only).
const ATTRIBUTION: &str = "attribution";

/// A job's payload as the incoming webhook takes it: the seed's shape, without attribution.
fn seed_shape(payload: &str) -> Result<String, CallError> {
    if !payload.contains(ATTRIBUTION) {
        return Ok(payload.to_string());
    }
    let mut body: Value =
        serde_json::from_str(payload).map_err(|e| CallError::NotJson(e.to_string()))?;
    if let Some(object) = body.as_object_mut() {
        object.remove(ATTRIBUTION);
    }
    Ok(body.to_string())
}

/// SparkLoop's answer to a subscribe it already has: 400 (or 422) "Email has already been taken".
fn already_taken(answer: &Answer<'_>) -> bool {
    matches!(answer.status, 400 | 422) && answer.body.contains("has already been taken")
}

fn insert_some(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        map.insert(key.into(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Email, Person};

    #[test]
    fn attribution_goes_to_the_api_and_not_to_the_incoming_webhook() {
        let body = br#"{"type": "subscribe", "subscriber": {"email": "a@b.co",
            "referrer_code": "rc1", "utm_source": "twitter", "ip_address": " ", "other": "x"}}"#;
        let event = crate::custom::parse_event(body).unwrap();
        let (kind, payload) = webhook_payload(&event).unwrap();
        let webhook = SparkLoopOutbound::Webhook {
            url: "http://sparkloop.test/in".into(),
        };
        let sent: Value =
            serde_json::from_slice(&webhook.request(kind, &payload).unwrap().body).unwrap();
        assert_eq!(
            sent,
            json!({"type": "subscribe", "subscriber": {"email": "a@b.co"}})
        );
        let posted: Value =
            serde_json::from_slice(&api().request(kind, &payload).unwrap().body).unwrap();
        assert_eq!(
            posted,
            json!({"email": "a@b.co", "referrer_code": "rc1", "utm_source": "twitter"})
        );
    }

    fn api() -> SparkLoopOutbound {
        SparkLoopOutbound::Api {
            api_url: "http://sparkloop.test".into(),
            api_key: Some("k".to_string().into()),
        }
    }

    fn answer(status: u16, body: &str) -> Answer<'_> {
        Answer {
            status,
            retry_after: None,
            body,
        }
    }

    #[test]
    fn unknown_values_are_left_out() {
        let event = EspEvent::Subscribed {
            attribution: Default::default(),
            person: Person {
                email: Email::parse("a@b.co").unwrap(),
                esp_id: None,
                first_name: None,
                name: None,
            },
            created_at: None,
        };
        let (kind, body) = webhook_payload(&event).unwrap();
        assert_eq!(kind, "subscribe");
        assert_eq!(
            body,
            r#"{"subscriber":{"email":"a@b.co"},"type":"subscribe"}"#
        );
    }

    #[test]
    fn api_calls_have_the_documented_shapes() {
        let call = api()
            .request(
                "subscribe",
                r#"{"type":"subscribe","subscriber":{"email":"a+b@example.com","id":1,"first_name":"Ann","created_at":1564400550}}"#,
            )
            .unwrap();
        assert_eq!(call.method, "POST");
        assert_eq!(call.url, "http://sparkloop.test/v2/subscribers");
        assert!(call.headers.contains(&("X-Api-Key".into(), "k".into())));
        assert_eq!(
            serde_json::from_slice::<Value>(&call.body).unwrap(),
            json!({"email": "a+b@example.com", "name": "Ann", "created_at": "2019-07-29T11:42:30Z"})
        );
        let (method, url, body) = api_call(
            "http://sparkloop.test/",
            "update",
            r#"{"type":"update","subscriber":{"email":"new@example.com","previous_email":"old+x@example.com"}}"#,
        )
        .unwrap();
        assert_eq!(
            (method, url.as_str()),
            (
                "PUT",
                "http://sparkloop.test/v2/subscribers/old+x@example.com"
            )
        );
        assert_eq!(body, r#"{"email":"new@example.com"}"#);
        let call = api()
            .request(
                "unsubscribe",
                r#"{"type":"unsubscribe","subscriber":{"email":"a b@example.com"}}"#,
            )
            .unwrap();
        assert_eq!(
            call.url,
            "http://sparkloop.test/v2/subscribers/a%20b@example.com/unsubscribe"
        );
    }

    #[test]
    fn what_is_already_there_is_done_in_api_mode_only() {
        let taken = r#"{"error":"Email has already been taken"}"#;
        assert_eq!(
            api().read_answer("subscribe", &answer(400, taken)),
            WriteVerdict::Done
        );
        assert_eq!(
            api().read_answer("subscribe", &answer(400, r#"{"error":"Email is invalid"}"#)),
            WriteVerdict::Failed
        );
        assert_eq!(
            api().read_answer("unsubscribe", &answer(409, "")),
            WriteVerdict::Done
        );
        let webhook = SparkLoopOutbound::Webhook {
            url: "http://sparkloop.test/hook".into(),
        };
        assert_eq!(
            webhook.read_answer("subscribe", &answer(400, taken)),
            WriteVerdict::Failed
        );
        assert!(!webhook.paced());
        let call = webhook.request("subscribe", "{\"x\":1}").unwrap();
        assert_eq!(call.body, b"{\"x\":1}");
    }
}
