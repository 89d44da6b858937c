//! beehiiv (API v2). In: webhooks (JSON `event_type` = `subscription.created`,
//! `subscription.confirmed`, `subscription.deleted`, the subscription in `data`), unsigned:
//! beehiiv has no signing secret, so the webhook URL carries `?token=`. Out:
//! `PATCH {ESP_API_URL}/publications/{ESP_LIST_ID}/subscriptions/{id}` with the bridge's
//! `custom_fields` only (matched by display name; others untouched), `Authorization: Bearer`;
//! the subscription id comes from beehiiv's webhooks or is looked up by address
//! (`GET …/subscriptions/by_email/{email}`).

use serde_json::{json, Value};

use crate::custom::CustomEsp;
use crate::outbound::{
    usual_verdict, Answer, EspConfig, FieldUpdate, MessageId, OutboundEsp, OutboundRequest,
    WriteVerdict,
};
use crate::{Email, EspEvent, InboundEsp, InboundRequest, ParseError, Person, VerifyError};

/// beehiiv's API base, `/v2` included.
pub const DEFAULT_API_URL: &str = "https://api.beehiiv.com/v2";

/// The `ESP_RATE_LIMIT` used unless one is set. beehiiv: 180 requests a minute per organisation.
pub const DEFAULT_RATE_LIMIT: &str = "180/60s";

/// The beehiiv adapter.
#[derive(Debug, Default, Clone)]
pub struct Beehiiv {
    config: EspConfig,
}

impl Beehiiv {
    /// The adapter, reaching beehiiv as `config` says (`list_id`: the publication, `pub_…`).
    pub fn new(config: EspConfig) -> Self {
        Beehiiv { config }
    }

    /// `{base}/publications/{publication}/{rest}`.
    fn url(&self, rest: &str) -> String {
        let base = self.config.api_url.as_deref().unwrap_or(DEFAULT_API_URL);
        format!(
            "{}/publications/{}/{rest}",
            base.trim_end_matches('/'),
            crate::encode_component(self.config.list_id.as_deref().unwrap_or_default())
        )
    }

    fn request(&self, method: &'static str, url: String, body: Option<Value>) -> OutboundRequest {
        let mut headers = vec![(
            "Authorization".into(),
            format!("Bearer {}", self.config.key()),
        )];
        if body.is_some() {
            headers.push(("Content-Type".into(), "application/json".into()));
        }
        OutboundRequest {
            method,
            url,
            headers,
            body: body.map_or_else(Vec::new, |b| b.to_string().into_bytes()),
        }
    }
}

impl InboundEsp for Beehiiv {
    fn credentials_hint(&self) -> &'static str {
        "beehiiv signs nothing: add `?token=<ESP_WEBHOOK_SECRET>` to the webhook URL set in beehiiv"
    }

    fn name(&self) -> &'static str {
        "beehiiv"
    }

    fn verify(
        &self,
        request: &InboundRequest<'_>,
        secret: Option<&str>,
    ) -> Result<(), VerifyError> {
        // beehiiv signs nothing: the secret is the webhook URL's ?token= (or a bearer token).
        CustomEsp::default().verify(request, secret)
    }

    fn parse(&self, request: &InboundRequest<'_>) -> Result<Vec<EspEvent>, ParseError> {
        let mut event = parse_webhook(request.body)?;
        if self.config.attribution_fields.is_empty() {
            return Ok(vec![event]);
        }
        if let EspEvent::Subscribed { attribution, .. } = &mut event {
            // beehiiv's subscription carries its own UTM keys (`utm_source`, `utm_campaign`) and
            // custom fields as a list of `{name, value}`: a configured name is looked up in both.
            let value = ParseError::json(request.body)?;
            let data = &value["data"];
            *attribution = self.config.attribution(|name| {
                data[name].as_str().or_else(|| {
                    data["custom_fields"]
                        .as_array()?
                        .iter()
                        .find(|f| f["name"].as_str() == Some(name))?["value"]
                        .as_str()
                })
            });
        }
        Ok(vec![event])
    }
}

/// Reads one beehiiv webhook. `subscription.created` is a signup once the subscription is
/// `active` (one still `validating` or `pending` double opt-in waits for
/// `subscription.confirmed`); `subscription.deleted` a departure; other events are ignored.
/// beehiiv has no email-change event.
pub fn parse_webhook(body: &[u8]) -> Result<EspEvent, ParseError> {
    let value = ParseError::json(body)?;
    let event_type = ParseError::event_type(&value, "event_type")?;
    let data = value.get("data").unwrap_or(&Value::Null);
    let email = || -> Result<Email, ParseError> {
        let raw = data
            .get("email")
            .and_then(Value::as_str)
            .ok_or_else(|| ParseError("the subscription has no `email`".into()))?;
        Email::parse(raw).map_err(|_| ParseError("`email` is not a valid address".into()))
    };
    let status = data.get("status").and_then(Value::as_str);
    let subscribed = || -> Result<EspEvent, ParseError> {
        Ok(EspEvent::Subscribed {
            attribution: Default::default(),
            person: Person {
                email: email()?,
                esp_id: data.get("id").filter(|id| id.is_string()).cloned(),
                first_name: None,
                name: None,
            },
            created_at: data.get("created").and_then(Value::as_i64),
        })
    };
    Ok(match event_type {
        "subscription.created" if status.is_none_or(|s| s == "active") => subscribed()?,
        "subscription.confirmed" => subscribed()?,
        "subscription.deleted" => EspEvent::Deleted { email: email()? },
        other => EspEvent::Ignored {
            event_type: other.to_string(),
        },
    })
}

impl OutboundEsp for Beehiiv {
    fn outbound_problem(&self) -> Option<String> {
        if self.config.api_key.is_none() {
            return Some(
                "ESP_API_KEY is not set: beehiiv custom fields are queued, and written once it \
                 holds an API key"
                    .into(),
            );
        }
        self.config.list_id.is_none().then(|| {
            "ESP_LIST_ID is not set: beehiiv custom fields are queued, and written once it names \
             the publication (pub_...)"
                .into()
        })
    }

    fn field_update(&self, update: &FieldUpdate<'_>, _: &MessageId) -> OutboundRequest {
        // Only the fields named change; a value not known yet is left out rather than cleared.
        let custom_fields: Vec<Value> = update
            .fields
            .iter()
            .filter(|(_, value)| !value.is_null())
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect();
        let id = match update.esp_id {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        self.request(
            "PATCH",
            self.url(&format!("subscriptions/{}", crate::encode_component(&id))),
            Some(json!({ "custom_fields": custom_fields })),
        )
    }

    fn read_answer(&self, answer: &Answer<'_>) -> WriteVerdict {
        usual_verdict(answer)
    }

    fn id_lookup(&self, email: &str) -> Option<OutboundRequest> {
        Some(self.request(
            "GET",
            self.url(&format!(
                "subscriptions/by_email/{}",
                crate::encode_component(email)
            )),
            None,
        ))
    }

    fn read_id(&self, answer: &Answer<'_>) -> Option<Value> {
        if !(200..300).contains(&answer.status) {
            return None;
        }
        let body: Value = serde_json::from_str(answer.body).ok()?;
        body.get("data")?
            .get("id")
            .filter(|id| id.is_string())
            .cloned()
    }

    fn field_key(&self, name: &str) -> String {
        // Custom fields are matched by their display name, as written.
        name.to_string()
    }

    fn list_fields(&self) -> Option<OutboundRequest> {
        Some(self.request("GET", self.url("custom_fields"), None))
    }

    fn read_fields(&self, answer: &Answer<'_>) -> Result<Vec<String>, String> {
        crate::outbound::strings_at(answer.body, &["data", "*", "display"])
    }

    fn create_field(&self, name: &str, numeric: bool) -> Option<OutboundRequest> {
        let kind = if numeric { "integer" } else { "string" };
        Some(self.request(
            "POST",
            self.url("custom_fields"),
            Some(json!({"kind": kind, "display": name})),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fixtures/esp/beehiiv_webhook_subscription_created.json`, its `_note` removed.
    const CREATED: &str = r#"{"data": {"created": 1666800076, "email": "example@example.com",
        "id": "sub_00000000-0000-0000-0000-000000000000", "referral_code": "ABC123",
        "referring_site": "https://www.blog.com", "status": "active", "subscription_tier": "free",
        "subscription_premium_tier_names": [], "utm_campaign": "Q1 Campaign",
        "utm_channel": "website", "utm_medium": "organic", "utm_source": "Twitter"},
        "event_timestamp": 1666800076, "event_type": "subscription.created",
        "uid": "evt_00000000-0000-0000-0000-000000000000"}"#;

    fn config() -> EspConfig {
        EspConfig {
            attribution_fields: Vec::new(),
            api_url: Some("http://beehiiv.test/v2".into()),
            api_key: Some("bh-key".into()),
            signing_secret: None,
            list_id: Some("pub_1".into()),
            write_to: None,
        }
    }

    #[test]
    fn webhooks_become_events() {
        match parse_webhook(CREATED.as_bytes()).unwrap() {
            EspEvent::Subscribed {
                person, created_at, ..
            } => {
                assert_eq!(person.email.as_str(), "example@example.com");
                assert_eq!(
                    person.esp_id,
                    Some(json!("sub_00000000-0000-0000-0000-000000000000"))
                );
                assert_eq!(created_at, Some(1666800076));
            }
            other => panic!("{other:?}"),
        }
        let pending = CREATED.replace("\"active\"", "\"validating\"");
        assert!(matches!(
            parse_webhook(pending.as_bytes()).unwrap(),
            EspEvent::Ignored { .. }
        ));
        let confirmed = pending.replace("subscription.created", "subscription.confirmed");
        assert!(matches!(
            parse_webhook(confirmed.as_bytes()).unwrap(),
            EspEvent::Subscribed { .. }
        ));
        let deleted = CREATED.replace("subscription.created", "subscription.deleted");
        assert!(matches!(
            parse_webhook(deleted.as_bytes()).unwrap(),
            EspEvent::Deleted { .. }
        ));
        assert!(parse_webhook(br#"{"data": {}}"#).is_err());
    }

    #[test]
    fn writes_patch_only_the_known_custom_fields() {
        let esp = Beehiiv::new(config());
        let fields = vec![
            ("RH_CODE".to_string(), json!("ab12cd")),
            ("RH_TOTREF".to_string(), json!(3)),
            ("RH_COUPON".to_string(), Value::Null),
        ];
        let id = json!("sub_1");
        let update = FieldUpdate {
            email: "a@b.co",
            esp_id: Some(&id),
            fields: &fields,
        };
        let message = MessageId {
            id: "m".into(),
            timestamp: 0,
        };
        let request = esp.field_update(&update, &message);
        assert_eq!(request.method, "PATCH");
        assert_eq!(
            request.url,
            "http://beehiiv.test/v2/publications/pub_1/subscriptions/sub_1"
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&request.body).unwrap(),
            json!({"custom_fields": [{"name": "RH_CODE", "value": "ab12cd"},
                {"name": "RH_TOTREF", "value": 3}]})
        );
        assert!(request
            .headers
            .contains(&("Authorization".into(), "Bearer bh-key".into())));
        let lookup = esp.id_lookup("a+b@example.com").unwrap();
        assert_eq!(
            lookup.url,
            "http://beehiiv.test/v2/publications/pub_1/subscriptions/by_email/a%2Bb%40example.com"
        );
        let answer = Answer {
            status: 200,
            retry_after: None,
            body: r#"{"data": {"id": "sub_9", "email": "a+b@example.com"}}"#,
        };
        assert_eq!(esp.read_id(&answer), Some(json!("sub_9")));
        assert!(Beehiiv::new(EspConfig {
            list_id: None,
            ..config()
        })
        .outbound_problem()
        .unwrap()
        .contains("ESP_LIST_ID"));
    }
}
