//! A subscriber's referral state: read as their ESP fields are written, and brought up to date
//! by the platforms' callbacks; and the ESP's own id, once looked up.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text};
use referral_bridge_adapters::platform::{PersonUpdate, ReferralData};

use super::schema::subscribers;
use super::subscribers::SUBSCRIBED;
use super::{column, DbConnection, StoreError};
use crate::db::prepared::prepared;

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

/// The platform's own id of subscriber `id`, if it has told the bridge one (none, too, for a
/// subscriber who is gone).
pub fn platform_id(conn: &mut DbConnection, id: i64) -> Result<Option<String>, StoreError> {
    Ok(subscribers::table
        .find(id)
        .select(subscribers::platform_id)
        .first::<Option<String>>(conn)
        .optional()?
        .flatten())
}

/// What a platform says of a person; `None` leaves a column as it is.
#[derive(Clone, AsChangeset, Insertable)]
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
    apply_changes(
        conn,
        update.email.as_str(),
        &changes(&update.data, now),
        now,
    )
}

/// [`apply_referral`] for many updates, taken in order (for a column, the last value given
/// wins; `None` leaves it), with their times; returns the people's ids by email. On Postgres
/// one statement whatever their number (an upsert from arrays); on SQLite, where a statement
/// costs no round trip, a read and a write per person.
pub fn apply_referrals(
    conn: &mut DbConnection,
    updates: &[(&PersonUpdate, i64)],
) -> Result<HashMap<String, i64>, StoreError> {
    // One set of changes per person, so that the upsert touches each row once.
    let mut order: Vec<&str> = Vec::new();
    let mut merged: HashMap<&str, (ReferralChanges<'_>, i64)> = HashMap::new();
    for (update, now) in updates {
        let email = update.email.as_str();
        let later = changes(&update.data, *now);
        match merged.get_mut(email) {
            Some((earlier, at)) => {
                *earlier = earlier.clone().overlaid(later);
                *at = (*at).min(*now);
            }
            None => {
                order.push(email);
                merged.insert(email, (later, *now));
            }
        }
    }
    let people: Vec<(&str, &ReferralChanges<'_>, i64)> = order
        .iter()
        .map(|email| {
            let (changes, first_seen) = &merged[email];
            (*email, changes, *first_seen)
        })
        .collect();
    let mut ids = HashMap::with_capacity(people.len());
    let DbConnection::Postgres(c) = conn else {
        for (email, changes, first_seen) in people {
            ids.insert(
                email.to_string(),
                apply_changes(conn, email, changes, first_seen)?,
            );
        }
        return Ok(ids);
    };
    if people.is_empty() {
        return Ok(ids);
    }
    #[derive(QueryableByName)]
    struct Returned {
        #[diesel(sql_type = BigInt)]
        id: i64,
        #[diesel(sql_type = Text)]
        email: String,
    }
    // One array per column (see `inbox::insert_all`); a person already here keeps every column
    // the callbacks left out, as the one-by-one update does.
    let returned: Vec<Returned> = prepared(
        diesel::sql_query(
            "INSERT INTO subscribers (email, status, created_at, updated_at, first_name, name, \
         platform_id, referral_code, referral_link, referred, referral_count, next_reward, \
         last_reward, last_coupon, partner_status, last_referral_at, position, \
         platform_removed, leaderboard_rank, winner, fraud_risk) \
         SELECT u.email, $1, u.created_at, u.updated_at, u.first_name, u.name, u.platform_id, \
         u.referral_code, u.referral_link, u.referred, u.referral_count, u.next_reward, \
         u.last_reward, u.last_coupon, u.partner_status, u.last_referral_at, u.position, \
         u.platform_removed, u.leaderboard_rank, u.winner, u.fraud_risk \
         FROM unnest($2::text[], $3::int8[], $4::int8[], $5::text[], $6::text[], $7::text[], \
         $8::text[], $9::text[], $10::bool[], $11::int8[], $12::int8[], $13::text[], \
         $14::text[], $15::text[], $16::int8[], $17::int8[], $18::bool[], $19::int8[], \
         $20::bool[], $21::text[]) AS u(email, created_at, updated_at, first_name, name, \
         platform_id, referral_code, referral_link, referred, referral_count, next_reward, \
         last_reward, last_coupon, partner_status, last_referral_at, position, \
         platform_removed, leaderboard_rank, winner, fraud_risk) \
         ON CONFLICT (email) DO UPDATE SET \
         updated_at = EXCLUDED.updated_at, \
         first_name = COALESCE(EXCLUDED.first_name, subscribers.first_name), \
         name = COALESCE(EXCLUDED.name, subscribers.name), \
         platform_id = COALESCE(EXCLUDED.platform_id, subscribers.platform_id), \
         referral_code = COALESCE(EXCLUDED.referral_code, subscribers.referral_code), \
         referral_link = COALESCE(EXCLUDED.referral_link, subscribers.referral_link), \
         referred = COALESCE(EXCLUDED.referred, subscribers.referred), \
         referral_count = COALESCE(EXCLUDED.referral_count, subscribers.referral_count), \
         next_reward = COALESCE(EXCLUDED.next_reward, subscribers.next_reward), \
         last_reward = COALESCE(EXCLUDED.last_reward, subscribers.last_reward), \
         last_coupon = COALESCE(EXCLUDED.last_coupon, subscribers.last_coupon), \
         partner_status = COALESCE(EXCLUDED.partner_status, subscribers.partner_status), \
         last_referral_at = COALESCE(EXCLUDED.last_referral_at, subscribers.last_referral_at), \
         position = COALESCE(EXCLUDED.position, subscribers.position), \
         platform_removed = COALESCE(EXCLUDED.platform_removed, subscribers.platform_removed), \
         leaderboard_rank = COALESCE(EXCLUDED.leaderboard_rank, subscribers.leaderboard_rank), \
         winner = COALESCE(EXCLUDED.winner, subscribers.winner), \
         fraud_risk = COALESCE(EXCLUDED.fraud_risk, subscribers.fraud_risk) \
         RETURNING id, email",
        )
        .bind::<Text, _>(SUBSCRIBED)
        .bind::<Array<Text>, _>(column(&people, |p| p.0))
        .bind::<Array<BigInt>, _>(column(&people, |p| p.2))
        .bind::<Array<BigInt>, _>(column(&people, |p| p.1.updated_at))
        .bind::<Array<Nullable<Text>>, _>(column(&people, |p| p.1.first_name))
        .bind::<Array<Nullable<Text>>, _>(column(&people, |p| p.1.name))
        .bind::<Array<Nullable<Text>>, _>(column(&people, |p| p.1.platform_id))
        .bind::<Array<Nullable<Text>>, _>(column(&people, |p| p.1.referral_code))
        .bind::<Array<Nullable<Text>>, _>(column(&people, |p| p.1.referral_link))
        .bind::<Array<Nullable<Bool>>, _>(column(&people, |p| p.1.referred))
        .bind::<Array<Nullable<BigInt>>, _>(column(&people, |p| p.1.referral_count))
        .bind::<Array<Nullable<BigInt>>, _>(column(&people, |p| p.1.next_reward))
        .bind::<Array<Nullable<Text>>, _>(column(&people, |p| p.1.last_reward))
        .bind::<Array<Nullable<Text>>, _>(column(&people, |p| p.1.last_coupon))
        .bind::<Array<Nullable<Text>>, _>(column(&people, |p| p.1.partner_status))
        .bind::<Array<Nullable<BigInt>>, _>(column(&people, |p| p.1.last_referral_at))
        .bind::<Array<Nullable<BigInt>>, _>(column(&people, |p| p.1.position))
        .bind::<Array<Nullable<Bool>>, _>(column(&people, |p| p.1.platform_removed))
        .bind::<Array<Nullable<BigInt>>, _>(column(&people, |p| p.1.leaderboard_rank))
        .bind::<Array<Nullable<Bool>>, _>(column(&people, |p| p.1.winner))
        .bind::<Array<Nullable<Text>>, _>(column(&people, |p| p.1.fraud_risk)),
    )
    .load(c)?;
    ids.extend(returned.into_iter().map(|row| (row.email, row.id)));
    Ok(ids)
}

/// Writes `changes` into the record of `email`, recording them as subscribed since `now` if the
/// bridge has not heard of them; returns their id.
fn apply_changes(
    conn: &mut DbConnection,
    email: &str,
    changes: &ReferralChanges<'_>,
    now: i64,
) -> Result<i64, StoreError> {
    let found: Option<i64> = subscribers::table
        .filter(subscribers::email.eq(email))
        .select(subscribers::id)
        .first(conn)
        .optional()?;
    Ok(match found {
        Some(id) => {
            diesel::update(subscribers::table.find(id))
                .set(changes)
                .execute(conn)?;
            id
        }
        None => diesel::insert_into(subscribers::table)
            .values((
                changes,
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

impl<'a> ReferralChanges<'a> {
    /// These changes followed by `later`'s: a column `later` sets takes its value.
    fn overlaid(self, later: ReferralChanges<'a>) -> Self {
        ReferralChanges {
            first_name: later.first_name.or(self.first_name),
            name: later.name.or(self.name),
            platform_id: later.platform_id.or(self.platform_id),
            referral_code: later.referral_code.or(self.referral_code),
            referral_link: later.referral_link.or(self.referral_link),
            referred: later.referred.or(self.referred),
            referral_count: later.referral_count.or(self.referral_count),
            next_reward: later.next_reward.or(self.next_reward),
            last_reward: later.last_reward.or(self.last_reward),
            last_coupon: later.last_coupon.or(self.last_coupon),
            partner_status: later.partner_status.or(self.partner_status),
            last_referral_at: later.last_referral_at.or(self.last_referral_at),
            position: later.position.or(self.position),
            platform_removed: later.platform_removed.or(self.platform_removed),
            leaderboard_rank: later.leaderboard_rank.or(self.leaderboard_rank),
            winner: later.winner.or(self.winner),
            fraud_risk: later.fraud_risk.or(self.fraud_risk),
            updated_at: later.updated_at.max(self.updated_at),
        }
    }
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
