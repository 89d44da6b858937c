//! `referral-bridge redemptions export [--since DATE]`: the stored `reward_redeemed` records as
//! CSV on standard output, for whoever ships the rewards (DESIGN 3.10).

use std::process::ExitCode;

use anyhow::Context;

use crate::config::Settings;
use crate::db::redemptions;
use crate::http::admin::rfc3339;
use crate::startup::{existing_database, ExistingDatabase};

/// Rows read per query.
const PAGE: i64 = 1000;

/// `YYYY-MM-DD` (midnight UTC) or RFC 3339, as unix ms.
pub fn parse_since(text: &str) -> anyhow::Result<i64> {
    if let Ok(at) = text.parse::<jiff::Timestamp>() {
        return Ok(at.as_millisecond());
    }
    let date: jiff::civil::Date = text.parse().map_err(|_| {
        anyhow::anyhow!("--since: `{text}` is not a date like 2026-11-26 or 2026-11-26T10:00:00Z")
    })?;
    Ok(jiff::tz::Offset::UTC
        .to_timestamp(date.to_datetime(jiff::civil::Time::midnight()))
        .context("--since: the date is out of range")?
        .as_millisecond())
}

/// Writes the CSV to standard output.
pub async fn export(settings: &Settings, since: Option<String>) -> anyhow::Result<ExitCode> {
    let since = since
        .as_deref()
        .map(parse_since)
        .transpose()?
        .unwrap_or(i64::MIN);
    let db = match existing_database(settings).await? {
        ExistingDatabase::Found { db, pending: 0 } => db,
        ExistingDatabase::Found { pending, .. } => anyhow::bail!(
            "the database lacks {pending} migration(s); `referral-bridge migrate` applies them"
        ),
        ExistingDatabase::Missing => anyhow::bail!(
            "the database {} does not exist: no redemption has been stored",
            settings.database_url.redacted()
        ),
    };
    tokio::task::spawn_blocking(move || {
        let mut out = csv::Writer::from_writer(std::io::stdout().lock());
        out.write_record([
            "email",
            "reward_id",
            "reward",
            "variant",
            "sku",
            "coupon",
            "shipping_details",
            "redeemed_at",
        ])?;
        let mut after = 0;
        loop {
            let page = db.read(|conn| redemptions::since(conn, since, after, PAGE))?;
            for (_, r) in &page {
                let text = |v: &Option<String>| v.clone().unwrap_or_default();
                out.write_record([
                    r.email.clone(),
                    text(&r.reward_id),
                    text(&r.reward_name),
                    text(&r.variant_name),
                    text(&r.variant_sku),
                    text(&r.coupon),
                    text(&r.shipping_details),
                    rfc3339(r.redeemed_at),
                ])?;
            }
            match page.last() {
                Some((id, _)) if page.len() as i64 == PAGE => after = *id,
                _ => break,
            }
        }
        out.flush()?;
        Ok(ExitCode::SUCCESS)
    })
    .await
    .context("the export task panicked")?
}
