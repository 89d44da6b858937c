//! SparkLoop as a destination. Jobs carry the `subscribe` / `update` / `unsubscribe` bodies of
//! its custom integration document (optional keys left out when unknown), which webhook mode
//! posts as they are and API mode translates into API v2 calls when it sends them, so that a
//! queue filled in one mode can be delivered in the other.

use referral_bridge_adapters::EspEvent;
use serde_json::{json, Map, Value};

/// The destination name of jobs for SparkLoop.
pub const DESTINATION: &str = "sparkloop";

/// The job kind and JSON body that forward `event` to SparkLoop's incoming webhook, or `None`
/// for an event SparkLoop is not told about.
pub fn webhook_payload(event: &EspEvent) -> Option<(&'static str, String)> {
    let (kind, subscriber) = match event {
        EspEvent::Subscribed { person, created_at } => {
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
        EspEvent::Unsubscribed { email } => {
            let mut s = Map::new();
            s.insert("email".into(), json!(email.as_str()));
            ("unsubscribe", s)
        }
        EspEvent::Ignored { .. } => return None,
    };
    let body = json!({"type": kind, "subscriber": subscriber});
    Some((kind, body.to_string()))
}

/// An API v2 call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiCall {
    /// `POST` or `PUT`.
    pub method: &'static str,
    /// The whole URL.
    pub url: String,
    /// The JSON body.
    pub body: String,
}

/// The API v2 call that carries a job's webhook-shaped `payload` (DESIGN 3.4): subscribe is
/// `POST /v2/subscribers` with `email`, `name` and `created_at` (ISO 8601, in the past for an
/// import); an email change `PUT /v2/subscribers/{previous email}` with the new `email`; a name
/// change `PUT /v2/subscribers/{email}`; unsubscribe `PUT /v2/subscribers/{email}/unsubscribe`.
pub fn api_call(api_url: &str, kind: &str, payload: &str) -> Result<ApiCall, String> {
    let body: Value =
        serde_json::from_str(payload).map_err(|e| format!("the job's body is not JSON: {e}"))?;
    let subscriber = &body["subscriber"];
    let text = |key: &str| subscriber[key].as_str().map(str::to_string);
    let email = text("email").ok_or("the job's body has no subscriber email")?;
    let name = text("name").or_else(|| text("first_name"));
    let url = |segments: &[&str]| -> Result<String, String> {
        let mut url = reqwest::Url::parse(api_url)
            .map_err(|e| format!("SPARKLOOP_API_URL is not a URL: {e}"))?;
        url.path_segments_mut()
            .map_err(|_| "SPARKLOOP_API_URL cannot take a path".to_string())?
            .pop_if_empty()
            .extend(["v2", "subscribers"])
            .extend(segments);
        Ok(url.to_string())
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
            ApiCall {
                method: "POST",
                url: url(&[])?,
                body: Value::Object(fields).to_string(),
            }
        }
        "update" => {
            let identifier = text("previous_email").unwrap_or_else(|| email.clone());
            fields.insert("email".into(), json!(email));
            insert_some(&mut fields, "name", name.map(Value::from));
            ApiCall {
                method: "PUT",
                url: url(&[&identifier])?,
                body: Value::Object(fields).to_string(),
            }
        }
        "unsubscribe" => ApiCall {
            method: "PUT",
            url: url(&[&email, "unsubscribe"])?,
            body: "{}".into(),
        },
        other => return Err(format!("SparkLoop's API has no call for a `{other}` job")),
    })
}

/// Whether an API v2 refusal means the call's effect is already there: a subscribe for an
/// address SparkLoop has ("Email has already been taken"), an unsubscribe of someone already
/// unsubscribed (409).
pub fn already_done(kind: &str, status: u16, body: &str) -> bool {
    match (kind, status) {
        ("subscribe", 400 | 422) => body.contains("has already been taken"),
        ("unsubscribe", 409) => true,
        _ => false,
    }
}

fn insert_some(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        map.insert(key.into(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use referral_bridge_adapters::{Email, Person};

    #[test]
    fn unknown_values_are_left_out() {
        let event = EspEvent::Subscribed {
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
        let api = "http://sparkloop.test";
        let call = api_call(
            api,
            "subscribe",
            r#"{"type":"subscribe","subscriber":{"email":"a+b@example.com","id":1,"first_name":"Ann","created_at":1564400550}}"#,
        )
        .unwrap();
        assert_eq!(call.method, "POST");
        assert_eq!(call.url, "http://sparkloop.test/v2/subscribers");
        assert_eq!(
            serde_json::from_str::<Value>(&call.body).unwrap(),
            json!({"email": "a+b@example.com", "name": "Ann", "created_at": "2019-07-29T11:42:30Z"})
        );
        let call = api_call(
            "http://sparkloop.test/",
            "update",
            r#"{"type":"update","subscriber":{"email":"new@example.com","previous_email":"old+x@example.com"}}"#,
        )
        .unwrap();
        assert_eq!(
            (call.method, call.url.as_str()),
            (
                "PUT",
                "http://sparkloop.test/v2/subscribers/old+x@example.com"
            )
        );
        assert_eq!(call.body, r#"{"email":"new@example.com"}"#);
        let call = api_call(
            api,
            "unsubscribe",
            r#"{"type":"unsubscribe","subscriber":{"email":"a b@example.com"}}"#,
        )
        .unwrap();
        assert_eq!(
            call.url,
            "http://sparkloop.test/v2/subscribers/a%20b@example.com/unsubscribe"
        );
        assert!(already_done(
            "subscribe",
            400,
            r#"{"error":"Email has already been taken"}"#
        ));
        assert!(!already_done(
            "subscribe",
            400,
            r#"{"error":"Email is invalid"}"#
        ));
        assert!(already_done("unsubscribe", 409, ""));
    }
}
