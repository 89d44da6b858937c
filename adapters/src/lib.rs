#![doc = include_str!("../README.md")]

pub mod activecampaign;
pub mod beehiiv;
pub mod brevo;
pub mod custom;
mod email;
pub mod ghost;
pub mod kit;
pub mod klaviyo;
pub mod listmonk;
pub mod loyaltysurf;
pub mod mailchimp;
pub mod mailerlite;
pub mod outbound;
pub mod platform;
pub mod poll;
pub mod referralloop;
mod secret;
pub mod sparkloop;
pub mod standard_webhooks;
pub mod time;

pub use email::{Email, InvalidEmail};
pub use secret::secrets_match;

use serde_json::Value;

/// The raw parts of an inbound HTTP request that an adapter needs to verify and parse it.
#[derive(Debug, Clone, Copy)]
pub struct InboundRequest<'a> {
    /// The query string, without the leading `?` (empty when there is none).
    pub query: &'a str,
    /// The request headers, names in any case.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The raw body, exactly as received.
    pub body: &'a [u8],
}

impl<'a> InboundRequest<'a> {
    /// The value of the first header called `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// The first value of query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    }
}

/// The key/value pairs of an `application/x-www-form-urlencoded` body, decoded, in order; a
/// NUL character (`%00`) anywhere is refused, as in a JSON body.
pub fn form_pairs(body: &[u8]) -> Result<Vec<(String, String)>, ParseError> {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(body)
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    match pairs
        .iter()
        .find(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        Some((key, _)) => Err(ParseError::nul(&format!("`{}`", excerpt(key)))),
        None => Ok(pairs),
    }
}

/// Where the first text of `value` (a key or a string) holding a NUL character is, if any.
fn nul_at(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if s.contains('\0') => Some("a value".into()),
        Value::Array(items) => items.iter().find_map(nul_at),
        Value::Object(object) => object.iter().find_map(|(key, value)| {
            if key.contains('\0') {
                Some(format!("the key `{}`", excerpt(key)))
            } else {
                nul_at(value).map(|_| format!("`{}`", excerpt(key)))
            }
        }),
        _ => None,
    }
}

/// Bytes from hex text (as signatures are sent), or `None` if it is not hex.
pub(crate) fn from_hex(text: &str) -> Option<Vec<u8>> {
    hex::decode(text.trim()).ok()
}

/// Everything but the unreserved characters of RFC 3986, which a URL component keeps as they are.
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes text for a URL path segment or query value, leaving only unreserved
/// characters (an email's `@` and `+` are encoded).
pub fn encode_component(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, COMPONENT).to_string()
}

/// Why an inbound request was refused before its body was looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The bridge has no secret configured for this endpoint, so nothing can be accepted.
    #[error("this endpoint is disabled until its secret is configured")]
    NotConfigured,
    /// The request carries no credentials at all.
    #[error("missing credentials")]
    Missing,
    /// The request carries credentials that do not match.
    #[error("wrong credentials")]
    Wrong,
}

/// Why an authenticated body could not be understood; the message is meant for the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    /// Reads a webhook's body as JSON, or says that it is not.
    /// A NUL character (`\u0000`), which no address, name or event type has and Postgres
    /// cannot store in text, is refused wherever it is, on every database alike.
    pub fn json(body: &[u8]) -> Result<Value, ParseError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ParseError(format!("the body is not valid JSON: {e}")))?;
        match nul_at(&value) {
            Some(at) => Err(ParseError::nul(&at)),
            None => Ok(value),
        }
    }

    /// Says that the text at `at` holds a NUL character.
    pub fn nul(at: &str) -> ParseError {
        ParseError(format!(
            "{at} holds a NUL character (U+0000), which the bridge does not take"
        ))
    }

    /// The event's type under `key`, trimmed, or says that the webhook has none.
    pub fn event_type<'v>(value: &'v Value, key: &str) -> Result<&'v str, ParseError> {
        value
            .get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ParseError(format!("the webhook has no `{key}`")))
    }
}

/// The start of `text` for an error message or a log line: at most [`EXCERPT_CHARS`] characters,
/// and how many more there were, so that a megabyte of input is never echoed back.
pub fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        None => text.to_string(),
        Some((end, _)) => format!(
            "{}… ({} more characters)",
            &text[..end],
            text[end..].chars().count()
        ),
    }
}

/// How many characters of an input [`excerpt`] quotes.
pub const EXCERPT_CHARS: usize = 80;

/// The longest name (first or full) the bridge accepts, in characters (DESIGN 3.7).
pub const MAX_NAME_CHARS: usize = 256;

/// A person as an ESP describes them in a webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct Person {
    /// The subscriber's address, trimmed and lower-cased.
    pub email: Email,
    /// The ESP's own id, kept in the JSON type the ESP sent (number or string).
    pub esp_id: Option<Value>,
    /// First name, when the ESP sent one.
    pub first_name: Option<String>,
    /// Full name, when the ESP sent one.
    pub name: Option<String>,
}

impl Person {
    /// Refuses names over [`MAX_NAME_CHARS`], naming the field.
    pub fn check(&self) -> Result<(), ParseError> {
        for (field, value) in [("first_name", &self.first_name), ("name", &self.name)] {
            if value
                .as_deref()
                .is_some_and(|v| v.chars().count() > MAX_NAME_CHARS)
            {
                return Err(ParseError(format!(
                    "`{field}` is longer than {MAX_NAME_CHARS} characters"
                )));
            }
        }
        Ok(())
    }
}

/// The attribution keys SparkLoop's API v2 takes with a new subscriber (DESIGN 3.8).
pub const ATTRIBUTION_KEYS: [&str; 6] = [
    "referrer_code",
    "ip_address",
    "user_agent",
    "utm_source",
    "utm_campaign",
    "country_code",
];

/// Where a signup came from: those of [`ATTRIBUTION_KEYS`] that are known, in that order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attribution(pub Vec<(&'static str, String)>);

impl Attribution {
    /// The keys of `object` (a subscriber's JSON) that are attribution, as non-empty text.
    pub fn from_object(object: &serde_json::Map<String, Value>) -> Attribution {
        Attribution(
            ATTRIBUTION_KEYS
                .iter()
                .filter_map(|key| {
                    let text = object.get(*key)?.as_str()?.trim();
                    (!text.is_empty()).then(|| (*key, text.to_string()))
                })
                .collect(),
        )
    }
}

/// What an ESP webhook means for the bridge, whatever the ESP's own format.
#[derive(Debug, Clone, PartialEq)]
pub enum EspEvent {
    /// A person joined the list (after confirmation, for double opt-in lists).
    Subscribed {
        /// Who subscribed.
        person: Person,
        /// When they signed up, unix seconds, when the ESP said.
        created_at: Option<i64>,
        /// Where the signup came from, when the ESP said (DESIGN 3.8).
        attribution: Attribution,
    },
    /// A person's profile changed: a new address when `previous_email` is set, else names.
    Updated {
        /// The person as they are now.
        person: Person,
        /// The address they had before, for an email change.
        previous_email: Option<Email>,
        /// When the change happened, unix seconds, when the ESP said.
        updated_at: Option<i64>,
    },
    /// A person left the list.
    Unsubscribed {
        /// Who left.
        email: Email,
    },
    /// The ESP deleted a contact (Brevo `contact_deleted`, Ghost `member.deleted`, beehiiv
    /// `subscription.deleted`): a departure, and with `BRIDGE_ERASE_ON_DELETE` an erasure.
    Deleted {
        /// Who was deleted.
        email: Email,
    },
    /// An event the bridge does not act on; stored and answered 200 all the same.
    Ignored {
        /// The event type as the ESP named it.
        event_type: String,
    },
}

impl EspEvent {
    /// The address duplicates are looked up under: the event's email, the new one for an email
    /// change; none for ignored events.
    pub fn subject(&self) -> Option<&Email> {
        match self {
            EspEvent::Subscribed { person, .. } | EspEvent::Updated { person, .. } => {
                Some(&person.email)
            }
            EspEvent::Unsubscribed { email } | EspEvent::Deleted { email } => Some(email),
            EspEvent::Ignored { .. } => None,
        }
    }

    /// Checks what every adapter's parse leaves to the edge: the length of names.
    pub fn check(&self) -> Result<(), ParseError> {
        match self {
            EspEvent::Subscribed { person, .. } | EspEvent::Updated { person, .. } => {
                person.check()
            }
            EspEvent::Unsubscribed { .. } | EspEvent::Deleted { .. } | EspEvent::Ignored { .. } => {
                Ok(())
            }
        }
    }
}

/// Where a webhook carries the credentials that [`InboundEsp::verify`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookCredential {
    /// `Authorization: Bearer <ESP_WEBHOOK_SECRET>`.
    Bearer,
    /// `?token=<ESP_WEBHOOK_SECRET>` in the webhook's URL.
    QueryToken,
    /// A signature of the body, made with the secret, in this header.
    SignatureHeader(&'static str),
}

/// An ESP integration's inbound half: checks that a webhook comes from the ESP, then reads it.
pub trait InboundEsp: Send + Sync {
    /// The adapter's name, as written in `ESP_ADAPTER`.
    fn name(&self) -> &'static str;

    /// Checks the request's credentials against `secret` (`None` when none is configured).
    fn verify(&self, request: &InboundRequest<'_>, secret: Option<&str>)
        -> Result<(), VerifyError>;

    /// Reads a verified request's body into the events it carries.
    fn parse(&self, request: &InboundRequest<'_>) -> Result<Vec<EspEvent>, ParseError>;

    /// Where this ESP's webhooks may carry their credentials, for the OpenAPI document: the
    /// custom ESP's bearer token or `?token=` by default; none for an ESP that is polled.
    fn credentials(&self) -> &'static [WebhookCredential] {
        &[WebhookCredential::Bearer, WebhookCredential::QueryToken]
    }

    /// How this ESP's webhooks must carry their credentials, for the 401 that answers a
    /// webhook without them: the custom ESP's bearer token or `?token=` by default.
    fn credentials_hint(&self) -> &'static str {
        "send the ESP webhook secret as `Authorization: Bearer <ESP_WEBHOOK_SECRET>` or \
         `?token=<ESP_WEBHOOK_SECRET>`"
    }

    /// For an ESP that posts no webhooks (listmonk): the call that reads the subscribers changed
    /// after the checkpoint `since` (the last change's timestamp as the ESP wrote it, and the
    /// last id at that timestamp; `None`: from the beginning), oldest change first. `None` (the
    /// default): the ESP posts webhooks.
    fn poll_request(&self, _since: Option<(&str, i64)>) -> Option<outbound::OutboundRequest> {
        None
    }

    /// The subscribers in a 2xx answer to [`InboundEsp::poll_request`], oldest change first.
    fn read_poll(&self, _body: &str) -> Result<Vec<poll::Polled>, String> {
        Ok(Vec::new())
    }

    /// How many subscribers a full page of [`InboundEsp::poll_request`] holds: a full page is
    /// followed at once by the next.
    fn poll_page_size(&self) -> usize {
        100
    }
}

/// A whole ESP integration: webhooks in, field writes out.
pub trait EspAdapter: InboundEsp + outbound::OutboundEsp {}

impl<T: InboundEsp + outbound::OutboundEsp> EspAdapter for T {}

/// The names `ESP_ADAPTER` accepts.
pub const KNOWN_ESP_ADAPTERS: &[&str] = &[
    "custom",
    "mailchimp",
    "kit",
    "mailerlite",
    "brevo",
    "beehiiv",
    "activecampaign",
    "ghost",
    "klaviyo",
    "listmonk",
];

/// The `ESP_RATE_LIMIT` an adapter uses unless told otherwise (several limits, comma-separated,
/// all hold): each adapter's own `DEFAULT_RATE_LIMIT`.
pub fn default_rate_limit(adapter: &str) -> &'static str {
    match adapter {
        "mailchimp" => mailchimp::DEFAULT_RATE_LIMIT,
        "brevo" => brevo::DEFAULT_RATE_LIMIT,
        "mailerlite" => mailerlite::DEFAULT_RATE_LIMIT,
        "kit" => kit::DEFAULT_RATE_LIMIT,
        "beehiiv" => beehiiv::DEFAULT_RATE_LIMIT,
        "activecampaign" => activecampaign::DEFAULT_RATE_LIMIT,
        "klaviyo" => klaviyo::DEFAULT_RATE_LIMIT,
        "ghost" => ghost::DEFAULT_RATE_LIMIT,
        "listmonk" => listmonk::DEFAULT_RATE_LIMIT,
        _ => custom::DEFAULT_RATE_LIMIT,
    }
}

/// The adapter called `name`, reaching the ESP as `config` says, or `None` when there is no
/// such adapter.
pub fn esp_adapter(name: &str, config: outbound::EspConfig) -> Option<Box<dyn EspAdapter>> {
    match name {
        "custom" => Some(Box::new(custom::CustomEsp::new(config))),
        "mailchimp" => Some(Box::new(mailchimp::Mailchimp::new(config))),
        "brevo" => Some(Box::new(brevo::Brevo::new(config))),
        "mailerlite" => Some(Box::new(mailerlite::MailerLite::new(config))),
        "kit" => Some(Box::new(kit::Kit::new(config))),
        "beehiiv" => Some(Box::new(beehiiv::Beehiiv::new(config))),
        "activecampaign" => Some(Box::new(activecampaign::ActiveCampaign::new(config))),
        "ghost" => Some(Box::new(ghost::Ghost::new(config))),
        "klaviyo" => Some(Box::new(klaviyo::Klaviyo::new(config))),
        "listmonk" => Some(Box::new(listmonk::Listmonk::new(config))),
        _ => None,
    }
}

/// The callbacks of the platform called `name` (`sparkloop`, `referralloop`, `loyaltysurf` with
/// its default tolerance), or `None` when there is none.
pub fn platform_callbacks(name: &str) -> Option<Box<dyn platform::PlatformCallbacks>> {
    match name {
        "sparkloop" => Some(Box::new(sparkloop::SparkLoopCallbacks)),
        "referralloop" => Some(Box::new(referralloop::ReferralLoopCallbacks)),
        "loyaltysurf" => Some(Box::new(loyaltysurf::LoyaltySurfCallbacks::default())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_decoded() {
        let request = InboundRequest {
            query: "a=1&token=s%2Bx+y%zz&token=second",
            headers: &[],
            body: b"",
        };
        assert_eq!(request.query_param("token").as_deref(), Some("s+x y%zz"));
        assert_eq!(request.query_param("a").as_deref(), Some("1"));
        assert_eq!(request.query_param("b"), None);
    }

    #[test]
    fn trailing_percent_is_kept() {
        let pairs = form_pairs(b"a=abc%&b=abc%4&c=%41&d=x+y&&e").unwrap();
        let values: Vec<&str> = pairs.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(values, ["abc%", "abc%4", "A", "x y", ""]);
        assert_eq!(encode_component("a+b@c.d~_-"), "a%2Bb%40c.d~_-");
        assert_eq!(from_hex(" 0aFF "), Some(vec![10, 255]));
        assert_eq!(from_hex("abc"), None);
    }
}
