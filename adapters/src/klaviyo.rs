//! Klaviyo (API revision 2026-07-15). In: system webhooks, batched (`data[]` of `{topic,
//! payload}`, `meta.klaviyo_webhook_id`), signed: `Klaviyo-Signature` = hex HMAC-SHA256 of the
//! raw body followed by `Klaviyo-Timestamp`, and `meta.klaviyo_webhook_id` must be the
//! `Klaviyo-Webhook-Id` header. Out: `PATCH /api/profiles/{id}` (JSON:API) with the bridge's
//! `properties` only (others untouched); the profile id comes from `POST /api/profile-import`
//! by email, which finds the profile or creates it.

use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;

use crate::outbound::{
    usual_verdict, Answer, EspConfig, FieldUpdate, MessageId, OutboundEsp, OutboundRequest,
    WriteVerdict,
};
use crate::{Email, EspEvent, InboundEsp, InboundRequest, ParseError, Person, VerifyError};

/// Klaviyo's API base.
pub const DEFAULT_API_URL: &str = "https://a.klaviyo.com/api";

/// The API revision the requests are written for.
pub const REVISION: &str = "2026-07-15";

/// How far `Klaviyo-Timestamp` may be from now.
const TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// The `ESP_RATE_LIMIT` used unless one is set. Klaviyo's profile endpoints: 75 a second in a burst, 750 a minute steady.
pub const DEFAULT_RATE_LIMIT: &str = "75/1s,750/60s";

/// The Klaviyo adapter.
#[derive(Debug, Default, Clone)]
pub struct Klaviyo {
    config: EspConfig,
}

impl Klaviyo {
    /// The adapter, reaching Klaviyo as `config` says (`api_key`: a private key, `pk_…`).
    pub fn new(config: EspConfig) -> Self {
        Klaviyo { config }
    }

    fn request(&self, method: &'static str, rest: &str, body: Value) -> OutboundRequest {
        let base = self.config.api_url.as_deref().unwrap_or(DEFAULT_API_URL);
        OutboundRequest {
            method,
            url: format!("{}/{rest}", base.trim_end_matches('/')),
            headers: vec![
                (
                    "Authorization".into(),
                    format!("Klaviyo-API-Key {}", self.config.key()),
                ),
                ("revision".into(), REVISION.into()),
                ("Content-Type".into(), "application/vnd.api+json".into()),
                ("Accept".into(), "application/vnd.api+json".into()),
            ],
            body: body.to_string().into_bytes(),
        }
    }
}

/// Checks a delivery's signature, timestamp and webhook id as of `now`.
pub fn verify_delivery(
    request: &InboundRequest<'_>,
    secret: &str,
    now: SystemTime,
) -> Result<(), VerifyError> {
    let header = |name: &str| {
        request
            .header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::trim)
    };
    let signature = header("klaviyo-signature").ok_or(VerifyError::Missing)?;
    let timestamp = header("klaviyo-timestamp").ok_or(VerifyError::Missing)?;
    let signature = crate::from_hex(signature).ok_or(VerifyError::Wrong)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(request.body);
    mac.update(timestamp.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| VerifyError::Wrong)?;
    let sent = httpdate::parse_http_date(timestamp).map_err(|_| VerifyError::Wrong)?;
    let skew = now
        .duration_since(sent)
        .or_else(|_| sent.duration_since(now))
        .unwrap_or_default();
    if skew > TOLERANCE {
        return Err(VerifyError::Wrong);
    }
    // The body names the webhook it was sent for: a signed body replayed to this endpoint from
    // another of the account's webhooks is refused.
    let webhook_id = header("klaviyo-webhook-id").ok_or(VerifyError::Missing)?;
    let body: Value = serde_json::from_slice(request.body).map_err(|_| VerifyError::Wrong)?;
    if body
        .pointer("/meta/klaviyo_webhook_id")
        .and_then(Value::as_str)
        != Some(webhook_id)
    {
        return Err(VerifyError::Wrong);
    }
    Ok(())
}

impl InboundEsp for Klaviyo {
    fn credentials_hint(&self) -> &'static str {
        "Klaviyo signs its webhooks in `Klaviyo-Signature` and `Klaviyo-Timestamp`: set ESP_WEBHOOK_SECRET to the webhook's secret"
    }

    fn credentials(&self) -> &'static [crate::WebhookCredential] {
        use crate::WebhookCredential;
        &[WebhookCredential::SignatureHeader("Klaviyo-Signature")]
    }

    fn name(&self) -> &'static str {
        "klaviyo"
    }

    fn verify(
        &self,
        request: &InboundRequest<'_>,
        secret: Option<&str>,
    ) -> Result<(), VerifyError> {
        let secret = secret.ok_or(VerifyError::NotConfigured)?;
        verify_delivery(request, secret, SystemTime::now())
    }

    fn parse(&self, request: &InboundRequest<'_>) -> Result<Vec<EspEvent>, ParseError> {
        parse_webhook(request.body)
    }
}

/// The first string under a key called `key`, anywhere in `value` (depth first).
fn find_string<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    match value {
        Value::Object(map) => map
            .get(key)
            .and_then(Value::as_str)
            .or_else(|| map.values().find_map(|v| find_string(v, key))),
        Value::Array(items) => items.iter().find_map(|v| find_string(v, key)),
        _ => None,
    }
}

/// The profile an event is about: its address and id. The payload is the event resource (as
/// `GET /api/events/{id}` gives it), the profile included or related.
fn profile_of(payload: &Value) -> Result<Person, ParseError> {
    let included = payload
        .get("included")
        .and_then(Value::as_array)
        .and_then(|items| {
            items
                .iter()
                .find(|i| i.get("type").and_then(Value::as_str) == Some("profile"))
        });
    let email = included
        .and_then(|p| p.pointer("/attributes/email"))
        .and_then(Value::as_str)
        .or_else(|| find_string(payload, "email"))
        .ok_or_else(|| ParseError("the event names no profile email".into()))?;
    let id = included
        .and_then(|p| p.get("id"))
        .or_else(|| payload.pointer("/data/relationships/profile/data/id"))
        .filter(|id| id.is_string())
        .cloned();
    Ok(Person {
        email: Email::parse(email)
            .map_err(|_| ParseError("the profile's email is not a valid address".into()))?,
        esp_id: id,
        first_name: included
            .and_then(|p| p.pointer("/attributes/first_name"))
            .and_then(Value::as_str)
            .map(str::to_string),
        name: None,
    })
}

/// Reads a Klaviyo delivery: each `data[]` item's topic decides: subscribed to email marketing
/// (or to a list) is a signup, unsubscribed from email marketing (or suppressed) a departure;
/// other topics are ignored. Klaviyo has no email-change topic.
pub fn parse_webhook(body: &[u8]) -> Result<Vec<EspEvent>, ParseError> {
    let value = ParseError::json(body)?;
    let items = value
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| ParseError("the delivery has no `data` list".into()))?;
    items
        .iter()
        .map(|item| {
            let topic = item
                .get("topic")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let payload = item.get("payload").unwrap_or(&Value::Null);
            Ok(match topic {
                "event:klaviyo.subscribed_to_email_marketing"
                | "event:klaviyo.subscribed_to_list" => EspEvent::Subscribed {
                    attribution: Default::default(),
                    person: profile_of(payload)?,
                    created_at: None,
                },
                "event:klaviyo.unsubscribed_from_email_marketing"
                | "event:klaviyo.manually_suppressed_from_email_marketing" => {
                    EspEvent::Unsubscribed {
                        email: profile_of(payload)?.email,
                    }
                }
                other => EspEvent::Ignored {
                    event_type: other.to_string(),
                },
            })
        })
        .collect()
}

impl OutboundEsp for Klaviyo {
    fn outbound_problem(&self) -> Option<String> {
        self.config.api_key.is_none().then(|| {
            "ESP_API_KEY is not set: Klaviyo profile properties are queued, and written once it \
             holds a private API key"
                .into()
        })
    }

    fn field_update(&self, update: &FieldUpdate<'_>, _: &MessageId) -> OutboundRequest {
        // Omitted properties stay as they are; a value not known yet is left out, not cleared
        // (Klaviyo would clear a property sent as null).
        let properties: Map<String, Value> = update
            .fields
            .iter()
            .filter(|(_, value)| !value.is_null())
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        let id = update
            .esp_id
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        self.request(
            "PATCH",
            &format!("profiles/{}", crate::encode_component(&id)),
            json!({"data": {"type": "profile", "id": id,
                "attributes": {"properties": properties}}}),
        )
    }

    fn read_answer(&self, answer: &Answer<'_>) -> WriteVerdict {
        usual_verdict(answer)
    }

    fn id_lookup(&self, email: &str) -> Option<OutboundRequest> {
        // Finds the profile by email, or creates it: 200 or 201 with its id.
        Some(self.request(
            "POST",
            "profile-import",
            json!({"data": {"type": "profile", "attributes": {"email": email}}}),
        ))
    }

    fn read_id(&self, answer: &Answer<'_>) -> Option<Value> {
        if !(200..300).contains(&answer.status) {
            return None;
        }
        let body: Value = serde_json::from_str(answer.body).ok()?;
        body.pointer("/data/id")
            .filter(|id| id.is_string())
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "klaviyo-secret-0123456789";

    fn delivery(topic: &str) -> String {
        json!({"data": [{"external_id": "evt_1", "topic": topic, "payload": {
            "data": {"type": "event", "id": "evt_1", "attributes": {"datetime": "2026-04-13T22:50:12+00:00"},
                "relationships": {"profile": {"data": {"type": "profile", "id": "01GDDKASAP8TKDDA2GRZDSVP4H"}}}},
            "included": [{"type": "profile", "id": "01GDDKASAP8TKDDA2GRZDSVP4H",
                "attributes": {"email": "Sarah.Mason@klaviyo-demo.com", "first_name": "Sarah"}}]}}],
            "meta": {"klaviyo_account_id": "acc", "klaviyo_webhook_id": "01JWEBHOOK",
                "timestamp": "2026-04-13T22:50:12.101159+00:00"}})
        .to_string()
    }

    fn signed(body: &str, timestamp: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        mac.update(timestamp.as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn deliveries_are_signed_timed_and_addressed_to_this_webhook() {
        let body = delivery("event:klaviyo.subscribed_to_email_marketing");
        let timestamp = "Tue, 14 Apr 2026 03:50:12 GMT";
        let now = httpdate::parse_http_date(timestamp).unwrap() + Duration::from_secs(30);
        let signature = signed(&body, timestamp);
        let check = |body: &str, signature: &str, webhook: &str, now: SystemTime| {
            let headers: Vec<(&str, &[u8])> = vec![
                ("Klaviyo-Signature", signature.as_bytes()),
                ("Klaviyo-Timestamp", timestamp.as_bytes()),
                ("Klaviyo-Webhook-Id", webhook.as_bytes()),
            ];
            verify_delivery(
                &InboundRequest {
                    query: "",
                    headers: &headers,
                    body: body.as_bytes(),
                },
                SECRET,
                now,
            )
        };
        assert_eq!(check(&body, &signature, "01JWEBHOOK", now), Ok(()));
        assert_eq!(
            check(&body, &signature, "01JOTHER", now),
            Err(VerifyError::Wrong)
        );
        assert_eq!(
            check(
                &body.replace("Sarah", "Sara"),
                &signature,
                "01JWEBHOOK",
                now
            ),
            Err(VerifyError::Wrong)
        );
        assert_eq!(
            check(
                &body,
                &signature,
                "01JWEBHOOK",
                now + Duration::from_secs(600)
            ),
            Err(VerifyError::Wrong)
        );
    }

    #[test]
    fn topics_become_events() {
        let events =
            parse_webhook(delivery("event:klaviyo.subscribed_to_email_marketing").as_bytes())
                .unwrap();
        match &events[0] {
            EspEvent::Subscribed { person, .. } => {
                assert_eq!(person.email.as_str(), "sarah.mason@klaviyo-demo.com");
                assert_eq!(person.esp_id, Some(json!("01GDDKASAP8TKDDA2GRZDSVP4H")));
                assert_eq!(person.first_name.as_deref(), Some("Sarah"));
            }
            other => panic!("{other:?}"),
        }
        let gone =
            parse_webhook(delivery("event:klaviyo.unsubscribed_from_email_marketing").as_bytes())
                .unwrap();
        assert!(matches!(gone[0], EspEvent::Unsubscribed { .. }));
        let other = parse_webhook(delivery("event:klaviyo.opened_email").as_bytes()).unwrap();
        assert!(matches!(other[0], EspEvent::Ignored { .. }));
        assert!(parse_webhook(b"{}").is_err());
    }

    #[test]
    fn profiles_are_found_by_import_then_patched() {
        let esp = Klaviyo::new(EspConfig {
            api_url: Some("http://klaviyo.test/api".into()),
            api_key: Some("pk_test".into()),
            ..EspConfig::default()
        });
        let lookup = esp.id_lookup("sarah.mason@klaviyo-demo.com").unwrap();
        assert_eq!(
            (lookup.method, lookup.url.as_str()),
            ("POST", "http://klaviyo.test/api/profile-import")
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&lookup.body).unwrap(),
            json!({"data": {"type": "profile", "attributes": {"email": "sarah.mason@klaviyo-demo.com"}}})
        );
        let created = Answer {
            status: 201,
            retry_after: None,
            body: r#"{"data": {"type": "profile", "id": "01GDD", "attributes": {}}}"#,
        };
        assert_eq!(esp.read_id(&created), Some(json!("01GDD")));
        let fields = vec![
            ("RH_CODE".to_string(), json!("ab12cd")),
            ("RH_TOTREF".to_string(), json!(3)),
            ("RH_COUPON".to_string(), Value::Null),
        ];
        let id = json!("01GDD");
        let request = esp.field_update(
            &FieldUpdate {
                email: "sarah.mason@klaviyo-demo.com",
                esp_id: Some(&id),
                fields: &fields,
            },
            &MessageId {
                id: "m".into(),
                timestamp: 0,
            },
        );
        assert_eq!(
            (request.method, request.url.as_str()),
            ("PATCH", "http://klaviyo.test/api/profiles/01GDD")
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&request.body).unwrap(),
            json!({"data": {"type": "profile", "id": "01GDD",
                "attributes": {"properties": {"RH_CODE": "ab12cd", "RH_TOTREF": 3}}}})
        );
        assert!(request
            .headers
            .contains(&("revision".into(), REVISION.into())));
        assert!(request
            .headers
            .contains(&("Authorization".into(), "Klaviyo-API-Key pk_test".into())));
    }
}
