//! Writes to Ghost's Admin API: the member read, the bridge's note line and labels merged into
//! what is there, written back with a short-lived Admin API token.

use secrecy::ExposeSecret;
use serde_json::{json, Map, Value};

use super::{now_ms, Ghost};
use crate::outbound::{
    usual_verdict, Answer, FieldUpdate, MergeError, MessageId, OutboundEsp, OutboundRequest,
    WriteVerdict,
};

/// The start of the note line the bridge owns.
pub const NOTE_PREFIX: &str = "referral-bridge: ";

/// Ghost's limit on a member's note.
pub const NOTE_LIMIT: usize = 2000;

/// Ghost's limit on a label's name.
const LABEL_LIMIT: usize = 191;

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
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    use super::*;
    use crate::outbound::EspConfig;

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
