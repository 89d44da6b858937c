//! SparkLoop, both ways.
//!
//! - In (this file): its callbacks (`docs.sparkloop.app/webhooks`), a static `SparkLoop-Token`
//!   header and JSON bodies with a top-level `type`.
//! - Out ([`outbound`]): ESP events posted to its incoming webhook, or sent as API v2 calls, and
//!   how its answers are read.
//! - Set-up ([`webhooks`]): the campaign's webhook subscriptions through its API.
//! - Read-back ([`subscribers`]): the campaign's subscribers through its API, for reconciliation.

pub mod outbound;
pub mod subscribers;
pub mod webhooks;

pub use outbound::{webhook_payload, SparkLoopOutbound, DESTINATION};

use serde_json::Value;

use crate::platform::{
    email_at, object_at, Callback, PersonUpdate, PlatformCallbacks, Redemption, ReferralData,
};
use crate::{secrets_match, InboundRequest, ParseError, VerifyError};

/// SparkLoop's callbacks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SparkLoopCallbacks;

impl PlatformCallbacks for SparkLoopCallbacks {
    fn name(&self) -> &'static str {
        "sparkloop"
    }

    fn verify(
        &self,
        request: &InboundRequest<'_>,
        secret: Option<&str>,
    ) -> Result<(), VerifyError> {
        let secret = secret.ok_or(VerifyError::NotConfigured)?;
        match request.header("sparkloop-token") {
            None => Err(VerifyError::Missing),
            Some(token) if secrets_match(trim(token), secret.as_bytes()) => Ok(()),
            Some(_) => Err(VerifyError::Wrong),
        }
    }

    fn parse(&self, request: &InboundRequest<'_>) -> Result<Callback, ParseError> {
        parse_callback(request.body)
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace());
    match (start, end) {
        (Some(start), Some(end)) => &bytes[start..=end],
        _ => &[],
    }
}

/// The event types SparkLoop documents, all acted on.
pub const EVENT_TYPES: &[&str] = &[
    "sync_subscriber",
    "new_referral",
    "reward_unlocked",
    "reward_redeemed",
    "new_partner_pending_referral",
    "new_partner_referral",
];

/// Reads one SparkLoop callback. A known type needs its `subscriber` with a valid address, and a
/// `referrer`, when there is one, needs one too (DESIGN 3.3: a 400 naming the field); an unknown
/// type is an ignored callback, whatever else the body holds.
pub fn parse_callback(body: &[u8]) -> Result<Callback, ParseError> {
    let value = ParseError::json(body)?;
    let object = value
        .as_object()
        .ok_or_else(|| ParseError("the body must be a JSON object".into()))?;
    let event_type = match object.get("type") {
        Some(Value::String(t)) if !t.trim().is_empty() => t.trim().to_string(),
        _ => return Err(ParseError("the callback has no `type`".into())),
    };
    let mut callback = Callback {
        event_type,
        people: Vec::new(),
        redemption: None,
        idempotency_key: None,
    };
    if !EVENT_TYPES.contains(&callback.event_type.as_str()) {
        return Ok(callback);
    }
    let subscriber = Some(
        person(object.get("subscriber"), "subscriber")?
            .ok_or_else(|| ParseError("the callback has no `subscriber`".into()))?,
    );
    match callback.event_type.as_str() {
        "sync_subscriber" => callback.people.extend(subscriber),
        "new_referral" => {
            let referred_at = object
                .get("subscriber")
                .and_then(|s| integer(s.get("created_at")));
            callback.people.extend(subscriber.map(|mut s| {
                s.data.referred = s.data.referred.or(Some(true));
                s
            }));
            callback
                .people
                .extend(
                    person(object.get("referrer"), "referrer")?.map(|mut referrer| {
                        referrer.data.last_referral_at = referred_at;
                        referrer
                    }),
                );
        }
        "reward_unlocked" => {
            let reward_id = object.get("reward").and_then(|r| text(r.get("id")));
            let coupon = text(object.get("coupon_code"));
            callback.people.extend(subscriber.map(|mut s| {
                s.data.last_reward = reward_id.or(s.data.last_reward);
                s.data.last_coupon = coupon.or(s.data.last_coupon);
                s
            }));
        }
        "reward_redeemed" => {
            callback.people.extend(subscriber);
            let reward = object.get("reward");
            callback.redemption = Some(Redemption {
                reward_id: reward.and_then(|r| text(r.get("id"))),
                reward_name: reward.and_then(|r| text(r.get("name"))),
                variant_name: text(object.get("reward_variant_name")),
                variant_sku: text(object.get("reward_variant_sku")),
                coupon: text(object.get("coupon_code")),
                shipping_details: object
                    .get("shipping_details")
                    .filter(|v| v.is_object())
                    .cloned(),
            });
        }
        "new_partner_pending_referral" | "new_partner_referral" => {
            let status = if callback.event_type == "new_partner_referral" {
                "verified"
            } else {
                "pending"
            };
            callback.people.extend(subscriber.map(|mut s| {
                s.data.partner_status = s.data.partner_status.or(Some(status.into()));
                s
            }));
        }
        _ => {}
    }
    Ok(callback)
}

/// The person object at `path`: `None` when it is missing; a 400 when it has no valid address or
/// a name that is too long.
fn person(value: Option<&Value>, path: &str) -> Result<Option<PersonUpdate>, ParseError> {
    let Some(object) = object_at(value, path)? else {
        return Ok(None);
    };
    let email = email_at(object.get("email"), &format!("{path}.email"))?;
    // Measured as sent, white space included, as the OpenAPI document's `maxLength` counts.
    for key in ["first_name", "name"] {
        if let Some(Value::String(s)) = object.get(key) {
            if s.chars().count() > crate::MAX_NAME_CHARS {
                return Err(ParseError(format!(
                    "`{path}.{key}` is longer than {} characters",
                    crate::MAX_NAME_CHARS
                )));
            }
        }
    }
    let update = PersonUpdate {
        email,
        data: ReferralData {
            platform_id: text(object.get("id")),
            first_name: text(object.get("first_name")),
            name: text(object.get("name")),
            referral_code: text(object.get("referral_code")),
            referral_link: text(object.get("referral_link")),
            referred: boolean(object.get("referred")),
            referral_count: integer(object.get("tot_referrals")),
            next_reward: integer(object.get("next_reward")),
            last_reward: text(object.get("last_reward")),
            partner_status: text(object.get("referral_status")),
            ..ReferralData::default()
        },
    };
    update.check(path)?;
    Ok(Some(update))
}

/// A text value (numbers are written out); empty text and `null` are "not known".
fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A whole number, also when sent as text.
fn integer(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A yes/no value, also when sent as text.
fn boolean(value: Option<&Value>) -> Option<bool> {
    match value? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Some(true),
            "false" | "no" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: Value) -> Callback {
        parse_callback(value.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn new_referral_updates_the_new_subscriber_and_the_referrer() {
        let callback = parse(json!({"type": "new_referral", "campaign_id": "MF1",
            "subscriber": {"id": "sub_a", "email": "New@Example.com", "referral_code": "c1",
                "referred": null, "tot_referrals": 0, "created_at": 1564400550},
            "referrer": {"id": "sub_b", "email": "ref@example.com", "tot_referrals": "4",
                "referred": false}}));
        assert_eq!(callback.people.len(), 2);
        let (new, referrer) = (&callback.people[0], &callback.people[1]);
        assert_eq!(new.email.as_str(), "new@example.com");
        assert_eq!(new.data.referred, Some(true));
        assert_eq!(new.data.referral_count, Some(0));
        assert_eq!(referrer.data.referral_count, Some(4));
        assert_eq!(referrer.data.referred, Some(false));
        assert_eq!(referrer.data.last_referral_at, Some(1564400550));
    }

    #[test]
    fn reward_unlocked_carries_the_coupon_and_the_reward() {
        let callback = parse(json!({"type": "reward_unlocked", "coupon_code": "9wusha0",
            "subscriber": {"email": "a@example.com", "last_reward": "old"},
            "reward": {"id": "reward_new"}}));
        let data = &callback.people[0].data;
        assert_eq!(data.last_coupon.as_deref(), Some("9wusha0"));
        assert_eq!(data.last_reward.as_deref(), Some("reward_new"));
    }

    #[test]
    fn missing_and_null_keys_leave_values_unknown() {
        let callback = parse(json!({"type": "sync_subscriber",
            "subscriber": {"email": "a@example.com", "referral_link": null, "first_name": ""}}));
        assert_eq!(callback.people[0].data, ReferralData::default());
    }

    #[test]
    fn a_known_type_needs_its_subject_with_a_valid_address() {
        let refused = |value: Value| parse_callback(value.to_string().as_bytes()).unwrap_err().0;
        assert_eq!(
            refused(json!({"type": "new_partner_pending_referral",
                "campaign": {"id": "partner_campaign_1"}})),
            "the callback has no `subscriber`"
        );
        assert!(refused(json!({"type": "sync_subscriber"})).contains("`subscriber`"));
        let bad = refused(json!({"type": "sync_subscriber", "subscriber": {"email": "nope"}}));
        assert!(
            bad.starts_with("`subscriber.email`: `nope` is not"),
            "{bad}"
        );
        assert!(
            refused(json!({"type": "sync_subscriber", "subscriber": {}}))
                .contains("`subscriber.email`")
        );
        assert!(
            refused(json!({"type": "sync_subscriber", "subscriber": "x"}))
                .contains("must be an object")
        );
        let referrer = refused(json!({"type": "new_referral",
            "subscriber": {"email": "a@example.com"}, "referrer": {"email": "<b>@x.com"}}));
        assert!(referrer.starts_with("`referrer.email`"), "{referrer}");
        let long = refused(json!({"type": "sync_subscriber",
            "subscriber": {"email": "a@example.com", "name": "n".repeat(257)}}));
        assert_eq!(long, "`subscriber.name` is longer than 256 characters");
        // A new referral without a referrer is still one.
        assert_eq!(
            parse(json!({"type": "new_referral", "subscriber": {"email": "a@example.com"}}))
                .people
                .len(),
            1
        );
    }

    #[test]
    fn unknown_types_are_ignored_and_bad_bodies_refused() {
        assert!(
            parse(json!({"type": "new_offer_lead", "subscriber": {"email": "a@b.co"}}))
                .is_ignored()
        );
        assert!(parse_callback(b"[1]").is_err());
        assert!(parse_callback(b"{\"subscriber\": {}}").is_err());
        assert!(parse_callback(b"not json").is_err());
    }

    #[test]
    fn the_token_is_compared_whole() {
        let headers: &[(&str, &[u8])] = &[("SparkLoop-Token", b" tok3n ")];
        let request = InboundRequest {
            query: "",
            headers,
            body: b"{}",
        };
        let sparkloop = SparkLoopCallbacks;
        assert_eq!(sparkloop.verify(&request, Some("tok3n")), Ok(()));
        assert_eq!(
            sparkloop.verify(&request, Some("tok3")),
            Err(VerifyError::Wrong)
        );
        assert_eq!(
            sparkloop.verify(&request, None),
            Err(VerifyError::NotConfigured)
        );
        let bare = InboundRequest {
            headers: &[],
            ..request
        };
        assert_eq!(
            sparkloop.verify(&bare, Some("tok3n")),
            Err(VerifyError::Missing)
        );
    }
}
