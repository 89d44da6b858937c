//! Ghost (Admin API v5). In: member webhooks (`member.added`, `member.edited`,
//! `member.deleted`: `{"member": {"current", "previous"}}`), signed with
//! `X-Ghost-Signature: sha256=<hex HMAC-SHA256 of body followed by t>, t=<unix ms>`. Out: Ghost
//! has no custom fields, so the referral data goes into the member's `note` (one line,
//! `referral-bridge: {…}`, the rest of the note kept; Ghost allows 2,000 characters) and/or
//! `labels` (`RH_CODE: ab12cd`, the member's other labels kept), as `ESP_WRITE_TO` says: the
//! member is read (`GET /members/?filter=email:'…'`) and written back merged
//! (`PUT /members/{id}/`), with a short-lived Admin API JWT (`ESP_API_KEY` = `id:secret`).

use secrecy::ExposeSecret;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;

use crate::outbound::{
    usual_verdict, Answer, EspConfig, FieldUpdate, MergeError, MessageId, OutboundEsp,
    OutboundRequest, WriteVerdict,
};
use crate::{Email, EspEvent, InboundEsp, InboundRequest, ParseError, Person, VerifyError};

/// How far a signature's `t` may be from now (milliseconds).
const TOLERANCE_MS: u64 = 5 * 60 * 1000;

/// The start of the note line the bridge owns.
pub const NOTE_PREFIX: &str = "referral-bridge: ";

/// Ghost's limit on a member's note.
pub const NOTE_LIMIT: usize = 2000;

/// Ghost's limit on a label's name.
const LABEL_LIMIT: usize = 191;

/// The `ESP_RATE_LIMIT` used unless one is set. Ghost's Admin API: a modest pace (it publishes no limit).
pub const DEFAULT_RATE_LIMIT: &str = "10/1s";

/// The Ghost adapter.
#[derive(Debug, Default, Clone)]
pub struct Ghost {
    config: EspConfig,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// An Admin API token for `key` (`id:hex secret`) issued at `now` (unix seconds): HS256 with
/// the key id as `kid`, audience `/admin/`, valid 5 minutes.
pub fn admin_token(key: &str, now: i64) -> Option<String> {
    let (id, secret) = key.trim().split_once(':')?;
    // Ghost keys the signature with the secret's bytes, not its hex text.
    let secret = crate::from_hex(secret)?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(id.to_string());
    let claims = json!({"iat": now, "exp": now + 300, "aud": "/admin/"});
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    )
    .ok()
}

impl Ghost {
    /// The adapter, reaching Ghost as `config` says (`api_url`: the site's admin URL).
    pub fn new(config: EspConfig) -> Self {
        Ghost { config }
    }

    fn base(&self) -> String {
        let url = self.config.api_url.as_deref().unwrap_or_default();
        let url = url.trim_end_matches('/');
        if url.ends_with("/ghost/api/admin") {
            url.to_string()
        } else {
            format!("{url}/ghost/api/admin")
        }
    }

    fn request(&self, method: &'static str, rest: &str, body: Option<Value>) -> OutboundRequest {
        let now = now_ms() / 1000;
        let token = self
            .config
            .api_key
            .as_ref()
            .and_then(|key| admin_token(key.expose_secret(), now))
            .unwrap_or_default();
        let mut headers = vec![
            ("Authorization".into(), format!("Ghost {token}")),
            ("Accept-Version".into(), "v5.0".into()),
        ];
        if body.is_some() {
            headers.push(("Content-Type".into(), "application/json".into()));
        }
        OutboundRequest {
            method,
            url: format!("{}/{rest}", self.base()),
            headers,
            body: body.map_or_else(Vec::new, |b| b.to_string().into_bytes()),
        }
    }

    fn writes_note(&self) -> bool {
        self.config
            .write_to
            .as_deref()
            .is_none_or(|places| places.split(',').any(|p| p.trim() == "note"))
    }

    fn writes_labels(&self) -> bool {
        self.config
            .write_to
            .as_deref()
            .is_some_and(|places| places.split(',').any(|p| p.trim() == "labels"))
    }

    /// The member's new note and labels: the bridge's own line and labels replaced, the rest
    /// kept. `Err` when the note would pass Ghost's limit.
    fn merged(&self, update: &FieldUpdate<'_>, member: &Value) -> Result<Value, String> {
        let known: Vec<&(String, Value)> =
            update.fields.iter().filter(|(_, v)| !v.is_null()).collect();
        let mut member_update = Map::new();
        if self.writes_note() {
            let data: Map<String, Value> = known
                .iter()
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect();
            let mut lines: Vec<String> = member
                .get("note")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .lines()
                .filter(|line| !line.starts_with(NOTE_PREFIX))
                .map(str::to_string)
                .collect();
            while lines.last().is_some_and(|l| l.trim().is_empty()) {
                lines.pop();
            }
            lines.push(format!("{NOTE_PREFIX}{}", Value::Object(data)));
            let note = lines.join("\n");
            if note.chars().count() > NOTE_LIMIT {
                return Err(format!(
                    "the member's note would be {} characters, over Ghost's {NOTE_LIMIT}: \
                     shorten the note, or write fewer fields (ESP_FIELD_*=off)",
                    note.chars().count()
                ));
            }
            member_update.insert("note".into(), note.into());
        }
        if self.writes_labels() {
            let ours = |name: &str| {
                update
                    .fields
                    .iter()
                    .any(|(field, _)| name.starts_with(&format!("{field}: ")))
            };
            let mut labels: Vec<Value> = member
                .get("labels")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|label| label.get("name").and_then(Value::as_str))
                .filter(|name| !ours(name))
                .map(|name| json!({ "name": name }))
                .collect();
            for (field, value) in &known {
                let text = value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_string);
                let name: String = format!("{field}: {text}")
                    .chars()
                    .take(LABEL_LIMIT)
                    .collect();
                labels.push(json!({ "name": name }));
            }
            member_update.insert("labels".into(), labels.into());
        }
        Ok(json!({ "members": [Value::Object(member_update)] }))
    }
}

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

impl OutboundEsp for Ghost {
    fn outbound_problem(&self) -> Option<String> {
        if self.config.api_url.is_none() {
            return Some(
                "ESP_API_URL is not set: Ghost notes/labels are queued, and written once it names \
                 the site's admin URL (https://<site>)"
                    .into(),
            );
        }
        match self.config.api_key.as_ref().map(|k| k.expose_secret()) {
            Some(key) if admin_token(key, 0).is_some() => None,
            Some(_) => Some(
                "ESP_API_KEY is not a Ghost Admin API key (`<id>:<hex secret>`, from a custom \
                 integration): Ghost writes are queued until it is"
                    .into(),
            ),
            None => Some(
                "ESP_API_KEY is not set: Ghost notes/labels are queued, and written once it holds \
                 an Admin API key"
                    .into(),
            ),
        }
    }

    fn field_update(&self, update: &FieldUpdate<'_>, _: &MessageId) -> OutboundRequest {
        // Without a read first (not how the bridge calls it): the bridge's data alone.
        let body = self
            .merged(update, &Value::Null)
            .unwrap_or_else(|_| json!({"members": [{}]}));
        let id = update
            .esp_id
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        self.request(
            "PUT",
            &format!("members/{}/", crate::encode_component(&id)),
            Some(body),
        )
    }

    fn read_answer(&self, answer: &Answer<'_>) -> WriteVerdict {
        usual_verdict(answer)
    }

    fn read_before_write(&self, email: &str) -> Option<OutboundRequest> {
        // Ghost's NQL filter: the address quoted, a quote in it escaped.
        let filter = format!("email:'{}'", email.replace('\'', "\\'"));
        Some(self.request(
            "GET",
            &format!(
                "members/?filter={}&limit=1",
                crate::encode_component(&filter)
            ),
            None,
        ))
    }

    fn merged_update(
        &self,
        update: &FieldUpdate<'_>,
        _: &MessageId,
        current: &Answer<'_>,
    ) -> Result<OutboundRequest, MergeError> {
        let body = crate::outbound::read_json(current, "member")?;
        let member = body
            .get("members")
            .and_then(Value::as_array)
            .and_then(|m| m.first())
            .ok_or(MergeError::NotThereYet)?;
        let id = member
            .get("id")
            .and_then(Value::as_str)
            .ok_or(MergeError::NotThereYet)?;
        let merged = self.merged(update, member).map_err(MergeError::Failed)?;
        Ok(self.request(
            "PUT",
            &format!("members/{}/", crate::encode_component(id)),
            Some(merged),
        ))
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    use super::*;

    const KEY: &str =
        "6489ab5c7f8d2e0001a1b2c3:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn ghost(write_to: Option<&str>) -> Ghost {
        Ghost::new(EspConfig {
            attribution_fields: Vec::new(),
            api_url: Some("http://ghost.test".into()),
            api_key: Some(KEY.into()),
            signing_secret: None,
            list_id: None,
            write_to: write_to.map(str::to_string),
        })
    }

    #[test]
    fn admin_tokens_are_hs256_jwts_with_the_key_id() {
        let token = admin_token(KEY, 1_700_000_000).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(
            header,
            json!({"alg": "HS256", "typ": "JWT", "kid": "6489ab5c7f8d2e0001a1b2c3"})
        );
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            json!({"iat": 1_700_000_000, "exp": 1_700_000_300, "aud": "/admin/"})
        );
        // The signature is keyed with the secret's bytes (hex-decoded), not its text.
        let mut mac = Hmac::<Sha256>::new_from_slice(
            &crate::from_hex(KEY.split_once(':').unwrap().1).unwrap(),
        )
        .unwrap();
        mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
        assert_eq!(
            URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
            mac.finalize().into_bytes().to_vec()
        );
        assert!(admin_token("no-colon", 0).is_none());
        assert!(ghost(None).outbound_problem().is_none());
    }

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

    #[test]
    fn writes_merge_into_the_note_and_labels_keeping_the_rest() {
        let fields = vec![
            ("RH_CODE".to_string(), json!("ab12cd")),
            ("RH_TOTREF".to_string(), json!(3)),
            ("RH_COUPON".to_string(), Value::Null),
        ];
        let update = FieldUpdate {
            email: "a@b.co",
            esp_id: None,
            fields: &fields,
        };
        let message = MessageId {
            id: "m".into(),
            timestamp: 0,
        };
        let read = r#"{"members": [{"id": "m1", "email": "a@b.co",
            "note": "VIP reader\nreferral-bridge: {\"RH_CODE\":\"old\"}",
            "labels": [{"id": "l1", "name": "Podcast", "slug": "podcast"},
                       {"id": "l2", "name": "RH_CODE: old", "slug": "rh-code-old"}]}]}"#;
        let answer = Answer {
            status: 200,
            retry_after: None,
            body: read,
        };
        let both = ghost(Some("note,labels"));
        let request = both.merged_update(&update, &message, &answer).unwrap();
        assert_eq!(request.method, "PUT");
        assert_eq!(request.url, "http://ghost.test/ghost/api/admin/members/m1/");
        assert_eq!(
            serde_json::from_slice::<Value>(&request.body).unwrap(),
            json!({"members": [{
                "note": "VIP reader\nreferral-bridge: {\"RH_CODE\":\"ab12cd\",\"RH_TOTREF\":3}",
                "labels": [{"name": "Podcast"}, {"name": "RH_CODE: ab12cd"}, {"name": "RH_TOTREF: 3"}]}]})
        );
        assert!(request
            .headers
            .iter()
            .any(|(k, v)| k == "Authorization" && v.starts_with("Ghost ey")));
        // The note alone by default; no member yet; a note that would pass 2,000 characters.
        let note_only = ghost(None)
            .merged_update(&update, &message, &answer)
            .unwrap();
        let body: Value = serde_json::from_slice(&note_only.body).unwrap();
        assert!(body["members"][0].get("labels").is_none());
        let none = Answer {
            status: 200,
            retry_after: None,
            body: r#"{"members": [], "meta": {}}"#,
        };
        assert_eq!(
            ghost(None).merged_update(&update, &message, &none),
            Err(MergeError::NotThereYet)
        );
        let long = format!(
            r#"{{"members": [{{"id": "m1", "note": "{}"}}]}}"#,
            "x".repeat(1990)
        );
        let long = Answer {
            status: 200,
            retry_after: None,
            body: &long,
        };
        assert!(matches!(
            ghost(None).merged_update(&update, &message, &long),
            Err(MergeError::Failed(reason)) if reason.contains("2000")
        ));
        let read = ghost(None).read_before_write("o'neil@b.co").unwrap();
        assert_eq!(
            read.url,
            "http://ghost.test/ghost/api/admin/members/?filter=email%3A%27o%5C%27neil%40b.co%27&limit=1"
        );
    }
}
