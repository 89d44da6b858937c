//! The custom ESP: the JSON events of SparkLoop's "custom integration" document
//! (`subscribe`, `update`, `unsubscribe`), posted by the newsletter's own ESP or glue code.

use serde_json::{Map, Value};

use crate::{
    secrets_match, Email, EspEvent, InboundEsp, InboundRequest, ParseError, Person, VerifyError,
};

/// The custom ESP adapter: `Authorization: Bearer <secret>` or `?token=<secret>`, and the seed's
/// JSON shapes.
#[derive(Debug, Default, Clone, Copy)]
pub struct CustomEsp;

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
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ParseError(format!("the body is not valid JSON: {e}")))?;
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
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(invalid),
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
        let EspEvent::Subscribed { person, created_at } = event else {
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
        let esp = CustomEsp;
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
}
