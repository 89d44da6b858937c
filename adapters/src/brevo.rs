//! Brevo (API v3). In: marketing webhooks (JSON `event` = `list_addition`, `contact_updated`,
//! `unsubscribed`, `contact_deleted`), unsigned: the token configured on the webhook comes as
//! `Authorization: Bearer` or `?token=`. Out: `PUT {ESP_API_URL}/contacts/{url-encoded email}`
//! with the bridge's `attributes` only (Brevo changes just those), header `api-key`.

use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};

use crate::custom::CustomEsp;
use crate::outbound::ContactPage;
use crate::outbound::{
    usual_verdict, Answer, EspConfig, FieldUpdate, Headers, MessageId, OutboundEsp,
    OutboundRequest, WriteVerdict,
};
use crate::{Email, EspEvent, InboundEsp, InboundRequest, ParseError, Person, VerifyError};

/// Brevo's API base, `/v3` included.
pub const DEFAULT_API_URL: &str = "https://api.brevo.com/v3";

/// Brevo's contacts endpoints: 10 requests a second on its General plans.
pub const DEFAULT_RATE_LIMIT: &str = "10/1s";

/// The Brevo adapter.
#[derive(Debug, Default, Clone)]
pub struct Brevo {
    config: EspConfig,
}

impl Brevo {
    /// The adapter, reaching Brevo as `config` says.
    pub fn new(config: EspConfig) -> Self {
        Brevo { config }
    }
}

impl OutboundEsp for Brevo {
    fn outbound_problem(&self) -> Option<String> {
        self.config.api_key.is_none().then(|| {
            "ESP_API_KEY is not set: Brevo attributes are queued, and written once it holds an \
             API key"
                .into()
        })
    }

    fn max_batch(&self) -> usize {
        100
    }

    fn retry_after(&self, headers: &Headers<'_>, now: SystemTime) -> Option<Duration> {
        // Brevo says when its window resets instead of sending Retry-After.
        headers.retry_after(now).or_else(|| {
            headers
                .get("x-sib-ratelimit-reset")
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_secs)
        })
    }

    fn batch_update(&self, updates: &[FieldUpdate<'_>]) -> Option<OutboundRequest> {
        // `POST /contacts/batch` answers 204 for all or an error for all: a refused batch is
        // sent again contact by contact, where each answer decides.
        let contacts: Vec<Value> = updates
            .iter()
            .map(|update| json!({"email": update.email, "attributes": attributes(update)}))
            .collect();
        let body = json!({ "contacts": contacts });
        Some(self.call(
            "POST",
            "contacts/batch".into(),
            body.to_string().into_bytes(),
        ))
    }

    fn field_update(&self, update: &FieldUpdate<'_>, _: &MessageId) -> OutboundRequest {
        let attributes = attributes(update);
        let base = self.config.api_url.as_deref().unwrap_or(DEFAULT_API_URL);
        OutboundRequest {
            method: "PUT",
            url: format!(
                "{}/contacts/{}",
                base.trim_end_matches('/'),
                crate::encode_component(update.email)
            ),
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("api-key".into(), self.config.key().to_string()),
            ],
            body: json!({ "attributes": attributes }).to_string().into_bytes(),
        }
    }

    fn read_answer(&self, answer: &Answer<'_>) -> WriteVerdict {
        usual_verdict(answer)
    }

    /// `GET /contacts?limit=1000&offset=N`.
    fn list_contacts(&self, cursor: Option<&str>) -> Option<OutboundRequest> {
        let offset = cursor.unwrap_or("0");
        Some(self.call(
            "GET",
            format!(
                "contacts?limit={}&offset={offset}",
                crate::outbound::CONTACTS_PER_PAGE
            ),
            Vec::new(),
        ))
    }

    fn read_contacts(
        &self,
        answer: &Answer<'_>,
        cursor: Option<&str>,
    ) -> Result<ContactPage, String> {
        crate::outbound::offset_page(answer, cursor, ("contacts", "email", "attributes", "count"))
    }

    fn field_key(&self, name: &str) -> String {
        name.to_uppercase()
    }

    fn list_fields(&self) -> Option<OutboundRequest> {
        Some(self.call("GET", "contacts/attributes".into(), Vec::new()))
    }

    fn read_fields(&self, answer: &Answer<'_>) -> Result<Vec<String>, String> {
        crate::outbound::strings_at(answer.body, &["attributes", "*", "name"])
    }

    fn create_field(&self, name: &str, numeric: bool) -> Option<OutboundRequest> {
        let body = json!({"type": if numeric { "float" } else { "text" }});
        Some(self.call(
            "POST",
            format!(
                "contacts/attributes/normal/{}",
                crate::encode_component(&name.to_uppercase())
            ),
            body.to_string().into_bytes(),
        ))
    }
}

/// An update's attributes: names upper case; a value not known yet is left out, not cleared.
fn attributes(update: &FieldUpdate<'_>) -> Map<String, Value> {
    update
        .fields
        .iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(name, value)| (name.to_uppercase(), value.clone()))
        .collect()
}

impl Brevo {
    fn call(&self, method: &'static str, rest: String, body: Vec<u8>) -> OutboundRequest {
        let base = self.config.api_url.as_deref().unwrap_or(DEFAULT_API_URL);
        OutboundRequest {
            method,
            url: format!("{}/{rest}", base.trim_end_matches('/')),
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("api-key".into(), self.config.key().to_string()),
            ],
            body,
        }
    }
}

impl InboundEsp for Brevo {
    fn name(&self) -> &'static str {
        "brevo"
    }

    fn verify(
        &self,
        request: &InboundRequest<'_>,
        secret: Option<&str>,
    ) -> Result<(), VerifyError> {
        // The same credentials as the custom ESP: the webhook's bearer token, or ?token=.
        CustomEsp::default().verify(request, secret)
    }

    fn parse(&self, request: &InboundRequest<'_>) -> Result<Vec<EspEvent>, ParseError> {
        parse_webhook(request.body).map(|event| vec![event])
    }
}

/// Reads one Brevo marketing webhook. `list_addition` is a signup, `unsubscribed` and
/// `contact_deleted` a departure; `contact_updated` names the contact only (its `content` is
/// loosely structured), so it is recorded and, changing nothing the platform is told of, not
/// forwarded. Other events are ignored.
pub fn parse_webhook(body: &[u8]) -> Result<EspEvent, ParseError> {
    let value = ParseError::json(body)?;
    let event_type = ParseError::event_type(&value, "event")?;
    let email = || -> Result<Email, ParseError> {
        let raw = value
            .get("email")
            .and_then(Value::as_str)
            .ok_or_else(|| ParseError("the webhook has no `email`".into()))?;
        Email::parse(raw).map_err(|_| ParseError("`email` is not a valid address".into()))
    };
    let person = || -> Result<Person, ParseError> {
        Ok(Person {
            email: email()?,
            esp_id: value
                .get("id")
                .filter(|id| id.is_number() || id.is_string())
                .cloned(),
            first_name: None,
            name: None,
        })
    };
    Ok(match event_type {
        "list_addition" => EspEvent::Subscribed {
            attribution: Default::default(),
            person: person()?,
            created_at: value.get("ts").and_then(Value::as_i64),
        },
        "contact_updated" => EspEvent::Updated {
            person: person()?,
            previous_email: None,
            updated_at: value.get("ts").and_then(Value::as_i64),
        },
        "unsubscribed" => EspEvent::Unsubscribed { email: email()? },
        "contact_deleted" => EspEvent::Deleted { email: email()? },
        other => EspEvent::Ignored {
            event_type: other.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_webhooks_are_understood() {
        let addition = br#"{"id": 123456, "email": "Example@domain.com", "event": "list_addition",
            "key": "x", "list_id": [34, 12], "date": "2020-10-09 00:00:00", "ts": 1604937111}"#;
        let EspEvent::Subscribed {
            person, created_at, ..
        } = parse_webhook(addition).unwrap()
        else {
            panic!("not a signup")
        };
        assert_eq!(person.email.as_str(), "example@domain.com");
        assert_eq!(person.esp_id, Some(json!(123456)));
        assert_eq!(created_at, Some(1604937111));
        let unsubscribed = br#"{"id": 123456, "camp_id": 12, "email": "example@domain.com",
            "campaign name": "My First Campaign", "event": "unsubscribed", "list_id": [3, 42],
            "ts_event": 1604933737, "ts": 1604937337}"#;
        let deleted = br#"{"id": 123456, "email": "example@domain.com",
            "event": "contact_deleted", "list_id": [35], "ts": 1604937111}"#;
        assert!(matches!(
            parse_webhook(unsubscribed).unwrap(),
            EspEvent::Unsubscribed { .. }
        ));
        assert!(matches!(
            parse_webhook(deleted).unwrap(),
            EspEvent::Deleted { .. }
        ));
        let updated = br#"{"id": 123456, "email": "example@domain.com",
            "event": "contact_updated", "content": [{"name": "John"}], "ts": 1604937111}"#;
        assert!(matches!(
            parse_webhook(updated).unwrap(),
            EspEvent::Updated {
                previous_email: None,
                ..
            }
        ));
        assert!(matches!(
            parse_webhook(br#"{"event": "hard_bounce", "email": "a@b.co"}"#).unwrap(),
            EspEvent::Ignored { .. }
        ));
        assert!(parse_webhook(br#"{"email": "a@b.co"}"#).is_err());
    }

    #[test]
    fn a_field_update_puts_only_the_known_attributes_by_email() {
        let brevo = Brevo::new(EspConfig {
            api_key: Some("xkeysib-test".into()),
            ..EspConfig::default()
        });
        let fields = vec![
            ("RH_CODE".to_string(), json!("ab12cd")),
            ("rh_totref".to_string(), json!(3)),
            ("RH_COUPON".to_string(), Value::Null),
        ];
        let request = brevo.field_update(
            &FieldUpdate {
                email: "jane+x@example.com",
                esp_id: None,
                fields: &fields,
            },
            &MessageId {
                id: "m".into(),
                timestamp: 0,
            },
        );
        assert_eq!(request.method, "PUT");
        assert_eq!(
            request.url,
            "https://api.brevo.com/v3/contacts/jane%2Bx%40example.com"
        );
        assert!(request
            .headers
            .contains(&("api-key".into(), "xkeysib-test".into())));
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(
            body,
            json!({"attributes": {"RH_CODE": "ab12cd", "RH_TOTREF": 3}})
        );
    }
}
