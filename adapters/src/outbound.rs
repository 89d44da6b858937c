//! The outbound half of an ESP integration: the HTTP request that writes one subscriber's
//! referral fields, and how to read the ESP's answer. The service sends the request; the adapter
//! only describes it, so that it can be tested without a network.

use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

/// What an ESP adapter needs to reach the ESP's API, from `ESP_*` variables. Its `Debug` shows
/// no key: the secrets print as redacted.
#[derive(Debug, Clone, Default)]
pub struct EspConfig {
    /// `ESP_API_URL`: the API base, or for `custom` the URL that receives field updates.
    pub api_url: Option<String>,
    /// `ESP_API_KEY`.
    pub api_key: Option<SecretString>,
    /// `ESP_SIGNING_SECRET` (`custom`): sign requests with Standard Webhooks headers.
    pub signing_secret: Option<SecretString>,
    /// `ESP_LIST_ID` (Mailchimp: the audience; beehiiv: the publication).
    pub list_id: Option<String>,
    /// `ESP_WRITE_TO` (Ghost, which has no custom fields): where the referral data goes,
    /// `note`, `labels` or both, comma-separated.
    pub write_to: Option<String>,
    /// `ESP_FIELD_IN_*`: the ESP's fields read as a signup's attribution, by attribution key
    /// (`utm_source`...), where the ESP's webhook carries its custom fields (DESIGN 3.8).
    pub attribution_fields: Vec<(&'static str, String)>,
}

impl EspConfig {
    /// The signup's attribution from the ESP's custom fields, `field(name)` giving a field's
    /// value as text.
    pub fn attribution<'v>(&self, field: impl Fn(&str) -> Option<&'v str>) -> crate::Attribution {
        crate::Attribution(
            self.attribution_fields
                .iter()
                .filter_map(|(key, name)| {
                    let value = field(name)?.trim();
                    (!value.is_empty()).then(|| (*key, value.to_string()))
                })
                .collect(),
        )
    }
}

impl EspConfig {
    /// `ESP_API_KEY`, for sending; empty when unset (the adapter's `outbound_problem` says so
    /// before anything is sent).
    pub fn key(&self) -> &str {
        self.api_key.as_ref().map_or("", |k| k.expose_secret())
    }
}

/// One subscriber's fields to write, already named and valued as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldUpdate<'a> {
    /// Their address.
    pub email: &'a str,
    /// The ESP's own id, in the JSON type the ESP sent, when known.
    pub esp_id: Option<&'a Value>,
    /// Field name and value (`null` when not known yet), in a stable order.
    pub fields: &'a [(String, Value)],
}

/// Identifies one outgoing message, for signatures and the receiver's deduplication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageId {
    /// A unique id: the same for the same job and body.
    pub id: String,
    /// When it is sent (unix seconds).
    pub timestamp: i64,
}

/// An HTTP request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRequest {
    /// `POST`, `PUT`, `PATCH`...
    pub method: &'static str,
    /// The whole URL.
    pub url: String,
    /// Headers, `Content-Type` included.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// The headers of an answer, as the service received them, looked up by name in any case.
#[derive(Debug, Clone, Copy)]
pub struct Headers<'a>(pub &'a [(String, String)]);

impl<'a> Headers<'a> {
    /// The value of the first header called `name`, trimmed.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }

    /// The standard `Retry-After` delay (seconds, or an HTTP date), as of `now`.
    pub fn retry_after(&self, now: SystemTime) -> Option<Duration> {
        parse_retry_after(self.get("retry-after")?, now)
    }
}

/// Reads a `Retry-After` value: seconds, or an HTTP date (a date in the past is no wait).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    httpdate::parse_http_date(value)
        .ok()
        .map(|at| at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// What came back from the ESP.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// The HTTP status.
    pub status: u16,
    /// The `Retry-After` delay, when the ESP sent one.
    pub retry_after: Option<Duration>,
    /// The start of the body.
    pub body: &'a str,
}

/// How an answer is to be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteVerdict {
    /// Written.
    Done,
    /// The ESP does not have the contact yet: try again later with the usual back-off.
    NotThereYet,
    /// A temporary refusal: try again, after `after` when the ESP said.
    RetryLater {
        /// The ESP's `Retry-After`, if any.
        after: Option<Duration>,
    },
    /// A permanent refusal: sending it again would fail the same way.
    Failed,
}

/// A contact as the ESP lists it: its address and its custom fields, keyed as the ESP keys them.
pub type Contact = (String, serde_json::Map<String, Value>);

/// One page of the ESP's contacts with their custom fields, for reading back what it holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContactPage {
    /// Each contact's address (as the ESP has it) and custom fields, keyed as the ESP keys them
    /// ([`OutboundEsp::field_key`]).
    pub contacts: Vec<Contact>,
    /// What asks for the next page ([`OutboundEsp::list_contacts`]); `None` after the last.
    pub next: Option<String>,
}

/// Contacts asked for per page where the ESP lets the caller choose: its maximum.
pub const CONTACTS_PER_PAGE: usize = 1000;

/// A page of an ESP paged by offset: the contacts at `list` (address at `email`, fields at
/// `fields`) of the answer to the page that started at `cursor`, the total at `total`.
pub fn offset_page(
    answer: &Answer<'_>,
    cursor: Option<&str>,
    (list, email, fields, total): (&str, &str, &str, &str),
) -> Result<ContactPage, String> {
    let body: Value = serde_json::from_str(answer.body).map_err(|e| format!("not JSON: {e}"))?;
    let contacts = contacts_at(&body, list, email, fields)?;
    let offset = cursor.and_then(|c| c.parse().ok()).unwrap_or(0);
    let next = next_offset(offset, contacts.len(), body[total].as_u64());
    Ok(ContactPage { contacts, next })
}

/// The page after one that started at `offset` and held `len` contacts of `total`, for an ESP
/// paged by offset.
pub fn next_offset(offset: usize, len: usize, total: Option<u64>) -> Option<String> {
    let next = offset + len;
    let more = match total {
        Some(total) => (next as u64) < total,
        None => len == CONTACTS_PER_PAGE,
    };
    (len > 0 && more).then(|| next.to_string())
}

/// The contacts in a listing's JSON `body`: the array at `list`, each object's address at `email`
/// and custom fields (an object; missing or `null`: none) at `fields`.
pub fn contacts_at(
    body: &Value,
    list: &str,
    email: &str,
    fields: &str,
) -> Result<Vec<Contact>, String> {
    let items = body[list]
        .as_array()
        .ok_or_else(|| format!("the answer has no `{list}` list"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let address = item[email]
                .as_str()
                .ok_or_else(|| format!("`{list}[{i}].{email}` is not text"))?;
            let custom = match &item[fields] {
                Value::Object(map) => map.clone(),
                Value::Null => serde_json::Map::new(),
                _ => return Err(format!("`{list}[{i}].{fields}` is not an object")),
            };
            Ok((address.to_string(), custom))
        })
        .collect()
}

/// An ESP integration's outbound half.
pub trait OutboundEsp: Send + Sync {
    /// What stops field writes from being sent (a missing URL or key), in words for the
    /// operator naming the variable; `None` when they can be sent.
    fn outbound_problem(&self) -> Option<String>;

    /// The request that writes `update`.
    fn field_update(&self, update: &FieldUpdate<'_>, message: &MessageId) -> OutboundRequest;

    /// How to take the ESP's answer to a field write.
    fn read_answer(&self, answer: &Answer<'_>) -> WriteVerdict;

    /// For an ESP whose writes address the contact by its own id: the call that finds the id
    /// of `email`, made when the bridge does not know it yet. `None` (the default): writes can
    /// go by email.
    fn id_lookup(&self, _email: &str) -> Option<OutboundRequest> {
        None
    }

    /// The contact's id in the answer to [`OutboundEsp::id_lookup`], in the ESP's JSON type;
    /// `None` when the ESP has no contact with that address (yet).
    fn read_id(&self, _answer: &Answer<'_>) -> Option<Value> {
        None
    }

    /// The most field updates one batch call carries; 1 (the default): no batch endpoint.
    fn max_batch(&self) -> usize {
        1
    }

    /// The call that writes several subscribers' fields at once (at most
    /// [`OutboundEsp::max_batch`]); `None` when the ESP has no batch endpoint.
    fn batch_update(&self, _updates: &[FieldUpdate<'_>]) -> Option<OutboundRequest> {
        None
    }

    /// Each update's result in a successful (2xx) answer to [`OutboundEsp::batch_update`], in
    /// the order of `emails`: `Err` with the ESP's reason for a contact it refused.
    fn read_batch(&self, _answer: &Answer<'_>, emails: &[&str]) -> Vec<Result<(), String>> {
        emails.iter().map(|_| Ok(())).collect()
    }

    /// How many calls the ESP allows in flight at once, when it limits that rather than (or as
    /// well as) a rate; `None`: no such limit.
    fn max_connections(&self) -> Option<usize> {
        None
    }

    /// How long the ESP asks to be left alone after this answer, as its headers say; the
    /// default reads the standard `Retry-After`.
    fn retry_after(&self, headers: &Headers<'_>, now: SystemTime) -> Option<Duration> {
        headers.retry_after(now)
    }

    /// The name a configured field has in this ESP (Mailchimp's 10-character tag, Kit's
    /// lower-case key...).
    fn field_key(&self, name: &str) -> String {
        name.to_string()
    }

    /// The call that reads one page of the ESP's contacts with their custom fields, after the
    /// page whose answer gave `cursor` (`None`: the first), for `reconcile --esp`; `None` when
    /// the adapter cannot list contacts.
    fn list_contacts(&self, _cursor: Option<&str>) -> Option<OutboundRequest> {
        None
    }

    /// Reads an answer to [`OutboundEsp::list_contacts`] that started at `cursor`.
    fn read_contacts(
        &self,
        _answer: &Answer<'_>,
        _cursor: Option<&str>,
    ) -> Result<ContactPage, String> {
        Err("this ESP's contacts cannot be listed".into())
    }

    /// The call that lists the ESP's custom fields; `None` for an ESP without a field schema
    /// (the custom ESP takes whatever it is sent).
    fn list_fields(&self) -> Option<OutboundRequest> {
        None
    }

    /// The field keys in the answer to [`OutboundEsp::list_fields`], or why it cannot be read.
    fn read_fields(&self, _answer: &Answer<'_>) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }

    /// The fields the ESP requires on every contact, from the answer to
    /// [`OutboundEsp::list_fields`]: a write may fail while one of them is empty.
    fn required_fields(&self, _answer: &Answer<'_>) -> Vec<String> {
        Vec::new()
    }

    /// The call that creates the field `name` (numeric for counts), as [`OutboundEsp::field_key`]
    /// names it.
    fn create_field(&self, _name: &str, _numeric: bool) -> Option<OutboundRequest> {
        None
    }

    /// Whether writes address fields by the ESP's own ids (ActiveCampaign), which must be
    /// (re)learned first: the caller then sends [`OutboundEsp::list_fields`] and hands the
    /// answer to [`OutboundEsp::learn_fields`]. `false` (the default): fields go by name.
    fn needs_field_ids(&self) -> bool {
        false
    }

    /// Keeps the field ids in an answer to [`OutboundEsp::list_fields`].
    fn learn_fields(&self, _answer: &Answer<'_>) -> Result<(), String> {
        Ok(())
    }

    /// For an ESP whose write must be merged with what the contact holds (Ghost's note and
    /// labels, which a write replaces): the call that reads the contact `email` first. `None`
    /// (the default): writes need no read.
    fn read_before_write(&self, _email: &str) -> Option<OutboundRequest> {
        None
    }

    /// A call that reads something with the configured credentials and changes nothing, for
    /// `check` to see that the ESP accepts them: by default the field list, else the id lookup
    /// or the read before a write of an address no one has; `None` when the adapter has none.
    fn credentials_probe(&self) -> Option<OutboundRequest> {
        const NO_ONE: &str = "referral-bridge-check@example.invalid";
        self.list_fields()
            .or_else(|| self.id_lookup(NO_ONE))
            .or_else(|| self.read_before_write(NO_ONE))
    }

    /// The write of `update` merged with `current`, the answer to
    /// [`OutboundEsp::read_before_write`]: `Err(NotThereYet)` when the ESP has no such contact
    /// (yet), `Err(Failed(reason))` when the merge cannot be written.
    fn merged_update(
        &self,
        update: &FieldUpdate<'_>,
        message: &MessageId,
        _current: &Answer<'_>,
    ) -> Result<OutboundRequest, MergeError> {
        Ok(self.field_update(update, message))
    }
}

/// The JSON of a read made before a write ([`OutboundEsp::read_before_write`]), or why it
/// cannot be merged with: a refusal (its status and the ESP's reason) or a body that is not
/// JSON. `what` names the contact for the message (`member`, `subscriber`).
pub fn read_json(current: &Answer<'_>, what: &str) -> Result<Value, MergeError> {
    if !(200..300).contains(&current.status) {
        return Err(MergeError::Failed(format!(
            "HTTP {} reading the {what}: {}",
            current.status,
            error_text(current.body)
        )));
    }
    serde_json::from_str(current.body)
        .map_err(|e| MergeError::Failed(format!("the {what} read is not JSON: {e}")))
}

/// Why a merged write cannot be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeError {
    /// The ESP has no such contact yet: try again later.
    NotThereYet,
    /// The read failed (its status), or the merged contact would be refused: the reason.
    Failed(String),
}

/// The error message in an ESP's answer, for the operator: `detail`, `message`, `errors`...
pub fn error_text(body: &str) -> String {
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        return body.chars().take(200).collect();
    };
    for key in ["detail", "message", "title", "error"] {
        if let Some(text) = value.get(key).and_then(Value::as_str) {
            return text.to_string();
        }
    }
    match value.get("errors") {
        Some(errors) => errors.to_string(),
        None => body.chars().take(200).collect(),
    }
}

/// The strings at `path` (keys of objects along the way, `*` for every element of a list) in a
/// JSON answer, e.g. `["merge_fields", "*", "tag"]`.
pub fn strings_at(body: &str, path: &[&str]) -> Result<Vec<String>, String> {
    let value: Value =
        serde_json::from_str(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let mut found = vec![&value];
    for step in path {
        found = found
            .into_iter()
            .flat_map(|v| -> Vec<&Value> {
                match (*step, v) {
                    ("*", Value::Array(items)) => items.iter().collect(),
                    (key, Value::Object(map)) => map.get(key).into_iter().collect(),
                    _ => Vec::new(),
                }
            })
            .collect();
    }
    Ok(found
        .into_iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect())
}

/// The usual reading of an answer: 2xx done, 404 not there yet, 408/429/5xx later, else failed.
pub fn usual_verdict(answer: &Answer<'_>) -> WriteVerdict {
    match answer.status {
        200..=299 => WriteVerdict::Done,
        404 => WriteVerdict::NotThereYet,
        408 | 429 | 500..=599 => WriteVerdict::RetryLater {
            after: answer.retry_after,
        },
        _ => WriteVerdict::Failed,
    }
}
