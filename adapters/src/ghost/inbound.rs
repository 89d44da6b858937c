//! Ghost's member webhooks: the signature checked, the event read from the webhook's shape.

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

use super::{now_ms, Ghost};
use crate::{Email, EspEvent, InboundEsp, InboundRequest, ParseError, Person, VerifyError};

/// How far a signature's `t` may be from now (milliseconds).
const TOLERANCE_MS: u64 = 5 * 60 * 1000;

impl InboundEsp for Ghost {
    fn credentials_hint(&self) -> &'static str {
        "Ghost signs its webhooks in `X-Ghost-Signature`: set ESP_WEBHOOK_SECRET to the webhook's secret"
    }

    fn credentials(&self) -> &'static [crate::WebhookCredential] {
        use crate::WebhookCredential;
        &[WebhookCredential::SignatureHeader("X-Ghost-Signature")]
    }

    fn name(&self) -> &'static str {
        "ghost"
    }

    fn verify(
        &self,
        request: &InboundRequest<'_>,
        secret: Option<&str>,
    ) -> Result<(), VerifyError> {
        let secret = secret.ok_or(VerifyError::NotConfigured)?;
        let header = request
            .header("x-ghost-signature")
            .ok_or(VerifyError::Missing)?;
        verify_signature(header, request.body, secret, now_ms())
    }

    fn parse(&self, request: &InboundRequest<'_>) -> Result<Vec<EspEvent>, ParseError> {
        parse_webhook(request.body).map(|event| vec![event])
    }
}

/// Checks `X-Ghost-Signature` (`sha256=<hex>, t=<ms>`) as of `now_ms`.
pub fn verify_signature(
    header: &[u8],
    body: &[u8],
    secret: &str,
    now_ms: i64,
) -> Result<(), VerifyError> {
    let header = std::str::from_utf8(header).map_err(|_| VerifyError::Wrong)?;
    let mut signature = None;
    let mut timestamp = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("sha256", hex)) => signature = crate::from_hex(hex.trim()),
            Some(("t", t)) => timestamp = Some(t.trim()),
            _ => {}
        }
    }
    let (signature, timestamp) = signature.zip(timestamp).ok_or(VerifyError::Wrong)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(body);
    mac.update(timestamp.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| VerifyError::Wrong)?;
    let sent: i64 = timestamp.parse().map_err(|_| VerifyError::Wrong)?;
    if now_ms.abs_diff(sent) > TOLERANCE_MS {
        return Err(VerifyError::Wrong);
    }
    Ok(())
}

fn is_empty(value: Option<&Value>) -> bool {
    value.is_none_or(|v| v.as_object().is_none_or(Map::is_empty))
}

/// Whether a member receives newsletters: `subscribed` where Ghost still sends it, else a
/// non-empty `newsletters`; `None` when neither is there.
fn subscribed(member: &Value) -> Option<bool> {
    member
        .get("subscribed")
        .and_then(Value::as_bool)
        .or_else(|| {
            member
                .get("newsletters")
                .and_then(Value::as_array)
                .map(|list| !list.is_empty())
        })
}

/// Reads one Ghost member webhook. Its event is in its shape: `previous` empty is
/// `member.added` (a signup, unless it takes no newsletter), `current` empty `member.deleted`
/// (a departure), both `member.edited`: an email change (`previous.email`), a newsletter
/// subscription ended or begun, or an update.
pub fn parse_webhook(body: &[u8]) -> Result<EspEvent, ParseError> {
    let value = ParseError::json(body)?;
    let member = value
        .get("member")
        .ok_or_else(|| ParseError("the webhook has no `member`".into()))?;
    let (current, previous) = (member.get("current"), member.get("previous"));
    let email_of = |m: &Value| -> Result<Email, ParseError> {
        let raw = m
            .get("email")
            .and_then(Value::as_str)
            .ok_or_else(|| ParseError("the member has no `email`".into()))?;
        Email::parse(raw).map_err(|_| ParseError("`email` is not a valid address".into()))
    };
    let person = |m: &Value| -> Result<Person, ParseError> {
        let name = m
            .get("name")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        Ok(Person {
            email: email_of(m)?,
            esp_id: m.get("id").filter(|id| id.is_string()).cloned(),
            first_name: name
                .as_deref()
                .and_then(|n| n.split_whitespace().next())
                .map(str::to_string),
            name,
        })
    };
    match (is_empty(current), is_empty(previous)) {
        (true, true) => Err(ParseError("the member webhook names no member".into())),
        // member.deleted
        (true, false) => Ok(EspEvent::Deleted {
            email: email_of(previous.expect("not empty"))?,
        }),
        // member.added
        (false, true) => {
            let current = current.expect("not empty");
            Ok(if subscribed(current) == Some(false) {
                EspEvent::Ignored {
                    event_type: "member.added without a newsletter".into(),
                }
            } else {
                EspEvent::Subscribed {
                    attribution: Default::default(),
                    person: person(current)?,
                    created_at: None,
                }
            })
        }
        // member.edited
        (false, false) => {
            let (current, previous) = (current.expect("not empty"), previous.expect("not empty"));
            let was = subscribed(previous);
            let now = subscribed(current);
            if previous.get("email").is_some() {
                let previous_email = previous
                    .get("email")
                    .and_then(Value::as_str)
                    .and_then(|e| Email::parse(e).ok());
                return Ok(EspEvent::Updated {
                    person: person(current)?,
                    previous_email,
                    updated_at: None,
                });
            }
            Ok(match (was, now) {
                (Some(true), Some(false)) => EspEvent::Unsubscribed {
                    email: email_of(current)?,
                },
                (Some(false), Some(true)) => EspEvent::Subscribed {
                    attribution: Default::default(),
                    person: person(current)?,
                    created_at: None,
                },
                _ => EspEvent::Updated {
                    person: person(current)?,
                    previous_email: None,
                    updated_at: None,
                },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn signatures_hash_the_body_then_the_timestamp() {
        let body = br#"{"member":{"current":{"email":"a@b.co"},"previous":{}}}"#;
        let t = "1700000000000";
        let mut mac = Hmac::<Sha256>::new_from_slice(b"ghost-secret").unwrap();
        mac.update(body);
        mac.update(t.as_bytes());
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let header = format!("sha256={hex}, t={t}");
        let now = 1_700_000_000_000;
        assert_eq!(
            verify_signature(header.as_bytes(), body, "ghost-secret", now + 1000),
            Ok(())
        );
        assert_eq!(
            verify_signature(header.as_bytes(), body, "ghost-secret", now + 400_000),
            Err(VerifyError::Wrong)
        );
        assert_eq!(
            verify_signature(header.as_bytes(), b"{}", "ghost-secret", now),
            Err(VerifyError::Wrong)
        );
        assert_eq!(
            verify_signature(header.as_bytes(), body, "other", now),
            Err(VerifyError::Wrong)
        );
    }

    #[test]
    fn member_events_are_read_from_their_shape() {
        // `fixtures/esp/ghost_webhook_member_edited.json` without its annotations.
        let edited =
            br#"{"member": {"current": {"id": "64f1", "uuid": "u", "email": "new@example.com",
            "name": "Jane", "note": null, "status": "free", "subscribed": true, "labels": [],
            "newsletters": [], "tiers": []}, "previous": {"email": "old@example.com"}}}"#;
        match parse_webhook(edited).unwrap() {
            EspEvent::Updated {
                person,
                previous_email,
                ..
            } => {
                assert_eq!(person.email.as_str(), "new@example.com");
                assert_eq!(previous_email.unwrap().as_str(), "old@example.com");
                assert_eq!(person.esp_id, Some(json!("64f1")));
            }
            other => panic!("{other:?}"),
        }
        let added = br#"{"member": {"current": {"id": "m1", "email": "a@b.co", "name": "Ann Lee",
            "newsletters": [{"id": "n1"}]}, "previous": {}}}"#;
        assert!(matches!(
            parse_webhook(added).unwrap(),
            EspEvent::Subscribed { person, .. } if person.first_name.as_deref() == Some("Ann")
        ));
        let left = br#"{"member": {"current": {"id": "m1", "email": "a@b.co", "newsletters": []},
            "previous": {"newsletters": [{"id": "n1"}]}}}"#;
        assert!(matches!(
            parse_webhook(left).unwrap(),
            EspEvent::Unsubscribed { .. }
        ));
        let deleted =
            br#"{"member": {"current": {}, "previous": {"id": "m1", "email": "a@b.co"}}}"#;
        assert!(matches!(
            parse_webhook(deleted).unwrap(),
            EspEvent::Deleted { .. }
        ));
    }
}
