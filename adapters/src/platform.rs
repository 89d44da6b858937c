//! Referral platforms' callbacks (SparkLoop, ReferralLoop, LoyaltySurf), verified and parsed into normalised updates of
//! the people they name, the same verify-then-parse shape as the ESP side.

use serde_json::Value;

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
