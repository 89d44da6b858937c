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
    /// The callback it came in.
    pub inbound_event_id: i64,
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
