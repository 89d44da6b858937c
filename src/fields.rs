//! The ESP custom fields the bridge writes (DESIGN 3.5): which referral value goes into which
//! field, under names the operator may change, switch off, or switch on.

use serde_json::Value;

use crate::db::subscribers::ReferralState;

/// `jobs.destination` of ESP field writes.
pub const DESTINATION: &str = "esp";

/// `jobs.kind` of ESP field writes: the subscriber's fields as they are when the job runs.
pub const KIND: &str = "fields";

/// A referral value the bridge can write into an ESP field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The platform's subscriber id.
    SubscriberId,
    /// The referral code.
    Code,
    /// The referral link.
    Link,
    /// `"YES"` / `"NO"`: whether they were referred.
    IsReferred,
    /// Number of referrals, an integer.
    ReferralCount,
    /// Most recent coupon code.
    Coupon,
    /// Id of the last reward won.
    LastReward,
    /// Referrals needed for the next reward, an integer (off by default).
    NextReward,
    /// Date of their last referral, RFC 3339 (off by default).
    LastReferral,
    /// Status of their partner referral (off by default).
    PartnerStatus,
    /// Their place in a waitlist, an integer (ReferralLoop; off by default).
    Position,
    /// `"YES"` / `"NO"`: whether the platform removed them (ReferralLoop; off by default).
    Removed,
    /// Their rank on the leaderboard, an integer (LoyaltySurf; off by default).
    Rank,
    /// `"YES"` / `"NO"`: whether they won the campaign (LoyaltySurf; off by default).
    Winner,
    /// The platform's fraud risk level, `LOW` / `MEDIUM` / `HIGH` (LoyaltySurf; off by default).
    FraudRisk,
}

/// Every field: its variable, default name (`None`: off unless named), and value.
pub const FIELDS: &[(Field, &str, Option<&str>)] = &[
    (Field::SubscriberId, "ESP_FIELD_SUBID", Some("RH_SUBID")),
    (Field::Code, "ESP_FIELD_CODE", Some("RH_CODE")),
    (Field::Link, "ESP_FIELD_REFLINK", Some("RH_REFLINK")),
    (Field::IsReferred, "ESP_FIELD_ISREF", Some("RH_ISREF")),
    (Field::ReferralCount, "ESP_FIELD_TOTREF", Some("RH_TOTREF")),
    (Field::Coupon, "ESP_FIELD_COUPON", Some("RH_COUPON")),
    (
        Field::LastReward,
        "ESP_FIELD_LASTREWARD",
        Some("RH_LASTREWARD"),
    ),
    (Field::NextReward, "ESP_FIELD_NEXTREWARD", None),
    (Field::LastReferral, "ESP_FIELD_LASTREF", None),
    (Field::PartnerStatus, "ESP_FIELD_PARTNER_STATUS", None),
    (Field::Position, "ESP_FIELD_POSITION", None),
    (Field::Removed, "ESP_FIELD_REMOVED", None),
    (Field::Rank, "ESP_FIELD_RANK", None),
    (Field::Winner, "ESP_FIELD_WINNER", None),
    (Field::FraudRisk, "ESP_FIELD_FRAUD_RISK", None),
];

/// The fields switched on, with their names, in the order of [`FIELDS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMap(pub Vec<(Field, String)>);

impl FieldMap {
    /// Each field's name and current value (`null` when not known yet).
    pub fn values(&self, state: &ReferralState) -> Vec<(String, Value)> {
        self.0
            .iter()
            .map(|(field, name)| (name.clone(), value(*field, state)))
            .collect()
    }
}

fn text(value: &Option<String>) -> Value {
    value.clone().map_or(Value::Null, Value::String)
}

fn yes_no(value: Option<bool>) -> Value {
    match value {
        Some(true) => "YES".into(),
        Some(false) => "NO".into(),
        None => Value::Null,
    }
}

fn value(field: Field, state: &ReferralState) -> Value {
    match field {
        Field::SubscriberId => text(&state.platform_id),
        Field::Code => text(&state.referral_code),
        Field::Link => text(&state.referral_link),
        Field::IsReferred => yes_no(state.referred),
        Field::ReferralCount => state.referral_count.map_or(Value::Null, Value::from),
        Field::Coupon => text(&state.last_coupon),
        Field::LastReward => text(&state.last_reward),
        Field::NextReward => state.next_reward.map_or(Value::Null, Value::from),
        Field::LastReferral => state
            .last_referral_at
            .and_then(|seconds| u64::try_from(seconds).ok())
            .map_or(Value::Null, |seconds| {
                let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
                humantime::format_rfc3339_seconds(at).to_string().into()
            }),
        Field::PartnerStatus => text(&state.partner_status),
        Field::Position => state.position.map_or(Value::Null, Value::from),
        Field::Removed => yes_no(state.platform_removed),
        Field::Rank => state.leaderboard_rank.map_or(Value::Null, Value::from),
        Field::Winner => yes_no(state.winner),
        Field::FraudRisk => text(&state.fraud_risk),
    }
}
