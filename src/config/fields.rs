//! The ESP custom fields the bridge can write (DESIGN 3.5): which referral value goes into which
//! field, under names the operator may change, switch off, or switch on (`ESP_FIELD_*`).

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
