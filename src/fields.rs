//! The ESP field writes: their queue, and each configured field's value for a subscriber (the
//! catalogue of fields is the configuration's, [`crate::config::fields`]).

use serde_json::Value;

pub use crate::config::fields::{Field, FieldMap, FIELDS};
use crate::db::referral::ReferralState;

/// `jobs.destination` of ESP field writes.
pub const DESTINATION: &str = crate::db::jobs::ESP_DESTINATION;

/// `jobs.kind` of ESP field writes: the subscriber's fields as they are when the job runs.
pub const KIND: &str = "fields";

/// Each switched-on field's name and current value for `state` (`null` when not known yet); a
/// referral link not known is made from the code by `reflink_template` (`{code}`), when set.
pub fn values(
    map: &FieldMap,
    state: &ReferralState,
    reflink_template: Option<&str>,
) -> Vec<(String, Value)> {
    map.0
        .iter()
        .map(|(field, name)| {
            let value = match (
                field,
                &state.referral_link,
                &state.referral_code,
                reflink_template,
            ) {
                (Field::Link, None, Some(code), Some(template)) => Value::String(
                    template.replace("{code}", &referral_bridge_adapters::encode_component(code)),
                ),
                _ => value(*field, state),
            };
            (name.clone(), value)
        })
        .collect()
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

/// What the bridge writes as `field` for `state` (`null` when not known yet).
pub fn value(field: Field, state: &ReferralState) -> Value {
    match field {
        Field::SubscriberId => text(&state.platform_id),
        Field::Code => text(&state.referral_code),
        Field::Link => text(&state.referral_link),
        // SparkLoop rejects a referral it takes for fraud (`referral_status: "rejected"`); its
        // own integrations then write REJECTED here (DESIGN 3.8).
        Field::IsReferred if state.partner_status.as_deref() == Some("rejected") => {
            "REJECTED".into()
        }
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
