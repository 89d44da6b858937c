//! SparkLoop's incoming webhook: the `subscribe` / `update` / `unsubscribe` bodies of its custom
//! integration document, with optional keys left out when unknown.

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
}
