//! What every referral platform (SparkLoop, LoyaltySurf, ReferralLoop) has in common, both
//! directions: callbacks verified and parsed into normalised updates of the people they name
//! ([`PlatformCallbacks`], the same verify-then-parse shape as the ESP side), and the calls that
//! forward the ESP's events to it ([`OutboundPlatform`]). Each platform's own module holds both
//! halves of it.

use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use crate::outbound::{Answer, Headers, OutboundRequest, WriteVerdict};
use crate::{Email, InboundRequest, ParseError, VerifyError};

/// What a platform says about one person; `None` leaves the known value as it is (a key that is
/// missing or `null` in a callback changes nothing).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReferralData {
    /// The platform's id of the person (`sub_...`).
    pub platform_id: Option<String>,
    /// First name.
    pub first_name: Option<String>,
    /// Full name.
    pub name: Option<String>,
    /// Their referral code.
    pub referral_code: Option<String>,
    /// Their referral link.
    pub referral_link: Option<String>,
    /// Whether they were referred by someone.
    pub referred: Option<bool>,
    /// How many people they have referred.
    pub referral_count: Option<i64>,
    /// Referrals still needed for the next reward.
    pub next_reward: Option<i64>,
    /// The id of the last reward they won.
    pub last_reward: Option<String>,
    /// The most recent coupon code they won.
    pub last_coupon: Option<String>,
    /// A partner referral's status (`pending`, `verified`, `rejected`).
    pub partner_status: Option<String>,
    /// When they last referred someone (unix seconds): set on the referrer of a new referral.
    pub last_referral_at: Option<i64>,
    /// Their place in a waitlist (ReferralLoop).
    pub position: Option<i64>,
    /// Whether the platform removed them (a ReferralLoop signup deleted).
    pub removed: Option<bool>,
    /// Their rank on the leaderboard (LoyaltySurf).
    pub rank: Option<i64>,
    /// Whether they won the campaign (LoyaltySurf).
    pub winner: Option<bool>,
    /// The platform's fraud risk level (LoyaltySurf: `LOW`, `MEDIUM`, `HIGH`).
    pub fraud_risk: Option<String>,
}

/// One person a callback is about, and what it says of them.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonUpdate {
    /// Their address, trimmed and lower-cased.
    pub email: Email,
    /// What changed.
    pub data: ReferralData,
}

impl PersonUpdate {
    /// Refuses names over [`crate::MAX_NAME_CHARS`], naming the field under `path` (the person
    /// object's place in the callback).
    pub fn check(&self, path: &str) -> Result<(), ParseError> {
        for (field, value) in [
            ("first_name", &self.data.first_name),
            ("name", &self.data.name),
        ] {
            if value
                .as_deref()
                .is_some_and(|v| v.chars().count() > crate::MAX_NAME_CHARS)
            {
                return Err(ParseError(format!(
                    "`{path}.{field}` is longer than {} characters",
                    crate::MAX_NAME_CHARS
                )));
            }
        }
        Ok(())
    }
}

/// The address at `field` of a callback (`subscriber.email`): a 400 naming the field when it is
/// missing, not text, or not a valid address (DESIGN 3.3: a known type needs its subject).
pub fn email_at(value: Option<&Value>, field: &str) -> Result<Email, ParseError> {
    match value {
        None | Some(Value::Null) => Err(ParseError(format!("the callback has no `{field}`"))),
        Some(Value::String(s)) => {
            Email::parse(s).map_err(|e| ParseError(format!("`{field}`: {e}")))
        }
        Some(_) => Err(ParseError(format!("`{field}` must be a string"))),
    }
}

/// The object at `path` of a callback, `None` when missing or `null`; a 400 naming it when it
/// is something else.
pub fn object_at<'v>(
    value: Option<&'v Value>,
    path: &str,
) -> Result<Option<&'v serde_json::Map<String, Value>>, ParseError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(object)) => Ok(Some(object)),
        Some(_) => Err(ParseError(format!("`{path}` must be an object"))),
    }
}

/// A reward redemption: kept for the operator (the shipping details are not sent to the ESP).
#[derive(Debug, Clone, PartialEq)]
pub struct Redemption {
    /// The reward's id.
    pub reward_id: Option<String>,
    /// The reward's name.
    pub reward_name: Option<String>,
    /// The variant chosen (`T-Shirt XXL`).
    pub variant_name: Option<String>,
    /// The variant's SKU.
    pub variant_sku: Option<String>,
    /// The coupon code.
    pub coupon: Option<String>,
    /// The shipping details, as the platform sent them (an object).
    pub shipping_details: Option<Value>,
}

/// What a platform callback means for the bridge.
#[derive(Debug, Clone, PartialEq)]
pub struct Callback {
    /// The event type as the platform named it.
    pub event_type: String,
    /// The people it updates, the main subject first; empty for an ignored event.
    pub people: Vec<PersonUpdate>,
    /// A redemption to record, for `reward_redeemed`.
    pub redemption: Option<Redemption>,
    /// The platform's id of what the callback reports (LoyaltySurf's `data.reward.id`): a second
    /// callback with the same key is a duplicate however long after the first it comes.
    pub idempotency_key: Option<String>,
}

impl Callback {
    /// The address duplicates are looked up under: the main subject.
    pub fn subject(&self) -> Option<&Email> {
        self.people.first().map(|person| &person.email)
    }

    /// Whether the bridge does not act on it (an unknown type, or one naming nobody).
    pub fn is_ignored(&self) -> bool {
        self.people.is_empty()
    }
}

/// A referral platform's callbacks: verified on the raw request, then parsed.
pub trait PlatformCallbacks: Send + Sync {
    /// The platform's name, as in `/webhooks/{name}`.
    fn name(&self) -> &'static str;

    /// Checks the request's credentials against `secret` (`None` when none is configured, in
    /// which case every request is refused).
    fn verify(&self, request: &InboundRequest<'_>, secret: Option<&str>)
        -> Result<(), VerifyError>;

    /// Reads the callback. Unknown event types parse to an ignored callback, whatever else the
    /// body holds or lacks.
    fn parse(&self, request: &InboundRequest<'_>) -> Result<Callback, ParseError>;
}

/// Why the call that forwards a job to a platform cannot be made; the job's error says so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The job's body is not the JSON the bridge queues.
    #[error("the job's body is not JSON: {0}")]
    NotJson(String),
    /// The job's body names no subscriber.
    #[error("the job's body has no subscriber email")]
    NoEmail,
    /// A configured URL cannot carry the call.
    #[error("{variable} {reason}")]
    BadUrl {
        /// The variable that holds the URL.
        variable: &'static str,
        /// What is wrong with it (`is not a URL: ...`, `cannot take a path`).
        reason: String,
    },
    /// The platform's API has no call for this kind of job.
    #[error("{platform}'s API has no call for a `{kind}` job")]
    NoCall {
        /// The platform, as a person writes it.
        platform: &'static str,
        /// The job's kind.
        kind: String,
    },
    /// The call names the person by the platform's own id, which the bridge has not heard
    /// (it arrives with the platform's webhooks); the job is tried again, in case it does.
    #[error("{platform}'s call needs the subscriber's {what}, which the bridge has not heard from {platform} yet")]
    NoPlatformId {
        /// The platform, as a person writes it.
        platform: &'static str,
        /// The id, as the platform calls it (`signup id`).
        what: &'static str,
    },
}

/// The outgoing half of a referral platform: the call that forwards one queued ESP event
/// (`subscribe`, `update`, `unsubscribe`, whose bodies are SparkLoop's custom-integration shapes,
/// [`crate::sparkloop::webhook_payload`]) and how to read the platform's answer. The service
/// queues, paces and sends; the platform only describes.
pub trait OutboundPlatform: Send + Sync {
    /// The queue its jobs wait in (`jobs.destination`): the platform's name.
    fn destination(&self) -> &'static str;

    /// The variable that sets its pace, for messages.
    fn rate_limit_variable(&self) -> &'static str;

    /// Whether ESP events of `kind` are sent to it; the others are recorded only.
    fn forwards(&self, kind: &str) -> bool;

    /// What stops its jobs from being sent (a missing key), in words for the operator naming
    /// the variable; `None` when they can be sent.
    fn outbound_problem(&self) -> Option<String>;

    /// Whether it can forget a person (a job of kind [`DELETE`]: DESIGN 3.10's erasure with
    /// the platform); `Err` says why not, for the operator.
    fn deletes(&self) -> Result<(), String> {
        Err(format!(
            "{} has no deletion the bridge can send",
            self.destination()
        ))
    }

    /// Whether its calls keep to a rate limit (SparkLoop's incoming webhook has none).
    fn paced(&self) -> bool {
        true
    }

    /// The call that forwards a job of `kind` with the queued `payload`.
    fn request(&self, kind: &str, payload: &str) -> Result<OutboundRequest, CallError>;

    /// How to take the platform's answer to a job of `kind`.
    fn read_answer(&self, kind: &str, answer: &Answer<'_>) -> WriteVerdict;

    /// A second call that completes a job of `kind` after this `answer` (SparkLoop's confirming
    /// `PUT` after "Email has already been taken", DESIGN 3.8); the job's verdict is then that
    /// call's. `None` (the default): the first answer decides.
    fn follow_up(
        &self,
        _kind: &str,
        _payload: &str,
        _answer: &Answer<'_>,
    ) -> Option<Result<OutboundRequest, CallError>> {
        None
    }

    /// What the platform's answer to a job of `kind` that is done says of the person (SparkLoop
    /// answers a subscribe with their `uuid` and `ref_code`), for the bridge to keep and write to
    /// the ESP without waiting for a callback. `None` (the default): nothing.
    fn learned(&self, _kind: &str, _answer: &Answer<'_>) -> Option<PersonUpdate> {
        None
    }

    /// How many calls it allows in flight at once, when it limits that; `None`: no such limit.
    fn max_connections(&self) -> Option<usize> {
        None
    }

    /// How long it asks to be left alone after this answer, as its headers say; the default
    /// reads the standard `Retry-After`.
    fn retry_after(&self, headers: &Headers<'_>, now: SystemTime) -> Option<Duration> {
        headers.retry_after(now)
    }
}

/// The job kind that asks the platform to forget a person; the local erasure follows it.
pub const DELETE: &str = "delete";

/// The job kinds every platform API with all three calls takes.
pub const ALL_KINDS: &[&str] = &["subscribe", "update", "unsubscribe"];

/// The person in a queued job's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSubscriber {
    /// Their address.
    pub email: String,
    /// The address they had before, for an email change.
    pub previous_email: Option<String>,
    /// First name: the ESP's, or the first word of the full name.
    pub first_name: Option<String>,
    /// What follows the first name in the full name.
    pub last_name: Option<String>,
    /// The full name, or the first name when there is no full name.
    pub name: Option<String>,
    /// The platform's own id of the person, where the job carries it (a deletion, once the
    /// worker has added the stored one: [`deletion_payload`]).
    pub platform_id: Option<String>,
}

/// The body of a [`DELETE`] job: whom to forget, and, when the bridge knows it, the platform's
/// own id of them (`subscribers.platform_id`), which some platforms delete by. Jobs are queued
/// with the address alone; the worker adds the id stored when it sends, so that an id heard
/// after the job was queued is used.
pub fn deletion_payload(email: &str, platform_id: Option<&str>) -> String {
    let mut subscriber = Map::new();
    subscriber.insert("email".into(), Value::from(email));
    if let Some(id) = platform_id {
        subscriber.insert("platform_id".into(), Value::from(id));
    }
    serde_json::json!({"type": DELETE, "subscriber": subscriber}).to_string()
}

impl JobSubscriber {
    /// Reads the `subscriber` of a job's body.
    pub fn read(payload: &str) -> Result<JobSubscriber, CallError> {
        let body: Value =
            serde_json::from_str(payload).map_err(|e| CallError::NotJson(e.to_string()))?;
        let s = &body["subscriber"];
        let text = |key: &str| {
            s[key]
                .as_str()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
        };
        let email = text("email").ok_or(CallError::NoEmail)?;
        let name = text("name");
        // The ESP gives a first name, a full name, or both; platforms want first and last.
        let first_name = text("first_name").or_else(|| {
            name.as_deref()
                .and_then(|n| n.split_whitespace().next())
                .map(str::to_string)
        });
        let last_name = match (&name, &first_name) {
            (Some(name), Some(first)) => name
                .strip_prefix(first.as_str())
                .map(str::trim)
                .filter(|rest| !rest.is_empty() && name.starts_with(&format!("{first} ")))
                .map(str::to_string),
            _ => None,
        };
        Ok(JobSubscriber {
            email,
            previous_email: text("previous_email"),
            first_name,
            last_name,
            name: name.or_else(|| text("first_name")),
            platform_id: text("platform_id"),
        })
    }
}

/// `base` with `segments` appended, each percent-encoded as a path segment; `variable` names
/// the setting that holds `base`, for the error.
pub fn api_url(base: &str, variable: &'static str, segments: &[&str]) -> Result<String, CallError> {
    let mut url = url::Url::parse(base).map_err(|e| CallError::BadUrl {
        variable,
        reason: format!("is not a URL: {e}"),
    })?;
    url.path_segments_mut()
        .map_err(|_| CallError::BadUrl {
            variable,
            reason: "cannot take a path".into(),
        })?
        .pop_if_empty()
        .extend(segments);
    Ok(url.to_string())
}

/// The `Authorization: Bearer` header of `key` (empty while unset: the platform's
/// `outbound_problem` keeps such calls from being sent).
pub fn bearer(key: &Option<SecretString>) -> (&'static str, String) {
    let key = key.as_ref().map_or("", |k| k.expose_secret());
    ("Authorization", format!("Bearer {key}"))
}

/// A JSON API call with `Accept: application/json`, and a JSON body when `body` is not empty.
pub fn json_call(
    method: &'static str,
    url: String,
    body: String,
    auth: (&str, String),
) -> OutboundRequest {
    let mut headers = vec![
        ("Accept".to_string(), "application/json".to_string()),
        (auth.0.to_string(), auth.1),
    ];
    if !body.is_empty() {
        headers.push(("Content-Type".to_string(), "application/json".to_string()));
    }
    OutboundRequest {
        method,
        url,
        headers,
        body: body.into_bytes(),
    }
}

/// The usual reading of a platform's answer: 2xx done; 408, 429 and 5xx later (after its
/// `Retry-After`); any other status, a 404 included, refused.
pub fn usual_platform_verdict(answer: &Answer<'_>) -> WriteVerdict {
    match answer.status {
        200..=299 => WriteVerdict::Done,
        408 | 429 | 500..=599 => WriteVerdict::RetryLater {
            after: answer.retry_after,
        },
        _ => WriteVerdict::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::parse_retry_after;

    #[test]
    fn statuses() {
        let verdict = |status| {
            usual_platform_verdict(&Answer {
                status,
                retry_after: None,
                body: "",
            })
        };
        assert_eq!(verdict(200), WriteVerdict::Done);
        assert_eq!(verdict(204), WriteVerdict::Done);
        for s in [408, 429, 500, 502, 503] {
            assert_eq!(verdict(s), WriteVerdict::RetryLater { after: None });
        }
        for s in [301, 400, 401, 404, 422] {
            assert_eq!(verdict(s), WriteVerdict::Failed);
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
        let headers = vec![("Retry-After".to_string(), " 7 ".to_string())];
        assert_eq!(
            Headers(&headers).retry_after(now),
            Some(Duration::from_secs(7))
        );
    }

    #[test]
    fn job_subscribers_get_first_and_last_names() {
        let s = JobSubscriber::read(r#"{"subscriber":{"email":"a@b.co","name":"Ann Lee Smith"}}"#)
            .unwrap();
        assert_eq!(s.first_name.as_deref(), Some("Ann"));
        assert_eq!(s.last_name.as_deref(), Some("Lee Smith"));
        assert_eq!(JobSubscriber::read("{}"), Err(CallError::NoEmail));
        assert!(api_url("nope", "X_URL", &["a"])
            .unwrap_err()
            .to_string()
            .starts_with("X_URL is not a URL"));
    }
}
