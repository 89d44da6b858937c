//! A subscriber's referral state: read as their ESP fields are written, and brought up to date
//! by the platforms' callbacks; and the ESP's own id, once looked up.

use diesel::prelude::*;
use referral_bridge_adapters::platform::{PersonUpdate, ReferralData};

use super::schema::subscribers;
use super::subscribers::SUBSCRIBED;
use super::{DbConnection, StoreError};

/// A subscriber's referral state: what is written into their ESP fields.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = subscribers)]
pub struct ReferralState {
    /// Normalised email.
    pub email: String,
    /// The ESP's id as a JSON literal.
    pub esp_id: Option<String>,
    /// The platform's id.
    pub platform_id: Option<String>,
    /// Referral code.
    pub referral_code: Option<String>,
    /// Referral link.
    pub referral_link: Option<String>,
    /// Whether they were referred.
    pub referred: Option<bool>,
    /// How many they referred.
    pub referral_count: Option<i64>,
    /// Referrals needed for the next reward.
    pub next_reward: Option<i64>,
    /// Id of the last reward won.
    pub last_reward: Option<String>,
    /// Most recent coupon code.
    pub last_coupon: Option<String>,
    /// Partner referral status.
    pub partner_status: Option<String>,
    /// When they last referred someone (unix seconds).
    pub last_referral_at: Option<i64>,
    /// Their place in a waitlist.
    pub position: Option<i64>,
    /// Whether the platform removed them.
    pub platform_removed: Option<bool>,
    /// Their rank on the platform's leaderboard.
    pub leaderboard_rank: Option<i64>,
    /// Whether they won the campaign.
    pub winner: Option<bool>,
    /// The platform's fraud risk level.
    pub fraud_risk: Option<String>,
    /// The SHA-256 of the body last written to the ESP for them.
    pub esp_written_sha256: Option<String>,
}

/// The ESP's id from its stored JSON literal, in the type the ESP sent (number or text).
pub fn esp_id_value(literal: Option<&str>) -> Option<serde_json::Value> {
    literal.and_then(|literal| serde_json::from_str(literal).ok())
}

/// The referral state of subscriber `id`.
pub fn referral_state(
    conn: &mut DbConnection,
    id: i64,
) -> Result<Option<ReferralState>, StoreError> {
    Ok(subscribers::table
        .find(id)
        .select(ReferralState::as_select())
        .first(conn)
        .optional()?)
}

/// What a platform says of a person; `None` leaves a column as it is.
#[derive(AsChangeset, Insertable)]
#[diesel(table_name = subscribers)]
struct ReferralChanges<'a> {
    first_name: Option<&'a str>,
    name: Option<&'a str>,
    platform_id: Option<&'a str>,
    referral_code: Option<&'a str>,
    referral_link: Option<&'a str>,
    referred: Option<bool>,
    referral_count: Option<i64>,
    next_reward: Option<i64>,
    last_reward: Option<&'a str>,
    last_coupon: Option<&'a str>,
    partner_status: Option<&'a str>,
    last_referral_at: Option<i64>,
    position: Option<i64>,
    platform_removed: Option<bool>,
    leaderboard_rank: Option<i64>,
    winner: Option<bool>,
    fraud_risk: Option<&'a str>,
    updated_at: i64,
}

/// Brings a person's record up to date with what a platform callback says of them, and returns
/// their id. Someone the bridge has not heard of yet (the platform knew them first, as after
/// its own list import) is recorded as subscribed.
pub fn apply_referral(
    conn: &mut DbConnection,
    update: &PersonUpdate,
    now: i64,
) -> Result<i64, StoreError> {
    let changes = changes(&update.data, now);
    let email = update.email.as_str();
    let found: Option<i64> = subscribers::table
        .filter(subscribers::email.eq(email))
        .select(subscribers::id)
        .first(conn)
        .optional()?;
    Ok(match found {
        Some(id) => {
            diesel::update(subscribers::table.find(id))
                .set(&changes)
                .execute(conn)?;
            id
        }
        None => diesel::insert_into(subscribers::table)
            .values((
                &changes,
                subscribers::email.eq(email),
                subscribers::status.eq(SUBSCRIBED),
                subscribers::created_at.eq(now),
            ))
            .returning(subscribers::id)
            .get_result(conn)?,
    })
}

/// Brings subscriber `id` up to date with what a platform says of them (its answer to a call
/// made for them); `None` values leave a column as it is.
pub fn apply_referral_to(
    conn: &mut DbConnection,
    id: i64,
    data: &ReferralData,
    now: i64,
) -> Result<(), StoreError> {
    diesel::update(subscribers::table.find(id))
        .set(&changes(data, now))
        .execute(conn)?;
    Ok(())
}

/// The columns `data` sets.
fn changes(data: &ReferralData, now: i64) -> ReferralChanges<'_> {
    ReferralChanges {
        first_name: data.first_name.as_deref(),
        name: data.name.as_deref(),
        platform_id: data.platform_id.as_deref(),
        referral_code: data.referral_code.as_deref(),
        referral_link: data.referral_link.as_deref(),
        referred: data.referred,
        referral_count: data.referral_count,
        next_reward: data.next_reward,
        last_reward: data.last_reward.as_deref(),
        last_coupon: data.last_coupon.as_deref(),
        partner_status: data.partner_status.as_deref(),
        last_referral_at: data.last_referral_at,
        position: data.position,
        platform_removed: data.removed,
        leaderboard_rank: data.rank,
        winner: data.winner,
        fraud_risk: data.fraud_risk.as_deref(),
        updated_at: now,
    }
}

/// Keeps the ESP's id (a JSON literal) of a subscriber, found by looking them up.
pub fn set_esp_id(conn: &mut DbConnection, id: i64, esp_id: &str) -> Result<(), StoreError> {
    diesel::update(subscribers::table.find(id))
        .set(subscribers::esp_id.eq(esp_id))
        .execute(conn)?;
    Ok(())
}
