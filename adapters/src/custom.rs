//! The custom ESP: the JSON events of SparkLoop's "custom integration" document
//! (`subscribe`, `update`, `unsubscribe`), posted by the newsletter's own ESP or glue code.

use secrecy::ExposeSecret;
use serde_json::{json, Map, Value};

use crate::outbound::{
    usual_verdict, Answer, EspConfig, FieldUpdate, MessageId, OutboundEsp, OutboundRequest,
    WriteVerdict,
};
use crate::{
    secrets_match, standard_webhooks, Email, EspEvent, InboundEsp, InboundRequest, ParseError,
    Person, VerifyError,
};

/// The `ESP_RATE_LIMIT` used unless one is set. The custom ESP: a modest pace for a receiver of unknown capacity.
pub const DEFAULT_RATE_LIMIT: &str = "10/1s";

/// The custom ESP adapter. In: `Authorization: Bearer <secret>` or `?token=<secret>`, and the
/// seed's JSON shapes. Out: the subscriber's whole state POSTed to `ESP_API_URL`, with
/// `Authorization: Bearer ESP_API_KEY` when set and Standard Webhooks signature headers when
/// `ESP_SIGNING_SECRET` is set.
#[derive(Debug, Default, Clone)]
pub struct CustomEsp {
    config: EspConfig,
}

impl CustomEsp {
    /// The adapter, reaching the ESP as `config` says.
    pub fn new(config: EspConfig) -> Self {
        CustomEsp { config }
    }
}

impl OutboundEsp for CustomEsp {
    fn outbound_problem(&self) -> Option<String> {
        self.config.api_url.is_none().then(|| {
            "ESP_API_URL is not set: referral fields are stored and queued, and are sent once it \
             names the URL that receives them"
                .to_string()
        })
    }

    fn field_update(&self, update: &FieldUpdate<'_>, message: &MessageId) -> OutboundRequest {
        let fields: Map<String, Value> = update.fields.iter().cloned().collect();
        let mut body = json!({"email": update.email});
        if let Some(id) = update.esp_id {
            body["id"] = id.clone();
        }
        body["fields"] = Value::Object(fields);
        let body = body.to_string().into_bytes();
        let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        if let Some(key) = &self.config.api_key {
            let key = key.expose_secret();
            headers.push(("Authorization".into(), format!("Bearer {key}")));
        }
        if let Some(secret) = &self.config.signing_secret {
            let signature = standard_webhooks::signature(
                secret.expose_secret(),
                &message.id,
                message.timestamp,
                &body,
            );
            headers.push(("webhook-id".into(), message.id.clone()));
            headers.push(("webhook-timestamp".into(), message.timestamp.to_string()));
            headers.push(("webhook-signature".into(), signature));
        }
        OutboundRequest {
            method: "POST",
            url: self.config.api_url.clone().unwrap_or_default(),
            headers,
            body,
        }
    }

    fn read_answer(&self, answer: &Answer<'_>) -> WriteVerdict {
        usual_verdict(answer)
    }

    /// A `GET` of `ESP_API_URL` with the key: the receiver takes POSTs, so any answer but 401,
    /// 403 or a 5xx shows that it is there and takes the key.
    fn credentials_probe(&self) -> Option<OutboundRequest> {
        let url = self.config.api_url.clone()?;
        let headers = self
            .config
            .api_key
            .as_ref()
            .map(|key| {
                vec![(
                    "Authorization".to_string(),
                    format!("Bearer {}", key.expose_secret()),
                )]
            })
            .unwrap_or_default();
        Some(OutboundRequest {
            method: "GET",
            url,
            headers,
            body: Vec::new(),
        })
    }
}

impl InboundEsp for CustomEsp {
    fn name(&self) -> &'static str {
        "custom"
    }

    fn verify(
        &self,
        request: &InboundRequest<'_>,
        secret: Option<&str>,
    ) -> Result<(), VerifyError> {
        let secret = secret.ok_or(VerifyError::NotConfigured)?;
        let bearer = request
            .header("authorization")
            .and_then(|value| std::str::from_utf8(value).ok())
            .and_then(|value| {
                let (scheme, token) = value.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| token.trim().to_string())
            });
        let presented = bearer.or_else(|| request.query_param("token"));
        match presented {
            None => Err(VerifyError::Missing),
            Some(token) if secrets_match(token.as_bytes(), secret.as_bytes()) => Ok(()),
            Some(_) => Err(VerifyError::Wrong),
        }
    }

    fn parse(&self, request: &InboundRequest<'_>) -> Result<Vec<EspEvent>, ParseError> {
        parse_event(request.body).map(|event| vec![event])
    }
}

/// Reads one custom-ESP event from a JSON body.
pub fn parse_event(body: &[u8]) -> Result<EspEvent, ParseError> {
    let value = ParseError::json(body)?;
    let object = value
        .as_object()
        .ok_or_else(|| ParseError("the body must be a JSON object".into()))?;
    let event_type = match object.get("type") {
        Some(Value::String(t)) if !t.trim().is_empty() => t.trim(),
        _ => return Err(ParseError("the event has no `type`".into())),
    };
    if !matches!(event_type, "subscribe" | "update" | "unsubscribe") {
        return Ok(EspEvent::Ignored {
            event_type: event_type.to_string(),
        });
    }
    let subscriber = match object.get("subscriber") {
        Some(Value::Object(s)) => s,
        _ => return Err(ParseError("the event has no `subscriber` object".into())),
    };
    let email = required_email(subscriber, "email")?;
    Ok(match event_type {
        "subscribe" => EspEvent::Subscribed {
            attribution: crate::Attribution::from_object(subscriber),
            person: person(subscriber, email)?,
            created_at: timestamp(subscriber, "created_at")?,
        },
        "update" => EspEvent::Updated {
            previous_email: optional_email(subscriber, "previous_email")?,
            updated_at: timestamp(subscriber, "updated_at")?,
            person: person(subscriber, email)?,
        },
        _ => EspEvent::Unsubscribed { email },
    })
}

fn person(subscriber: &Map<String, Value>, email: Email) -> Result<Person, ParseError> {
    let esp_id = match subscriber.get("id") {
        None | Some(Value::Null) => None,
        Some(id @ (Value::Number(_) | Value::String(_))) => Some(id.clone()),
        Some(_) => {
            return Err(ParseError(
                "`subscriber.id` must be a number or a string".into(),
            ))
        }
    };
    Ok(Person {
        email,
        esp_id,
        first_name: text(subscriber, "first_name")?,
        name: text(subscriber, "name")?,
    })
}

fn text(subscriber: &Map<String, Value>, key: &str) -> Result<Option<String>, ParseError> {
    match subscriber.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ParseError(format!("`subscriber.{key}` must be a string"))),
    }
}

fn required_email(subscriber: &Map<String, Value>, key: &str) -> Result<Email, ParseError> {
    optional_email(subscriber, key)?
        .ok_or_else(|| ParseError(format!("the event has no `subscriber.{key}`")))
}

fn optional_email(subscriber: &Map<String, Value>, key: &str) -> Result<Option<Email>, ParseError> {
    match subscriber.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Email::parse(s)
            .map(Some)
            .map_err(|e| ParseError(format!("`subscriber.{key}`: {e}"))),
        Some(_) => Err(ParseError(format!("`subscriber.{key}` must be a string"))),
    }
}

/// A unix timestamp in seconds, given as a JSON integer or a string of digits.
fn timestamp(subscriber: &Map<String, Value>, key: &str) -> Result<Option<i64>, ParseError> {
    let invalid = || {
        ParseError(format!(
            "`subscriber.{key}` must be a unix timestamp in seconds"
        ))
    };
    match subscriber.get(key) {
        None | Some(Value::Null) => Ok(None),
        // A whole number written with a fraction (`1564400550.0`) is one too, as JSON Schema's
        // `integer` says.
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                    .map(|f| f as i64)
            })
            .map(Some)
            .ok_or_else(invalid),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| invalid()),
        Some(_) => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<EspEvent, ParseError> {
        parse_event(value.to_string().as_bytes())
    }

    #[test]
    fn subscribe_keeps_the_id_type() {
        let event = parse(json!({"type": "subscribe", "subscriber": {
            "email": " John.Doe@Email.com", "id": 123, "first_name": "John",
            "name": "John Doe", "created_at": 1564400550}}))
        .unwrap();
        let EspEvent::Subscribed {
            person, created_at, ..
        } = event
        else {
            panic!("not a subscribe: {event:?}")
        };
        assert_eq!(person.email.as_str(), "john.doe@email.com");
        assert_eq!(person.esp_id, Some(json!(123)));
        assert_eq!(created_at, Some(1564400550));
    }

    #[test]
    fn update_reads_previous_email() {
        let event = parse(json!({"type": "update", "subscriber": {
            "email": "new@email.com", "previous_email": "Old@Email.com", "updated_at": "1564400550"}}))
        .unwrap();
        assert!(
            matches!(event, EspEvent::Updated { previous_email: Some(ref p), updated_at: Some(1564400550), .. } if p.as_str() == "old@email.com")
        );
    }

    #[test]
    fn unknown_types_are_ignored_whatever_else_is_missing() {
        assert_eq!(
            parse(json!({"type": "bounce"})).unwrap(),
            EspEvent::Ignored {
                event_type: "bounce".into()
            }
        );
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        let message = |v: &[u8]| parse_event(v).unwrap_err().0;
        assert!(message(b"{not json").contains("not valid JSON"));
        assert!(message(b"[]").contains("JSON object"));
        assert!(message(br#"{"subscriber":{}}"#).contains("no `type`"));
        assert!(message(br#"{"type":"subscribe"}"#).contains("no `subscriber`"));
        assert!(message(br#"{"type":"subscribe","subscriber":{}}"#).contains("subscriber.email"));
        assert!(
            message(br#"{"type":"unsubscribe","subscriber":{"email":"nope"}}"#)
                .contains("not a valid email")
        );
        assert!(message(
            br#"{"type":"subscribe","subscriber":{"email":"a@b.co","created_at":"x"}}"#
        )
        .contains("created_at"));
    }

    #[test]
    fn verify_accepts_bearer_or_token() {
        let esp = CustomEsp::default();
        let bearer = [("Authorization", b"Bearer s3cret".as_slice())];
        let ok = InboundRequest {
            query: "",
            headers: &bearer,
            body: b"",
        };
        assert_eq!(esp.verify(&ok, Some("s3cret")), Ok(()));
        assert_eq!(esp.verify(&ok, None), Err(VerifyError::NotConfigured));
        let query = InboundRequest {
            query: "token=s3cret",
            headers: &[],
            body: b"",
        };
        assert_eq!(esp.verify(&query, Some("s3cret")), Ok(()));
        let wrong = InboundRequest {
            query: "token=nope",
            headers: &[],
            body: b"",
        };
        assert_eq!(esp.verify(&wrong, Some("s3cret")), Err(VerifyError::Wrong));
        let none = InboundRequest {
            query: "",
            headers: &[],
            body: b"",
        };
        assert_eq!(esp.verify(&none, Some("s3cret")), Err(VerifyError::Missing));
    }

    #[test]
    fn a_field_update_carries_the_whole_state_and_is_signed_when_asked() {
        let esp = CustomEsp::new(EspConfig {
            attribution_fields: Vec::new(),
            api_url: Some("http://esp.test/fields".into()),
            api_key: Some("k3y".into()),
            signing_secret: Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
            list_id: None,
            write_to: None,
        });
        let id = json!(123);
        let fields = vec![
            ("RH_CODE".to_string(), json!("ada90f39")),
            ("RH_TOTREF".to_string(), json!(4)),
            ("RH_COUPON".to_string(), Value::Null),
        ];
        let message = MessageId {
            id: "msg_1".into(),
            timestamp: 1614265330,
        };
        let request = esp.field_update(
            &FieldUpdate {
                email: "john.doe@email.com",
                esp_id: Some(&id),
                fields: &fields,
            },
            &message,
        );
        assert_eq!(
            (request.method, request.url.as_str()),
            ("POST", "http://esp.test/fields")
        );
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(
            body,
            json!({"email": "john.doe@email.com", "id": 123,
                "fields": {"RH_CODE": "ada90f39", "RH_TOTREF": 4, "RH_COUPON": null}})
        );
        let header = |name: &str| {
            request
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header("Authorization").as_deref(), Some("Bearer k3y"));
        assert_eq!(header("webhook-id").as_deref(), Some("msg_1"));
        assert_eq!(
            header("webhook-signature"),
            Some(standard_webhooks::signature(
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "msg_1",
                1614265330,
                &request.body
            ))
        );
        // Unsigned and anonymous unless configured.
        let plain = CustomEsp::new(EspConfig {
            api_url: Some("http://esp.test/fields".into()),
            ..EspConfig::default()
        })
        .field_update(
            &FieldUpdate {
                email: "a@b.co",
                esp_id: None,
                fields: &[],
            },
            &message,
        );
        assert_eq!(plain.headers.len(), 1);
        assert_eq!(plain.body, br#"{"email":"a@b.co","fields":{}}"#);
    }
}
