//! ActiveCampaign (API v3). In: webhooks, form-encoded (`type` = `subscribe`, `unsubscribe`,
//! `update`; the contact in `contact[...]`), unsigned: the URL carries `?token=`. Out:
//! `POST {ESP_API_URL}/contact/sync` with the contact's email and the bridge's `fieldValues`
//! only (ActiveCampaign changes just those), header `Api-Token`. Field values go by the field's
//! numeric id: the ids are read once from `GET /fields` (matched by personalisation tag, the
//! field name upper-cased) and read again, at most once a minute, when a field is missing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::custom::CustomEsp;
use crate::outbound::{
    usual_verdict, Answer, EspConfig, FieldUpdate, MessageId, OutboundEsp, OutboundRequest,
    WriteVerdict,
};
use crate::VerifyError;
use crate::{form_pairs, Email, EspEvent, InboundEsp, InboundRequest, ParseError, Person};

/// How long a missing field waits before the ids are read again.
const RELEARN_AFTER: Duration = Duration::from_secs(60);

/// What the adapter knows of the account's fields.
#[derive(Debug, Default)]
struct FieldIds {
    /// Field id by personalisation tag (upper case).
    by_tag: HashMap<String, String>,
    /// When they were last read.
    learned_at: Option<Instant>,
    /// Whether a write found a field without an id since.
    missing: bool,
}

/// The `ESP_RATE_LIMIT` used unless one is set. ActiveCampaign: 5 requests a second per account.
pub const DEFAULT_RATE_LIMIT: &str = "5/1s";

/// The ActiveCampaign adapter.
#[derive(Debug, Default)]
pub struct ActiveCampaign {
    config: EspConfig,
    fields: Mutex<FieldIds>,
}

impl ActiveCampaign {
    /// The adapter, reaching ActiveCampaign as `config` says (`api_url`: the account's
    /// `https://{account}.api-us1.com/api/3`).
    pub fn new(config: EspConfig) -> Self {
        ActiveCampaign {
            config,
            fields: Mutex::default(),
        }
    }

    fn request(&self, method: &'static str, rest: &str, body: Option<Value>) -> OutboundRequest {
        let base = self.config.api_url.as_deref().unwrap_or_default();
        let mut headers = vec![("Api-Token".into(), self.config.key().to_string())];
        if body.is_some() {
            headers.push(("Content-Type".into(), "application/json".into()));
        }
        OutboundRequest {
            method,
            url: format!("{}/{rest}", base.trim_end_matches('/')),
            headers,
            body: body.map_or_else(Vec::new, |b| b.to_string().into_bytes()),
        }
    }

    fn ids(&self) -> std::sync::MutexGuard<'_, FieldIds> {
        self.fields.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl InboundEsp for ActiveCampaign {
    fn credentials_hint(&self) -> &'static str {
        "ActiveCampaign signs nothing: add `?token=<ESP_WEBHOOK_SECRET>` to the webhook URL set in ActiveCampaign"
    }

    fn name(&self) -> &'static str {
        "activecampaign"
    }

    fn verify(
        &self,
        request: &InboundRequest<'_>,
        secret: Option<&str>,
    ) -> Result<(), VerifyError> {
        // ActiveCampaign signs nothing: the secret is the webhook URL's ?token=.
        CustomEsp::default().verify(request, secret)
    }

    fn parse(&self, request: &InboundRequest<'_>) -> Result<Vec<EspEvent>, ParseError> {
        let mut event = parse_webhook(request.body)?;
        if self.config.attribution_fields.is_empty() {
            return Ok(vec![event]);
        }
        if let EspEvent::Subscribed { attribution, .. } = &mut event {
            // The contact's custom fields come as `contact[fields][NAME]`.
            let pairs = form_pairs(request.body)?;
            *attribution = self.config.attribution(|name| {
                let key = format!("contact[fields][{name}]");
                pairs
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.as_str())
            });
        }
        Ok(vec![event])
    }
}

/// Reads one ActiveCampaign webhook: `subscribe` a signup, `unsubscribe` a departure, `update`
/// an update (ActiveCampaign sends only the new address on an email change, so that reaches
/// the bridge as someone new); other types are ignored.
pub fn parse_webhook(body: &[u8]) -> Result<EspEvent, ParseError> {
    let pairs: HashMap<String, String> = form_pairs(body)?.into_iter().collect();
    let text = |key: &str| {
        pairs
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let event_type = text("type").ok_or_else(|| {
        ParseError("the webhook has no `type` (a form-encoded ActiveCampaign webhook)".into())
    })?;
    let email = || -> Result<Email, ParseError> {
        let raw = text("contact[email]")
            .ok_or_else(|| ParseError("the webhook has no `contact[email]`".into()))?;
        Email::parse(&raw).map_err(|_| ParseError("`contact[email]` is not a valid address".into()))
    };
    let person = || -> Result<Person, ParseError> {
        let first_name = text("contact[first_name]");
        let name = match (first_name.as_deref(), text("contact[last_name]")) {
            (Some(first), Some(last)) => Some(format!("{first} {last}")),
            (_, None) => None,
            (None, Some(last)) => Some(last),
        };
        Ok(Person {
            email: email()?,
            esp_id: text("contact[id]").map(Value::String),
            first_name,
            name,
        })
    };
    let at = text("date_time").and_then(|t| unix_seconds(&t));
    Ok(match event_type.as_str() {
        "subscribe" => EspEvent::Subscribed {
            attribution: Default::default(),
            person: person()?,
            created_at: at,
        },
        "update" => EspEvent::Updated {
            person: person()?,
            previous_email: None,
            updated_at: at,
        },
        "unsubscribe" => EspEvent::Unsubscribed { email: email()? },
        other => EspEvent::Ignored {
            event_type: other.to_string(),
        },
    })
}

/// Unix seconds of an ISO 8601 time with an offset, as ActiveCampaign writes it
/// (`2024-01-01T09:00:00-06:00`), or in UTC.
fn unix_seconds(text: &str) -> Option<i64> {
    crate::time::iso8601_seconds(text)
}

impl OutboundEsp for ActiveCampaign {
    fn outbound_problem(&self) -> Option<String> {
        if self.config.api_url.is_none() {
            return Some(
                "ESP_API_URL is not set: ActiveCampaign fields are queued, and written once it \
                 names the account's API (https://<account>.api-us1.com/api/3)"
                    .into(),
            );
        }
        self.config.api_key.is_none().then(|| {
            "ESP_API_KEY is not set: ActiveCampaign fields are queued, and written once it holds \
             an API token"
                .into()
        })
    }

    fn field_update(&self, update: &FieldUpdate<'_>, _: &MessageId) -> OutboundRequest {
        let mut ids = self.ids();
        let mut values = Vec::new();
        for (name, value) in update.fields {
            let text = match value {
                // A value not known yet is left out rather than cleared.
                Value::Null => continue,
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            match ids.by_tag.get(&name.to_uppercase()) {
                Some(id) => values.push(json!({"field": id, "value": text})),
                None => ids.missing = true,
            }
        }
        drop(ids);
        self.request(
            "POST",
            "contact/sync",
            Some(json!({"contact": {"email": update.email, "fieldValues": values}})),
        )
    }

    fn read_answer(&self, answer: &Answer<'_>) -> WriteVerdict {
        usual_verdict(answer)
    }

    fn field_key(&self, name: &str) -> String {
        name.to_uppercase()
    }

    fn list_fields(&self) -> Option<OutboundRequest> {
        Some(self.request("GET", "fields?limit=100", None))
    }

    fn read_fields(&self, answer: &Answer<'_>) -> Result<Vec<String>, String> {
        crate::outbound::strings_at(answer.body, &["fields", "*", "perstag"])
    }

    fn create_field(&self, name: &str, _numeric: bool) -> Option<OutboundRequest> {
        // ActiveCampaign has no numeric field type: counts are text too.
        Some(self.request(
            "POST",
            "fields",
            Some(json!({"field": {"type": "text", "title": name,
                "perstag": name.to_uppercase(), "visible": 1}})),
        ))
    }

    fn needs_field_ids(&self) -> bool {
        let ids = self.ids();
        match ids.learned_at {
            None => true,
            Some(at) => ids.missing && at.elapsed() >= RELEARN_AFTER,
        }
    }

    fn learn_fields(&self, answer: &Answer<'_>) -> Result<(), String> {
        if !(200..300).contains(&answer.status) {
            return Err(format!(
                "HTTP {} listing the fields: {}",
                answer.status,
                crate::outbound::error_text(answer.body)
            ));
        }
        let body: Value = serde_json::from_str(answer.body)
            .map_err(|e| format!("the field list is not JSON: {e}"))?;
        let by_tag = body
            .get("fields")
            .and_then(Value::as_array)
            .ok_or("the answer has no `fields`")?
            .iter()
            .filter_map(|field| {
                let tag = field.get("perstag")?.as_str()?.to_uppercase();
                let id = match field.get("id")? {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return None,
                };
                Some((tag, id))
            })
            .collect();
        let mut ids = self.ids();
        *ids = FieldIds {
            by_tag,
            learned_at: Some(Instant::now()),
            missing: false,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fixtures/esp/activecampaign_webhook_subscribe.txt`, as sent.
    const SUBSCRIBE: &[u8] = b"type=subscribe&date_time=2024-01-01T09%3A00%3A00-06%3A00&initiated_from=public&initiated_by=contact&list=1&form%5Bid%5D=3&contact%5Bid%5D=10&contact%5Bemail%5D=jane%40example.com&contact%5Bfirst_name%5D=Jane&contact%5Blast_name%5D=Doe&contact%5Bphone%5D=&contact%5Btags%5D=&contact%5Bip%5D=1.2.3.4&contact%5Bfields%5D%5Breferral_code%5D=ab12cd";

    #[test]
    fn webhooks_become_events() {
        match parse_webhook(SUBSCRIBE).unwrap() {
            EspEvent::Subscribed {
                person, created_at, ..
            } => {
                assert_eq!(person.email.as_str(), "jane@example.com");
                assert_eq!(person.esp_id, Some(json!("10")));
                assert_eq!(person.first_name.as_deref(), Some("Jane"));
                assert_eq!(person.name.as_deref(), Some("Jane Doe"));
                // 09:00 at -06:00 is 15:00 UTC.
                assert_eq!(created_at, Some(1_704_121_200));
            }
            other => panic!("{other:?}"),
        }
        let unsubscribe = b"type=unsubscribe&contact%5Bemail%5D=jane%40example.com";
        assert!(matches!(
            parse_webhook(unsubscribe).unwrap(),
            EspEvent::Unsubscribed { .. }
        ));
        assert!(matches!(
            parse_webhook(b"type=sent&contact%5Bemail%5D=jane%40example.com").unwrap(),
            EspEvent::Ignored { .. }
        ));
        assert!(parse_webhook(b"{\"type\": \"subscribe\"}").is_err());
    }

    #[test]
    fn writes_go_by_the_learned_field_ids() {
        let esp = ActiveCampaign::new(EspConfig {
            attribution_fields: Vec::new(),
            api_url: Some("http://ac.test/api/3".into()),
            api_key: Some("ac-token".into()),
            signing_secret: None,
            list_id: None,
            write_to: None,
        });
        assert!(esp.needs_field_ids());
        let fields = r#"{"fields": [{"id": "8", "title": "Referral code", "perstag": "RH_CODE"},
            {"id": "9", "title": "Referrals", "perstag": "RH_TOTREF"}], "meta": {"total": "2"}}"#;
        esp.learn_fields(&Answer {
            status: 200,
            retry_after: None,
            body: fields,
        })
        .unwrap();
        assert!(!esp.needs_field_ids());
        let values = vec![
            ("RH_CODE".to_string(), json!("ab12cd")),
            ("RH_TOTREF".to_string(), json!(3)),
            ("RH_COUPON".to_string(), Value::Null),
            ("RH_LASTREWARD".to_string(), json!("r1")),
        ];
        let update = FieldUpdate {
            email: "jane@example.com",
            esp_id: None,
            fields: &values,
        };
        let request = esp.field_update(
            &update,
            &MessageId {
                id: "m".into(),
                timestamp: 0,
            },
        );
        assert_eq!(request.url, "http://ac.test/api/3/contact/sync");
        assert_eq!(
            serde_json::from_slice::<Value>(&request.body).unwrap(),
            json!({"contact": {"email": "jane@example.com", "fieldValues": [
                {"field": "8", "value": "ab12cd"}, {"field": "9", "value": "3"}]}})
        );
        assert!(request
            .headers
            .contains(&("Api-Token".into(), "ac-token".into())));
        // RH_LASTREWARD has no field yet: the ids are read again, but not at once.
        assert!(!esp.needs_field_ids());
    }
}
