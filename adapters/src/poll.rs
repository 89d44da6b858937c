//! ESPs that post no webhooks (listmonk) are polled: each subscriber changed since the last
//! poll, and what it means against what the bridge knew of them.

use serde_json::{json, Value};

use crate::{Email, EspEvent, Person};

/// One subscriber as a page of a poll gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Polled {
    /// The ESP's id.
    pub id: i64,
    /// Their address now.
    pub email: Email,
    /// Their name.
    pub name: Option<String>,
    /// Blocklisted, or unsubscribed from every list they were on.
    pub gone: bool,
    /// When it last changed, as the ESP wrote it (the next checkpoint).
    pub updated_at: String,
    /// The subscriber as received, for the inbox.
    pub raw: Value,
}

/// What a polled subscriber means, given the address the bridge knew them by (`None`: not
/// known) and whether it had them as subscribed.
pub fn event_for(polled: &Polled, known_email: Option<&str>, known_subscribed: bool) -> EspEvent {
    let person = || Person {
        email: polled.email.clone(),
        esp_id: Some(json!(polled.id)),
        first_name: polled
            .name
            .as_deref()
            .and_then(|n| n.split_whitespace().next())
            .map(str::to_string),
        name: polled.name.clone(),
    };
    match (known_email, polled.gone) {
        (None, true) => EspEvent::Ignored {
            event_type: "subscriber (never subscribed)".into(),
        },
        (None, false) => EspEvent::Subscribed {
            attribution: Default::default(),
            person: person(),
            created_at: None,
        },
        (Some(_), true) if !known_subscribed => EspEvent::Ignored {
            event_type: "subscriber (still unsubscribed)".into(),
        },
        (Some(email), true) => EspEvent::Unsubscribed {
            email: Email::parse(email).unwrap_or_else(|_| polled.email.clone()),
        },
        (Some(_), false) if !known_subscribed => EspEvent::Subscribed {
            attribution: Default::default(),
            person: person(),
            created_at: None,
        },
        (Some(email), false) => EspEvent::Updated {
            person: person(),
            previous_email: (email != polled.email.as_str())
                .then(|| Email::parse(email).ok())
                .flatten(),
            updated_at: None,
        },
    }
}
