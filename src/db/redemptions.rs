//! Rewards redeemed: kept for the operator, with the shipping details, never sent to the ESP.

use diesel::prelude::*;

use super::schema::redemptions;
use super::{DbConnection, StoreError};

/// A redemption to store.
#[derive(Debug, Insertable)]
#[diesel(table_name = redemptions)]
pub struct NewRedemption<'a> {
    /// Who redeemed.
    pub subscriber_id: i64,
    /// The reward's id.
    pub reward_id: Option<&'a str>,
    /// The reward's name.
    pub reward_name: Option<&'a str>,
    /// The variant chosen.
    pub variant_name: Option<&'a str>,
    /// The variant's SKU.
    pub variant_sku: Option<&'a str>,
    /// The coupon code.
    pub coupon: Option<&'a str>,
    /// The shipping details as JSON text.
    pub shipping_details: Option<String>,
    /// The callback it came in (gone once its body is pruned).
    pub inbound_event_id: Option<i64>,
    /// When it arrived (unix ms).
    pub redeemed_at: i64,
}

/// Stores a redemption.
pub fn insert(conn: &mut DbConnection, redemption: &NewRedemption<'_>) -> Result<(), StoreError> {
    diesel::insert_into(redemptions::table)
        .values(redemption)
        .execute(conn)?;
    Ok(())
}

/// A stored redemption with the redeemer's address, for the fulfilment export.
#[derive(Debug, Queryable)]
pub struct RedemptionRow {
    /// The redeemer's address.
    pub email: String,
    /// The reward's id.
    pub reward_id: Option<String>,
    /// The reward's name.
    pub reward_name: Option<String>,
    /// The variant chosen.
    pub variant_name: Option<String>,
    /// The variant's SKU.
    pub variant_sku: Option<String>,
    /// The coupon code.
    pub coupon: Option<String>,
    /// The shipping details as JSON text.
    pub shipping_details: Option<String>,
    /// When it arrived (unix ms).
    pub redeemed_at: i64,
}

/// The redemptions made at or after `since` (unix ms), oldest first, `limit` after `after_id`.
pub fn since(
    conn: &mut DbConnection,
    since: i64,
    after_id: i64,
    limit: i64,
) -> Result<Vec<(i64, RedemptionRow)>, StoreError> {
    use super::schema::subscribers;
    Ok(redemptions::table
        .inner_join(subscribers::table.on(subscribers::id.eq(redemptions::subscriber_id)))
        .filter(redemptions::redeemed_at.ge(since))
        .filter(redemptions::id.gt(after_id))
        .order(redemptions::id)
        .limit(limit)
        .select((
            redemptions::id,
            (
                subscribers::email,
                redemptions::reward_id,
                redemptions::reward_name,
                redemptions::variant_name,
                redemptions::variant_sku,
                redemptions::coupon,
                redemptions::shipping_details,
                redemptions::redeemed_at,
            ),
        ))
        .load(conn)?)
}
