//! Kit (ConvertKit API v4). In: webhook endpoints' deliveries (`{"events": [...]}`), signed with
//! `X-Kit-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">` (several `v1` during a secret's
//! rotation, the timestamp within 5 minutes); legacy webhooks, unsigned, with `?token=` and the
//! event named in the URL (`&event=subscriber_activate`). Out: `PUT /v4/subscribers/{id}` with
//! `fields` (lower-case keys, text values); the id is looked up by email when the bridge does not
//! know it yet (`GET /v4/subscribers?email_address=`), and kept.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;

use crate::custom::CustomEsp;
use crate::outbound::{contacts_at, ContactPage};
use crate::outbound::{
    usual_verdict, Answer, EspConfig, FieldUpdate, MessageId, OutboundEsp, OutboundRequest,
    WriteVerdict,
};
use crate::{
    secrets_match, Email, EspEvent, InboundEsp, InboundRequest, ParseError, Person, VerifyError,
};

/// Kit's API base.
pub const DEFAULT_API_URL: &str = "https://api.kit.com";

/// How far a signature's timestamp may be from now, as Kit suggests.
const TOLERANCE_SECONDS: u64 = 300;

/// The `ESP_RATE_LIMIT` used unless one is set. Kit: 120 requests per rolling minute per API key.
pub const DEFAULT_RATE_LIMIT: &str = "120/60s";

/// The Kit adapter.
#[derive(Debug, Default, Clone)]
pub struct Kit {
    config: EspConfig,
}

impl Kit {
    /// The adapter, reaching Kit as `config` says.
    pub fn new(config: EspConfig) -> Self {
        Kit { config }
    }

    fn base(&self) -> &str {
        self.config
            .api_url
            .as_deref()
            .unwrap_or(DEFAULT_API_URL)
            .trim_end_matches('/')
    }

    fn headers(&self) -> Vec<(String, String)> {
        vec![
            ("Content-Type".into(), "application/json".into()),
            ("X-Kit-Api-Key".into(), self.config.key().to_string()),
        ]
    }
}

/// Checks `X-Kit-Signature` as of `now` (unix seconds).
pub fn verify_signature(
    header: &[u8],
    body: &[u8],
    secret: &str,
    now: i64,
) -> Result<(), VerifyError> {
    let header = std::str::from_utf8(header).map_err(|_| VerifyError::Wrong)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.trim().parse::<i64>().ok(),
            Some(("v1", v)) => signatures.push(v.trim().to_ascii_lowercase()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(VerifyError::Wrong)?;
    // abs_diff: the timestamp is unauthenticated input, so `now - timestamp` could overflow.
    if now.abs_diff(timestamp) > TOLERANCE_SECONDS {
        return Err(VerifyError::Wrong);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // Any of the signatures may be the current secret's (several during a rotation).
    if signatures
        .iter()
        .any(|s| secrets_match(s.as_bytes(), expected.as_bytes()))
    {
        Ok(())
    } else {
        Err(VerifyError::Wrong)
    }
}

impl InboundEsp for Kit {
    fn credentials_hint(&self) -> &'static str {
        "Kit signs its webhooks in `X-Kit-Signature`: set ESP_WEBHOOK_SECRET to the webhook's signing secret"
    }

    fn credentials(&self) -> &'static [crate::WebhookCredential] {
        use crate::WebhookCredential;
        &[WebhookCredential::SignatureHeader("X-Kit-Signature")]
    }

    fn name(&self) -> &'static str {
        "kit"
    }

    fn verify(
        &self,
        request: &InboundRequest<'_>,
        secret: Option<&str>,
    ) -> Result<(), VerifyError> {
        let secret = secret.ok_or(VerifyError::NotConfigured)?;
        match request.header("x-kit-signature") {
            Some(header) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                verify_signature(header, request.body, secret, now)
            }
            // Legacy webhooks are unsigned: the secret travels in the URL.
            None => CustomEsp::default().verify(request, Some(secret)),
        }
    }

    fn parse(&self, request: &InboundRequest<'_>) -> Result<Vec<EspEvent>, ParseError> {
        let mut events = parse_webhook(request.body, request.query_param("event").as_deref())?;
        if self.config.attribution_fields.is_empty() {
            return Ok(events);
        }
        // The subscriber's custom fields come in its `fields`, keyed by the field's key.
        let value = ParseError::json(request.body)?;
        let subscribers: Vec<&Value> = match value.get("events").and_then(Value::as_array) {
            Some(list) => list.iter().map(|e| &e["data"]["subscriber"]).collect(),
            None => vec![&value["subscriber"]],
        };
        for (event, subscriber) in events.iter_mut().zip(subscribers) {
            if let EspEvent::Subscribed { attribution, .. } = event {
                *attribution = self.config.attribution(|name| {
                    subscriber["fields"][name]
                        .as_str()
                        .or_else(|| subscriber["fields"][name.to_lowercase()].as_str())
                });
            }
        }
        Ok(events)
    }
}

/// Reads a Kit delivery: the events of a webhook endpoint, or a legacy webhook's subscriber
/// with the event its URL names. `subscriber.created` (once active) and `subscriber.activated`
/// are signups; `unsubscribed`, `bounced` and `complained` departures; the rest is ignored.
pub fn parse_webhook(body: &[u8], legacy_event: Option<&str>) -> Result<Vec<EspEvent>, ParseError> {
    let value = ParseError::json(body)?;
    if let Some(events) = value.get("events") {
        let events = events
            .as_array()
            .ok_or_else(|| ParseError("`events` must be a list".into()))?;
        return events
            .iter()
            .map(|event| {
                let kind = event
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let subscriber = event
                    .get("data")
                    .and_then(|d| d.get("subscriber"))
                    .unwrap_or(&Value::Null);
                let kind = match kind {
                    "subscriber.created" | "subscriber.activated" => "subscribe",
                    "subscriber.unsubscribed" | "subscriber.bounced" | "subscriber.complained" => {
                        "unsubscribe"
                    }
                    other => other,
                };
                to_event(kind, subscriber)
            })
            .collect();
    }
    let subscriber = value
        .get("subscriber")
        .ok_or_else(|| ParseError("the body has neither `events` nor `subscriber`".into()))?;
    let kind = match legacy_event.map(|e| e.trim_start_matches("subscriber.")) {
        Some("subscriber_activate") => "subscribe",
        Some("subscriber_unsubscribe") => "unsubscribe",
        Some(other) => other,
        None => {
            return Err(ParseError(
                "a legacy Kit webhook needs its event in the URL: &event=subscriber_activate"
                    .into(),
            ))
        }
    };
    to_event(kind, subscriber).map(|event| vec![event])
}

fn to_event(kind: &str, subscriber: &Value) -> Result<EspEvent, ParseError> {
    let email = || -> Result<Email, ParseError> {
        let raw = subscriber
            .get("email_address")
            .and_then(Value::as_str)
            .ok_or_else(|| ParseError("the subscriber has no `email_address`".into()))?;
        Email::parse(raw).map_err(|_| ParseError("`email_address` is not a valid address".into()))
    };
    let state = subscriber.get("state").and_then(Value::as_str);
    Ok(match kind {
        // An unconfirmed signup (state `inactive`) waits for `subscriber.activated`.
        "subscribe" if state != Some("inactive") => EspEvent::Subscribed {
            attribution: Default::default(),
            person: Person {
                email: email()?,
                esp_id: subscriber
                    .get("id")
                    .filter(|id| id.is_number() || id.is_string())
                    .cloned(),
                first_name: subscriber
                    .get("first_name")
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
                name: None,
            },
            created_at: None,
        },
        "unsubscribe" => EspEvent::Unsubscribed { email: email()? },
        other => EspEvent::Ignored {
            event_type: other.to_string(),
        },
    })
}

impl OutboundEsp for Kit {
    fn outbound_problem(&self) -> Option<String> {
        self.config.api_key.is_none().then(|| {
            "ESP_API_KEY is not set: Kit fields are queued, and written once it holds an API key"
                .into()
        })
    }

    fn field_update(&self, update: &FieldUpdate<'_>, _: &MessageId) -> OutboundRequest {
        // Kit's custom-field values are text, keyed by the field's lower-case key; a value not
        // known yet is left out rather than cleared.
        let fields: Map<String, Value> = update
            .fields
            .iter()
            .filter_map(|(name, value)| {
                let text = match value {
                    Value::Null => return None,
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                Some((name.to_lowercase(), Value::String(text)))
            })
            .collect();
        let id = match update.esp_id {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        OutboundRequest {
            method: "PUT",
            url: format!("{}/v4/subscribers/{id}", self.base()),
            headers: self.headers(),
            body: json!({"email_address": update.email, "fields": fields})
                .to_string()
                .into_bytes(),
        }
    }

    fn read_answer(&self, answer: &Answer<'_>) -> WriteVerdict {
        usual_verdict(answer)
    }

    fn id_lookup(&self, email: &str) -> Option<OutboundRequest> {
        let encoded = crate::encode_component(email);
        Some(OutboundRequest {
            method: "GET",
            url: format!("{}/v4/subscribers?email_address={encoded}", self.base()),
            headers: self.headers(),
            body: Vec::new(),
        })
    }

    /// `GET /v4/subscribers?per_page=1000&after=C`, paged by Kit's cursor.
    fn list_contacts(&self, cursor: Option<&str>) -> Option<OutboundRequest> {
        let mut url = format!(
            "{}/v4/subscribers?per_page={}",
            self.base(),
            crate::outbound::CONTACTS_PER_PAGE
        );
        if let Some(cursor) = cursor {
            url.push_str(&format!("&after={}", crate::encode_component(cursor)));
        }
        Some(OutboundRequest {
            method: "GET",
            url,
            headers: self.headers(),
            body: Vec::new(),
        })
    }

    fn read_contacts(
        &self,
        answer: &Answer<'_>,
        _cursor: Option<&str>,
    ) -> Result<ContactPage, String> {
        let body: Value =
            serde_json::from_str(answer.body).map_err(|e| format!("not JSON: {e}"))?;
        let contacts = contacts_at(&body, "subscribers", "email_address", "fields")?;
        let pagination = &body["pagination"];
        let next = (pagination["has_next_page"] == true)
            .then(|| pagination["end_cursor"].as_str().map(str::to_string))
            .flatten();
        Ok(ContactPage { contacts, next })
    }

    fn field_key(&self, name: &str) -> String {
        name.to_lowercase()
    }

    fn list_fields(&self) -> Option<OutboundRequest> {
        Some(OutboundRequest {
            method: "GET",
            url: format!("{}/v4/custom_fields?per_page=1000", self.base()),
            headers: self.headers(),
            body: Vec::new(),
        })
    }

    fn read_fields(&self, answer: &Answer<'_>) -> Result<Vec<String>, String> {
        crate::outbound::strings_at(answer.body, &["custom_fields", "*", "key"])
    }

    fn create_field(&self, name: &str, _numeric: bool) -> Option<OutboundRequest> {
        // Kit keys a field by its label, lower-cased: the label is the key wanted.
        Some(OutboundRequest {
            method: "POST",
            url: format!("{}/v4/custom_fields", self.base()),
            headers: self.headers(),
            body: json!({ "label": name.to_lowercase() })
                .to_string()
                .into_bytes(),
        })
    }

    fn read_id(&self, answer: &Answer<'_>) -> Option<Value> {
        if !(200..300).contains(&answer.status) {
            return None;
        }
        let body: Value = serde_json::from_str(answer.body).ok()?;
        body.get("subscribers")?
            .as_array()?
            .first()?
            .get("id")
            .filter(|id| id.is_number() || id.is_string())
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR_BODY: &[u8] = br#"{"event":"subscriber.created","id":"1"}"#;
    const VECTOR_SECRET: &str = "whsec_test_secret_123456";
    const VECTOR_HEADER: &[u8] =
        b"t=1753797130,v1=96d89d077792395427c72a8c8a7cf169e1d2135809b5a57c7b74569817c12164";

    #[test]
    fn an_extreme_timestamp_is_refused_without_overflowing() {
        for t in [i64::MIN, i64::MAX] {
            let header = format!("t={t},v1=00");
            assert_eq!(
                verify_signature(header.as_bytes(), b"{}", "s", 1_700_000_000),
                Err(VerifyError::Wrong)
            );
        }
        assert_eq!(
            verify_signature(b"t=1,v1=00", b"{}", "s", i64::MIN),
            Err(VerifyError::Wrong)
        );
    }

    #[test]
    fn signatures_follow_the_test_vector_with_a_tolerance_and_rotation() {
        let at = 1753797130;
        assert_eq!(
            verify_signature(VECTOR_HEADER, VECTOR_BODY, VECTOR_SECRET, at + 60),
            Ok(())
        );
        assert_eq!(
            verify_signature(VECTOR_HEADER, VECTOR_BODY, VECTOR_SECRET, at + 301),
            Err(VerifyError::Wrong),
            "an old delivery is refused"
        );
        assert_eq!(
            verify_signature(VECTOR_HEADER, b"{}", VECTOR_SECRET, at),
            Err(VerifyError::Wrong)
        );
        // During a rotation the header carries one signature per secret.
        let rotating = b"t=1753797130,v1=00ff,v1=96d89d077792395427c72a8c8a7cf169e1d2135809b5a57c7b74569817c12164";
        assert_eq!(
            verify_signature(rotating, VECTOR_BODY, VECTOR_SECRET, at),
            Ok(())
        );
        assert_eq!(
            verify_signature(b"v1=abc", VECTOR_BODY, VECTOR_SECRET, at),
            Err(VerifyError::Wrong)
        );
    }

    #[test]
    fn deliveries_and_legacy_webhooks_are_understood() {
        let delivery = br#"{"delivery_id": 123456, "events": [{"id": "9c2e", "type": "subscriber.created",
            "created": "2026-07-29T14:32:10Z", "data": {"subscriber": {"id": 987654,
            "first_name": "Ada", "email_address": "ada@example.com", "state": "active",
            "created_at": "2026-07-29T14:32:10Z", "fields": {"company": "Kit"}}}},
            {"type": "subscriber.unsubscribed", "data": {"subscriber": {"id": 1, "email_address": "b@example.com"}}},
            {"type": "subscriber.tag_added", "data": {"subscriber": {"id": 1, "email_address": "b@example.com"}}}]}"#;
        let events = parse_webhook(delivery, None).unwrap();
        let EspEvent::Subscribed { person, .. } = &events[0] else {
            panic!("not a signup")
        };
        assert_eq!(person.esp_id, Some(json!(987654)));
        assert_eq!(person.first_name.as_deref(), Some("Ada"));
        assert!(matches!(events[1], EspEvent::Unsubscribed { .. }));
        assert!(matches!(events[2], EspEvent::Ignored { .. }));
        let legacy =
            br#"{"subscriber": {"id": 5, "email_address": "c@example.com", "state": "active"}}"#;
        assert!(matches!(
            parse_webhook(legacy, Some("subscriber_activate")).unwrap()[0],
            EspEvent::Subscribed { .. }
        ));
        assert!(parse_webhook(legacy, None).is_err());
    }

    #[test]
    fn writes_go_by_id_with_text_fields_and_the_id_is_found_by_email() {
        let kit = Kit::new(EspConfig {
            api_key: Some("kit-key".into()),
            ..EspConfig::default()
        });
        let fields = vec![
            ("RH_CODE".to_string(), json!("ab12cd")),
            ("RH_TOTREF".to_string(), json!(3)),
            ("RH_COUPON".to_string(), Value::Null),
        ];
        let id = json!(987654);
        let request = kit.field_update(
            &FieldUpdate {
                email: "ada@example.com",
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
            ("PUT", "https://api.kit.com/v4/subscribers/987654")
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&request.body).unwrap(),
            json!({"email_address": "ada@example.com", "fields": {"rh_code": "ab12cd", "rh_totref": "3"}})
        );
        assert!(request
            .headers
            .contains(&("X-Kit-Api-Key".into(), "kit-key".into())));
        let lookup = kit.id_lookup("a+b@example.com").unwrap();
        assert_eq!(
            lookup.url,
            "https://api.kit.com/v4/subscribers?email_address=a%2Bb%40example.com"
        );
        let found = r#"{"subscribers": [{"id": 200, "email_address": "a+b@example.com"}]}"#;
        let answer = |status, body| Answer {
            status,
            retry_after: None,
            body,
        };
        assert_eq!(kit.read_id(&answer(200, found)), Some(json!(200)));
        assert_eq!(kit.read_id(&answer(200, r#"{"subscribers": []}"#)), None);
        assert_eq!(kit.read_id(&answer(401, found)), None);
    }
}
