//! MailerLite (the new API, `connect.mailerlite.com`). In: webhooks, one event or a batch
//! (`{"events": [...]}`), signed with `Signature` = hex HMAC-SHA256 of the raw body keyed with the
//! webhook's secret. Out: the subscriber's `fields` (lower-case keys), `PUT /subscribers/{id}`
//! when the bridge knows MailerLite's id, else the non-destructive upsert by email
//! `POST /subscribers`; `Authorization: Bearer`.

use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;

use crate::outbound::{contacts_at, ContactPage};
use crate::outbound::{
    usual_verdict, Answer, EspConfig, FieldUpdate, MessageId, OutboundEsp, OutboundRequest,
    WriteVerdict,
};
use crate::{Email, EspEvent, InboundEsp, InboundRequest, ParseError, Person, VerifyError};

/// MailerLite's API base.
pub const DEFAULT_API_URL: &str = "https://connect.mailerlite.com/api";

/// The `ESP_RATE_LIMIT` used unless one is set. MailerLite: 120 requests a minute per account.
pub const DEFAULT_RATE_LIMIT: &str = "120/60s";

/// The MailerLite adapter.
#[derive(Debug, Default, Clone)]
pub struct MailerLite {
    config: EspConfig,
}

impl MailerLite {
    /// The adapter, reaching MailerLite as `config` says.
    pub fn new(config: EspConfig) -> Self {
        MailerLite { config }
    }
}

impl InboundEsp for MailerLite {
    fn credentials_hint(&self) -> &'static str {
        "MailerLite signs its webhooks in `Signature`: set ESP_WEBHOOK_SECRET to the webhook's signing secret"
    }

    fn credentials(&self) -> &'static [crate::WebhookCredential] {
        use crate::WebhookCredential;
        &[WebhookCredential::SignatureHeader("Signature")]
    }

    fn name(&self) -> &'static str {
        "mailerlite"
    }

    fn verify(
        &self,
        request: &InboundRequest<'_>,
        secret: Option<&str>,
    ) -> Result<(), VerifyError> {
        let secret = secret.ok_or(VerifyError::NotConfigured)?;
        let presented = request.header("signature").ok_or(VerifyError::Missing)?;
        let presented = std::str::from_utf8(presented)
            .ok()
            .and_then(crate::from_hex)
            .ok_or(VerifyError::Wrong)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
        mac.update(request.body);
        // verify_slice compares in constant time.
        mac.verify_slice(&presented).map_err(|_| VerifyError::Wrong)
    }

    fn parse(&self, request: &InboundRequest<'_>) -> Result<Vec<EspEvent>, ParseError> {
        let mut events = parse_webhook(request.body)?;
        if self.config.attribution_fields.is_empty() {
            return Ok(events);
        }
        // The subscriber's custom fields come in its `fields`, one subscriber per event.
        let value = ParseError::json(request.body)?;
        let subscribers: Vec<&Value> = match value.get("events") {
            Some(Value::Array(list)) => list.iter().map(|e| &e["subscriber"]).collect(),
            _ => vec![&value],
        };
        for (event, subscriber) in events.iter_mut().zip(subscribers) {
            if let EspEvent::Subscribed { attribution, .. } = event {
                *attribution = self
                    .config
                    .attribution(|name| subscriber["fields"][name].as_str());
            }
        }
        Ok(events)
    }
}

/// Reads a MailerLite webhook: one event (the subscriber's fields with `event` beside them) or
/// a batch. `subscriber.created` (once active: an unconfirmed signup waits for
/// `subscriber.active`) is a signup; `subscriber.updated` an update; `unsubscribed`, `deleted`,
/// `bounced` and `spam_reported` a departure; other events are ignored.
pub fn parse_webhook(body: &[u8]) -> Result<Vec<EspEvent>, ParseError> {
    let value = ParseError::json(body)?;
    match value.get("events") {
        Some(Value::Array(events)) => events
            .iter()
            .map(|event| {
                let kind = event.get("type").and_then(Value::as_str);
                let subscriber = event.get("subscriber").unwrap_or(&Value::Null);
                parse_event(kind, subscriber)
            })
            .collect(),
        Some(_) => Err(ParseError("`events` must be a list".into())),
        None => parse_event(value.get("event").and_then(Value::as_str), &value).map(|e| vec![e]),
    }
}

fn parse_event(kind: Option<&str>, subscriber: &Value) -> Result<EspEvent, ParseError> {
    let kind = kind
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ParseError("the webhook has no event type".into()))?;
    let email = || -> Result<Email, ParseError> {
        let raw = subscriber
            .get("email")
            .and_then(Value::as_str)
            .ok_or_else(|| ParseError("the subscriber has no `email`".into()))?;
        Email::parse(raw).map_err(|_| ParseError("`email` is not a valid address".into()))
    };
    let text = |value: Option<&Value>| {
        value
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let person = || -> Result<Person, ParseError> {
        let fields = subscriber.get("fields");
        let first = text(fields.and_then(|f| f.get("name")));
        let last = text(fields.and_then(|f| f.get("last_name")));
        Ok(Person {
            email: email()?,
            esp_id: subscriber
                .get("id")
                .filter(|id| id.is_string() || id.is_number())
                .cloned(),
            name: match (&first, &last) {
                (Some(first), Some(last)) => Some(format!("{first} {last}")),
                _ => None,
            },
            first_name: first,
        })
    };
    let status = subscriber.get("status").and_then(Value::as_str);
    Ok(match kind {
        "subscriber.created" if status != Some("unconfirmed") => EspEvent::Subscribed {
            attribution: Default::default(),
            person: person()?,
            created_at: None,
        },
        "subscriber.active" => EspEvent::Subscribed {
            attribution: Default::default(),
            person: person()?,
            created_at: None,
        },
        "subscriber.updated" => EspEvent::Updated {
            person: person()?,
            previous_email: None,
            updated_at: None,
        },
        "subscriber.unsubscribed"
        | "subscriber.deleted"
        | "subscriber.bounced"
        | "subscriber.spam_reported" => EspEvent::Unsubscribed { email: email()? },
        other => EspEvent::Ignored {
            event_type: other.to_string(),
        },
    })
}

impl OutboundEsp for MailerLite {
    fn outbound_problem(&self) -> Option<String> {
        self.config.api_key.is_none().then(|| {
            "ESP_API_KEY is not set: MailerLite fields are queued, and written once it holds an \
             API token"
                .into()
        })
    }

    fn field_update(&self, update: &FieldUpdate<'_>, _: &MessageId) -> OutboundRequest {
        let (method, path, body) = write_of(update);
        self.call(method, &path, body.to_string().into_bytes())
    }

    fn max_batch(&self) -> usize {
        50
    }

    fn batch_update(&self, updates: &[FieldUpdate<'_>]) -> Option<OutboundRequest> {
        // Writes by id, mostly: a batch of upserts only would count as an import for MailerLite
        // (5 a minute).
        let requests: Vec<Value> = updates
            .iter()
            .map(|update| {
                let (method, path, body) = write_of(update);
                json!({"method": method, "path": format!("api/{path}"), "body": body})
            })
            .collect();
        let body = json!({ "requests": requests });
        Some(self.call("POST", "batch", body.to_string().into_bytes()))
    }

    fn read_batch(&self, answer: &Answer<'_>, emails: &[&str]) -> Vec<Result<(), String>> {
        let responses = serde_json::from_str::<Value>(answer.body)
            .ok()
            .and_then(|v| v["responses"].as_array().cloned())
            .unwrap_or_default();
        (0..emails.len())
            .map(|i| match responses.get(i) {
                Some(r) if r["code"].as_u64().is_some_and(|c| (200..300).contains(&c)) => Ok(()),
                Some(r) => Err(format!(
                    "HTTP {}: {}",
                    r["code"],
                    crate::outbound::error_text(&r["body"].to_string())
                )),
                None => Err("the batch answer has no result for it".into()),
            })
            .collect()
    }

    fn read_answer(&self, answer: &Answer<'_>) -> WriteVerdict {
        usual_verdict(answer)
    }

    /// `GET /subscribers?limit=1000&cursor=C`, paged by MailerLite's cursor.
    fn list_contacts(&self, cursor: Option<&str>) -> Option<OutboundRequest> {
        let mut path = format!("subscribers?limit={}", crate::outbound::CONTACTS_PER_PAGE);
        if let Some(cursor) = cursor {
            path.push_str(&format!("&cursor={}", crate::encode_component(cursor)));
        }
        Some(self.call("GET", &path, Vec::new()))
    }

    fn read_contacts(
        &self,
        answer: &Answer<'_>,
        _cursor: Option<&str>,
    ) -> Result<ContactPage, String> {
        let body: Value =
            serde_json::from_str(answer.body).map_err(|e| format!("not JSON: {e}"))?;
        let contacts = contacts_at(&body, "data", "email", "fields")?;
        let next = body["meta"]["next_cursor"]
            .as_str()
            .filter(|c| !c.is_empty())
            .map(str::to_string);
        Ok(ContactPage { contacts, next })
    }

    fn field_key(&self, name: &str) -> String {
        name.to_lowercase()
    }

    fn list_fields(&self) -> Option<OutboundRequest> {
        Some(self.call("GET", "fields?limit=100", Vec::new()))
    }

    fn read_fields(&self, answer: &Answer<'_>) -> Result<Vec<String>, String> {
        crate::outbound::strings_at(answer.body, &["data", "*", "key"])
    }

    fn create_field(&self, name: &str, numeric: bool) -> Option<OutboundRequest> {
        // MailerLite derives the key from the name; a lower-case name keeps it as written
        // (upper-case letters would each be split off: "ZIP" becomes `z_i_p`).
        let body = json!({"name": name.to_lowercase(),
            "type": if numeric { "number" } else { "text" }});
        Some(self.call("POST", "fields", body.to_string().into_bytes()))
    }
}

/// The write of one update, as method, path under the API base and body: by MailerLite's id
/// when known, else the upsert by email. Field keys are lower-case slugs; a value not known yet
/// is left out, not cleared.
fn write_of(update: &FieldUpdate<'_>) -> (&'static str, String, Value) {
    let fields: Map<String, Value> = update
        .fields
        .iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(name, value)| (name.to_lowercase(), value.clone()))
        .collect();
    let id = update.esp_id.and_then(|id| match id {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    });
    match id {
        Some(id) => (
            "PUT",
            format!("subscribers/{id}"),
            json!({ "fields": fields }),
        ),
        None => (
            "POST",
            "subscribers".into(),
            json!({ "email": update.email, "fields": fields }),
        ),
    }
}

impl MailerLite {
    fn call(&self, method: &'static str, rest: &str, body: Vec<u8>) -> OutboundRequest {
        let base = self
            .config
            .api_url
            .as_deref()
            .unwrap_or(DEFAULT_API_URL)
            .trim_end_matches('/');
        OutboundRequest {
            method,
            url: format!("{base}/{rest}"),
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("Accept".into(), "application/json".into()),
                (
                    "Authorization".into(),
                    format!("Bearer {}", self.config.key()),
                ),
            ],
            body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(headers: &'a [(&'a str, &'a [u8])], body: &'a [u8]) -> InboundRequest<'a> {
        InboundRequest {
            query: "",
            headers,
            body,
        }
    }

    /// The listing MailerLite documents (`GET /api/subscribers`, cursor-paginated): `data` with
    /// each subscriber's `email` and `fields`, `meta.next_cursor` (null on the last page).
    #[test]
    fn contacts_are_listed_by_cursor() {
        let ml = MailerLite::new(EspConfig {
            api_key: Some("ml-token".into()),
            api_url: Some("http://127.0.0.1:9/api".into()),
            ..EspConfig::default()
        });
        let first = ml.list_contacts(None).unwrap();
        assert_eq!(first.url, "http://127.0.0.1:9/api/subscribers?limit=1000");
        let next = ml.list_contacts(Some("eyJpZCI6MX0=")).unwrap();
        assert_eq!(
            next.url,
            "http://127.0.0.1:9/api/subscribers?limit=1000&cursor=eyJpZCI6MX0%3D"
        );
        let body = json!({"data": [{"id": "31897397363737859", "email": "dummy@example.com",
            "status": "active", "fields": {"name": "Dummy", "rh_code": "ab12", "rh_totref": 3}}],
            "links": {"first": null, "last": null, "prev": null,
                "next": "https://connect.mailerlite.com/api/subscribers?cursor=eyJpZCI6MX0"},
            "meta": {"path": "https://connect.mailerlite.com/api/subscribers", "per_page": 1000,
                "next_cursor": "eyJpZCI6MX0", "prev_cursor": null}})
        .to_string();
        let page = ml
            .read_contacts(
                &Answer {
                    status: 200,
                    retry_after: None,
                    body: &body,
                },
                None,
            )
            .unwrap();
        assert_eq!(page.next.as_deref(), Some("eyJpZCI6MX0"));
        assert_eq!(page.contacts[0].0, "dummy@example.com");
        assert_eq!(page.contacts[0].1["rh_totref"], 3);
        let last = json!({"data": [], "meta": {"next_cursor": null}}).to_string();
        let page = ml
            .read_contacts(
                &Answer {
                    status: 200,
                    retry_after: None,
                    body: &last,
                },
                None,
            )
            .unwrap();
        assert_eq!(page, ContactPage::default());
        let bad = json!({"data": [{"fields": {}}]}).to_string();
        assert!(ml
            .read_contacts(
                &Answer {
                    status: 200,
                    retry_after: None,
                    body: &bad
                },
                None
            )
            .is_err());
    }

    #[test]
    fn signatures_are_checked_with_the_test_vector() {
        let body = br#"{"event":"subscriber.created","id":"1"}"#;
        let secret = Some("whsec_test_secret_123456");
        let good: &[u8] = b"732f26e8683605f3e1bdc0d6cbe9dca89e648cef563973a4fb7a8c885739d861";
        let ml = MailerLite::default();
        assert_eq!(
            ml.verify(&request(&[("Signature", good)], body), secret),
            Ok(())
        );
        let tampered = br#"{"event":"subscriber.created","id":"2"}"#;
        assert_eq!(
            ml.verify(&request(&[("Signature", good)], tampered), secret),
            Err(VerifyError::Wrong)
        );
        assert_eq!(
            ml.verify(&request(&[("Signature", b"zz")], body), secret),
            Err(VerifyError::Wrong)
        );
        assert_eq!(
            ml.verify(&request(&[], body), secret),
            Err(VerifyError::Missing)
        );
        assert_eq!(
            ml.verify(&request(&[("Signature", good)], body), None),
            Err(VerifyError::NotConfigured)
        );
    }

    #[test]
    fn single_and_batched_webhooks_are_understood() {
        let created = br#"{"id": "100000000000000000", "email": "John.Doe@example.com",
            "status": "active", "source": "ecommerce",
            "fields": {"name": "John", "last_name": "Doe", "company": "", "country": ""},
            "event": "subscriber.created", "account_id": 0}"#;
        let events = parse_webhook(created).unwrap();
        let EspEvent::Subscribed { person, .. } = &events[0] else {
            panic!("not a signup")
        };
        assert_eq!(person.email.as_str(), "john.doe@example.com");
        assert_eq!(person.esp_id, Some(json!("100000000000000000")));
        assert_eq!(person.name.as_deref(), Some("John Doe"));
        let batched = br#"{"events": [
            {"type": "subscriber.unsubscribed", "subscriber": {"id": "1", "email": "a@example.com", "status": "unsubscribed"}},
            {"type": "subscriber.created", "subscriber": {"id": "2", "email": "b@example.com", "status": "unconfirmed"}},
            {"type": "subscriber.active", "subscriber": {"id": "2", "email": "b@example.com", "status": "active"}}
        ], "total": 3}"#;
        let events = parse_webhook(batched).unwrap();
        assert!(matches!(events[0], EspEvent::Unsubscribed { .. }));
        assert!(
            matches!(events[1], EspEvent::Ignored { .. }),
            "unconfirmed waits"
        );
        assert!(matches!(events[2], EspEvent::Subscribed { .. }));
        assert!(parse_webhook(br#"{"email": "a@b.co"}"#).is_err());
    }

    #[test]
    fn field_updates_go_by_id_when_known_else_by_upsert() {
        let ml = MailerLite::new(EspConfig {
            api_key: Some("ml-token".into()),
            ..EspConfig::default()
        });
        let fields = vec![
            ("RH_CODE".to_string(), json!("ab12cd")),
            ("RH_TOTREF".to_string(), json!(3)),
            ("RH_COUPON".to_string(), Value::Null),
        ];
        let message = MessageId {
            id: "m".into(),
            timestamp: 0,
        };
        let id = json!("100000000000000000");
        let by_id = ml.field_update(
            &FieldUpdate {
                email: "a@example.com",
                esp_id: Some(&id),
                fields: &fields,
            },
            &message,
        );
        assert_eq!(
            (by_id.method, by_id.url.as_str()),
            (
                "PUT",
                "https://connect.mailerlite.com/api/subscribers/100000000000000000"
            )
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&by_id.body).unwrap(),
            json!({"fields": {"rh_code": "ab12cd", "rh_totref": 3}})
        );
        let upsert = ml.field_update(
            &FieldUpdate {
                email: "a@example.com",
                esp_id: None,
                fields: &fields,
            },
            &message,
        );
        assert_eq!(upsert.method, "POST");
        assert_eq!(upsert.url, "https://connect.mailerlite.com/api/subscribers");
        assert_eq!(
            serde_json::from_slice::<Value>(&upsert.body).unwrap(),
            json!({"email": "a@example.com", "fields": {"rh_code": "ab12cd", "rh_totref": 3}})
        );
        assert!(upsert
            .headers
            .contains(&("Authorization".into(), "Bearer ml-token".into())));
    }

    #[test]
    fn fields_are_listed_and_created_with_lower_case_names() {
        let ml = MailerLite::new(EspConfig {
            api_key: Some("ml-token".into()),
            ..EspConfig::default()
        });
        let list = ml.list_fields().unwrap();
        assert_eq!(
            (list.method, list.url.as_str()),
            ("GET", "https://connect.mailerlite.com/api/fields?limit=100")
        );
        let answer = Answer {
            status: 200,
            retry_after: None,
            body: r#"{"data": [{"id": "1", "name": "Referral code", "key": "rh_code", "type": "text"}]}"#,
        };
        assert_eq!(ml.read_fields(&answer).unwrap(), ["rh_code"]);
        assert_eq!(ml.field_key("RH_CODE"), "rh_code");
        let create = ml.create_field("RH_TOTREF", true).unwrap();
        assert_eq!(
            (create.method, create.url.as_str()),
            ("POST", "https://connect.mailerlite.com/api/fields")
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&create.body).unwrap(),
            json!({"name": "rh_totref", "type": "number"})
        );
    }
}
