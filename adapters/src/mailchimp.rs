//! Mailchimp (Marketing API v3). In: the list webhook, `application/x-www-form-urlencoded` with
//! PHP-style bracket keys, unsigned, so the secret travels as `?token=`. Out: a partial update of
//! the member's merge fields, `PATCH /3.0/lists/{ESP_LIST_ID}/members/{md5 of the lower-cased
//! email}` (`ESP_API_URL` is the base with `/3.0`), with HTTP Basic authentication (any user name, the API key as password).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use md5::{Digest, Md5};
use secrecy::ExposeSecret;
use serde_json::{json, Map, Value};

use crate::outbound::ContactPage;
use crate::outbound::{
    usual_verdict, Answer, EspConfig, FieldUpdate, MessageId, OutboundEsp, OutboundRequest,
    WriteVerdict,
};
use crate::{
    form_pairs, secrets_match, Email, EspEvent, InboundEsp, InboundRequest, ParseError, Person,
    VerifyError,
};

/// Merge tags are at most this long.
const TAG_LENGTH: usize = 10;

/// The `ESP_RATE_LIMIT` used unless one is set. Mailchimp limits connections (10 at once), not
/// a rate; 10 calls a second keeps well within it for calls of about a second or less.
pub const DEFAULT_RATE_LIMIT: &str = "10/1s";

/// The Mailchimp adapter.
#[derive(Debug, Default, Clone)]
pub struct Mailchimp {
    config: EspConfig,
}

impl Mailchimp {
    /// The adapter, reaching Mailchimp as `config` says.
    pub fn new(config: EspConfig) -> Self {
        Mailchimp { config }
    }

    /// The API base, version included: `ESP_API_URL`, else the data centre named by the key's
    /// suffix (`…-us6` → `https://us6.api.mailchimp.com/3.0`).
    fn base(&self) -> Option<String> {
        if let Some(url) = &self.config.api_url {
            return Some(url.trim_end_matches('/').to_string());
        }
        let key = self.config.api_key.as_ref().map(|k| k.expose_secret())?;
        let (_, dc) = key.rsplit_once('-')?;
        dc.chars()
            .all(|c| c.is_ascii_alphanumeric())
            .then(|| format!("https://{dc}.api.mailchimp.com/3.0"))
    }
}

/// Mailchimp's member id: the lower-case hex MD5 of the lower-cased address.
pub fn subscriber_hash(email: &str) -> String {
    hex_lower(&Md5::digest(email.trim().to_lowercase().as_bytes()))
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A field name as a merge tag: upper case, at most 10 characters (`RH_LASTREWARD` is written
/// `RH_LASTREW`).
pub fn merge_tag(name: &str) -> String {
    name.to_uppercase().chars().take(TAG_LENGTH).collect()
}

impl OutboundEsp for Mailchimp {
    fn outbound_problem(&self) -> Option<String> {
        if self.config.api_key.is_none() {
            return Some(
                "ESP_API_KEY is not set: Mailchimp merge fields are queued, and written once it \
                 holds an API key"
                    .into(),
            );
        }
        if self.config.list_id.is_none() {
            return Some(
                "ESP_LIST_ID is not set: Mailchimp merge fields are queued, and written once it \
                 names the audience"
                    .into(),
            );
        }
        self.base().is_none().then(|| {
            "ESP_API_URL is not set and ESP_API_KEY has no data-centre suffix (like -us6)".into()
        })
    }

    fn field_update(&self, update: &FieldUpdate<'_>, _: &MessageId) -> OutboundRequest {
        let merge_fields = merge_fields(update);
        let url = format!(
            "{}/lists/{}/members/{}",
            self.base().unwrap_or_default(),
            self.config.list_id.as_deref().unwrap_or_default(),
            subscriber_hash(update.email)
        );
        let credentials = basic_auth(self.config.key());
        OutboundRequest {
            method: "PATCH",
            url,
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("Authorization".into(), credentials),
            ],
            body: json!({ "merge_fields": merge_fields })
                .to_string()
                .into_bytes(),
        }
    }

    fn read_answer(&self, answer: &Answer<'_>) -> WriteVerdict {
        usual_verdict(answer)
    }

    /// `GET /lists/{id}/members?count=1000&offset=N`, only the addresses and merge fields.
    fn list_contacts(&self, cursor: Option<&str>) -> Option<OutboundRequest> {
        let offset = cursor.unwrap_or("0");
        Some(self.call(
            "GET",
            &format!(
                "members?count={}&offset={offset}&fields=members.email_address,members.merge_fields,total_items",
                crate::outbound::CONTACTS_PER_PAGE
            ),
            Vec::new(),
        ))
    }

    fn read_contacts(
        &self,
        answer: &Answer<'_>,
        cursor: Option<&str>,
    ) -> Result<ContactPage, String> {
        crate::outbound::offset_page(
            answer,
            cursor,
            ("members", "email_address", "merge_fields", "total_items"),
        )
    }

    fn field_key(&self, name: &str) -> String {
        merge_tag(name)
    }

    fn max_batch(&self) -> usize {
        // `POST /lists/{id}` takes at most 500 members.
        500
    }

    fn batch_update(&self, updates: &[FieldUpdate<'_>]) -> Option<OutboundRequest> {
        // Members that exist are updated (only the merge fields sent); one that does not
        // exist is refused for want of a status, reported in `errors`, and written alone later.
        let members: Vec<Value> = updates
            .iter()
            .map(|update| json!({"email_address": update.email, "merge_fields": merge_fields(update)}))
            .collect();
        let body = json!({"members": members, "update_existing": true});
        Some(self.call_list("POST", body.to_string().into_bytes()))
    }

    fn read_batch(&self, answer: &Answer<'_>, emails: &[&str]) -> Vec<Result<(), String>> {
        let errors: Vec<(String, String)> = serde_json::from_str::<Value>(answer.body)
            .ok()
            .and_then(|v| v["errors"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|e| {
                let email = e["email_address"].as_str()?.to_lowercase();
                let reason = e["error"].as_str().unwrap_or("refused").to_string();
                Some((email, reason))
            })
            .collect();
        emails
            .iter()
            .map(
                |email| match errors.iter().find(|(e, _)| e.eq_ignore_ascii_case(email)) {
                    Some((_, reason)) => Err(reason.clone()),
                    None => Ok(()),
                },
            )
            .collect()
    }

    fn max_connections(&self) -> Option<usize> {
        // Mailchimp answers 429 beyond 10 simultaneous connections per user.
        Some(10)
    }

    fn list_fields(&self) -> Option<OutboundRequest> {
        Some(self.call(
            "GET",
            "merge-fields?count=1000&fields=merge_fields.tag,merge_fields.required",
            Vec::new(),
        ))
    }

    fn required_fields(&self, answer: &Answer<'_>) -> Vec<String> {
        let Ok(value) = serde_json::from_str::<Value>(answer.body) else {
            return Vec::new();
        };
        value["merge_fields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|field| field["required"] == Value::Bool(true))
            .filter_map(|field| field["tag"].as_str().map(str::to_string))
            .collect()
    }

    fn read_fields(&self, answer: &Answer<'_>) -> Result<Vec<String>, String> {
        crate::outbound::strings_at(answer.body, &["merge_fields", "*", "tag"])
    }

    fn create_field(&self, name: &str, numeric: bool) -> Option<OutboundRequest> {
        // Values are written as text; a number field takes text digits too.
        let body = json!({"tag": merge_tag(name), "name": name,
            "type": if numeric { "number" } else { "text" }, "required": false, "public": false});
        Some(self.call("POST", "merge-fields", body.to_string().into_bytes()))
    }
}

/// An update's merge fields: Mailchimp's merge values are text; a value not known yet is left
/// out rather than written empty over what the field holds.
fn merge_fields(update: &FieldUpdate<'_>) -> Map<String, Value> {
    update
        .fields
        .iter()
        .filter_map(|(name, value)| {
            let text = match value {
                Value::Null => return None,
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Some((merge_tag(name), Value::String(text)))
        })
        .collect()
}

impl Mailchimp {
    /// A call under the audience: `{base}/lists/{ESP_LIST_ID}/{rest}`.
    fn call(&self, method: &'static str, rest: &str, body: Vec<u8>) -> OutboundRequest {
        let mut request = self.call_list(method, body);
        request.url = format!("{}/{rest}", request.url);
        request
    }

    /// A call on the audience itself: `{base}/lists/{ESP_LIST_ID}`.
    fn call_list(&self, method: &'static str, body: Vec<u8>) -> OutboundRequest {
        OutboundRequest {
            method,
            url: format!(
                "{}/lists/{}",
                self.base().unwrap_or_default(),
                self.config.list_id.as_deref().unwrap_or_default()
            ),
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("Authorization".into(), basic_auth(self.config.key())),
            ],
            body,
        }
    }
}

/// HTTP Basic credentials for an API key: Mailchimp takes any user name.
fn basic_auth(key: &str) -> String {
    format!(
        "Basic {}",
        STANDARD.encode(format!("referral-bridge:{key}"))
    )
}

impl InboundEsp for Mailchimp {
    fn credentials_hint(&self) -> &'static str {
        "Mailchimp webhooks carry no headers of ours: add `?token=<ESP_WEBHOOK_SECRET>` to the webhook URL set in Mailchimp"
    }

    fn credentials(&self) -> &'static [crate::WebhookCredential] {
        use crate::WebhookCredential;
        &[WebhookCredential::QueryToken]
    }

    fn name(&self) -> &'static str {
        "mailchimp"
    }

    fn verify(
        &self,
        request: &InboundRequest<'_>,
        secret: Option<&str>,
    ) -> Result<(), VerifyError> {
        let secret = secret.ok_or(VerifyError::NotConfigured)?;
        match request.query_param("token") {
            None => Err(VerifyError::Missing),
            Some(token) if secrets_match(token.as_bytes(), secret.as_bytes()) => Ok(()),
            Some(_) => Err(VerifyError::Wrong),
        }
    }

    fn parse(&self, request: &InboundRequest<'_>) -> Result<Vec<EspEvent>, ParseError> {
        let mut event = parse_webhook(request.body)?;
        if self.config.attribution_fields.is_empty() {
            return Ok(vec![event]);
        }
        if let EspEvent::Subscribed { attribution, .. } = &mut event {
            // The merge fields come as `data[merges][NAME]`.
            let pairs = crate::form_pairs(request.body)?;
            *attribution = self.config.attribution(|name| {
                let key = format!("data[merges][{name}]");
                pairs
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.as_str())
            });
        }
        Ok(vec![event])
    }
}

/// Reads one Mailchimp list webhook: `subscribe`, `profile`, `upemail` (an email change),
/// `unsubscribe` and `cleaned` (an address that bounced: the person is gone all the same);
/// other types (`campaign`) are ignored.
pub fn parse_webhook(body: &[u8]) -> Result<EspEvent, ParseError> {
    let pairs = form_pairs(body)?;
    let get = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    let event_type = get("type").ok_or_else(|| {
        ParseError("the body is not a Mailchimp webhook: it has no `type`".into())
    })?;
    let email = |key: &str| -> Result<Email, ParseError> {
        let raw = get(key).ok_or_else(|| ParseError(format!("the webhook has no `{key}`")))?;
        Email::parse(raw).map_err(|_| ParseError(format!("`{key}` is not a valid email address")))
    };
    let fired_at = get("fired_at").and_then(|at| {
        humantime::parse_rfc3339_weak(at)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64)
    });
    let person = |email: Email, id_key: &str| {
        let first = get("data[merges][FNAME]").map(str::to_string);
        let last = get("data[merges][LNAME]");
        let name = match (&first, last) {
            (Some(first), Some(last)) => Some(format!("{first} {last}")),
            (None, Some(last)) => Some(last.to_string()),
            _ => None,
        };
        Person {
            email,
            esp_id: get(id_key).map(|id| Value::from(id.to_string())),
            first_name: first,
            name,
        }
    };
    Ok(match event_type {
        "subscribe" => EspEvent::Subscribed {
            attribution: Default::default(),
            person: person(email("data[email]")?, "data[id]"),
            created_at: fired_at,
        },
        "profile" => EspEvent::Updated {
            person: person(email("data[email]")?, "data[id]"),
            previous_email: None,
            updated_at: fired_at,
        },
        "upemail" => EspEvent::Updated {
            person: Person {
                email: email("data[new_email]")?,
                esp_id: get("data[new_id]").map(|id| Value::from(id.to_string())),
                first_name: None,
                name: None,
            },
            previous_email: Some(email("data[old_email]")?),
            updated_at: fired_at,
        },
        "unsubscribe" | "cleaned" => EspEvent::Unsubscribed {
            email: email("data[email]")?,
        },
        other => EspEvent::Ignored {
            event_type: other.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The raw bodies of Mailchimp's documented webhook examples.
    const SUBSCRIBE: &str = "type=subscribe&fired_at=2009-03-26+21%3A35%3A57&data%5Bid%5D=8a25ff1d98&data%5Blist_id%5D=a6b5da1054&data%5Bemail%5D=api%40mailchimp.com&data%5Bemail_type%5D=html&data%5Bmerges%5D%5BEMAIL%5D=api%40mailchimp.com&data%5Bmerges%5D%5BFNAME%5D=Mailchimp&data%5Bmerges%5D%5BLNAME%5D=API&data%5Bmerges%5D%5BINTERESTS%5D=Group1%2CGroup2&data%5Bip_opt%5D=10.20.10.30&data%5Bip_signup%5D=10.20.10.30";
    const UNSUBSCRIBE: &str = "type=unsubscribe&fired_at=2009-03-26+21%3A40%3A57&data%5Baction%5D=unsub&data%5Breason%5D=manual&data%5Bid%5D=8a25ff1d98&data%5Blist_id%5D=a6b5da1054&data%5Bemail%5D=api%2Bunsub%40mailchimp.com&data%5Bemail_type%5D=html&data%5Bmerges%5D%5BEMAIL%5D=api%2Bunsub%40mailchimp.com&data%5Bmerges%5D%5BFNAME%5D=Mailchimp&data%5Bmerges%5D%5BLNAME%5D=API&data%5Bmerges%5D%5BINTERESTS%5D=Group1%2CGroup2&data%5Bip_opt%5D=10.20.10.30&data%5Bcampaign_id%5D=cb398d21d2";
    const PROFILE: &str = "type=profile&fired_at=2009-03-26+21%3A31%3A21&data%5Bid%5D=8a25ff1d98&data%5Blist_id%5D=a6b5da1054&data%5Bemail%5D=api%40mailchimp.com&data%5Bemail_type%5D=html&data%5Bmerges%5D%5BEMAIL%5D=api%40mailchimp.com&data%5Bmerges%5D%5BFNAME%5D=Mailchimp&data%5Bmerges%5D%5BLNAME%5D=API&data%5Bmerges%5D%5BINTERESTS%5D=Group1%2CGroup2&data%5Bip_opt%5D=10.20.10.30";
    const UPEMAIL: &str = "type=upemail&fired_at=2009-03-26+22%3A15%3A09&data%5Blist_id%5D=a6b5da1054&data%5Bnew_id%5D=51da8c3259&data%5Bnew_email%5D=api%2Bnew%40mailchimp.com&data%5Bold_email%5D=api%2Bold%40mailchimp.com";
    const CLEANED: &str = "type=cleaned&fired_at=2009-03-26+22%3A01%3A00&data%5Blist_id%5D=a6b5da1054&data%5Bcampaign_id%5D=4fjk2ma9xd&data%5Breason%5D=hard&data%5Bemail%5D=api%2Bcleaned%40mailchimp.com";

    fn parse(body: &str) -> EspEvent {
        parse_webhook(body.as_bytes()).unwrap()
    }

    #[test]
    fn the_documented_webhooks_are_understood() {
        let EspEvent::Subscribed {
            person, created_at, ..
        } = parse(SUBSCRIBE)
        else {
            panic!("not a subscribe")
        };
        assert_eq!(person.email.as_str(), "api@mailchimp.com");
        assert_eq!(person.esp_id, Some(json!("8a25ff1d98")));
        assert_eq!(person.first_name.as_deref(), Some("Mailchimp"));
        assert_eq!(person.name.as_deref(), Some("Mailchimp API"));
        assert_eq!(created_at, Some(1238103357));
        assert!(matches!(
            parse(PROFILE),
            EspEvent::Updated {
                previous_email: None,
                ..
            }
        ));
        let EspEvent::Updated {
            person,
            previous_email,
            ..
        } = parse(UPEMAIL)
        else {
            panic!("not an update")
        };
        assert_eq!(person.email.as_str(), "api+new@mailchimp.com");
        assert_eq!(previous_email.unwrap().as_str(), "api+old@mailchimp.com");
        for (body, email) in [
            (UNSUBSCRIBE, "api+unsub@mailchimp.com"),
            (CLEANED, "api+cleaned@mailchimp.com"),
        ] {
            assert_eq!(
                parse(body),
                EspEvent::Unsubscribed {
                    email: Email::parse(email).unwrap()
                }
            );
        }
        assert!(matches!(
            parse("type=campaign&data%5Bid%5D=1"),
            EspEvent::Ignored { .. }
        ));
        assert!(parse_webhook(b"data%5Bemail%5D=a%40b.co").is_err());
        assert!(parse_webhook(b"type=subscribe&data%5Bemail%5D=nope").is_err());
    }

    #[test]
    fn the_secret_travels_as_a_query_token() {
        let request = |query| InboundRequest {
            query,
            headers: &[],
            body: SUBSCRIBE.as_bytes(),
        };
        let mailchimp = Mailchimp::default();
        assert_eq!(
            mailchimp.verify(&request("token=s3cret"), Some("s3cret")),
            Ok(())
        );
        assert_eq!(
            mailchimp.verify(&request("token=nope"), Some("s3cret")),
            Err(VerifyError::Wrong)
        );
        assert_eq!(
            mailchimp.verify(&request(""), Some("s3cret")),
            Err(VerifyError::Missing)
        );
    }

    #[test]
    fn a_field_update_patches_the_member_by_hash_with_short_text_tags() {
        assert_eq!(
            subscriber_hash("Jane.Doe@Example.com"),
            "0cba00ca3da1b283a57287bcceb17e35"
        );
        let mailchimp = Mailchimp::new(EspConfig {
            api_key: Some("0123abcd-us6".into()),
            list_id: Some("a6b5da1054".into()),
            ..EspConfig::default()
        });
        assert_eq!(mailchimp.outbound_problem(), None);
        let fields = vec![
            ("RH_CODE".to_string(), json!("ab12cd")),
            ("RH_TOTREF".to_string(), json!(3)),
            ("RH_LASTREWARD".to_string(), json!("rew_123")),
            ("RH_COUPON".to_string(), Value::Null),
        ];
        let request = mailchimp.field_update(
            &FieldUpdate {
                email: "jane.doe@example.com",
                esp_id: None,
                fields: &fields,
            },
            &MessageId {
                id: "m".into(),
                timestamp: 0,
            },
        );
        assert_eq!(request.method, "PATCH");
        assert_eq!(
            request.url,
            "https://us6.api.mailchimp.com/3.0/lists/a6b5da1054/members/0cba00ca3da1b283a57287bcceb17e35"
        );
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(
            body,
            json!({"merge_fields": {"RH_CODE": "ab12cd", "RH_TOTREF": "3", "RH_LASTREW": "rew_123"}})
        );
        assert!(request.headers.contains(&(
            "Authorization".into(),
            format!("Basic {}", STANDARD.encode("referral-bridge:0123abcd-us6"))
        )));
        assert!(Mailchimp::new(EspConfig {
            api_key: Some("k-us6".into()),
            ..EspConfig::default()
        })
        .outbound_problem()
        .unwrap()
        .contains("ESP_LIST_ID"));
    }
}
