//! What reconciliation (DESIGN 3.9) reads and keeps: subscribers with their referral state by
//! address and in id order, the record of each finished run, and the schedule that lets one
//! instance at a time run it periodically.

use diesel::prelude::*;

use super::referral::ReferralState;
use super::schema::{reconcile_runs, schedules, subscribers};
use super::{DbConnection, StoreError, ROWS_PER_STATEMENT};

/// A subscriber as reconciliation compares them: id, status and referral state.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = subscribers)]
pub struct Known {
    /// The bridge's id.
    pub id: i64,
    /// `subscribed` or `unsubscribed`.
    pub status: String,
    /// What their ESP fields are written from.
    #[diesel(embed)]
    pub state: ReferralState,
}

/// The subscribers with these normalised emails (in a transaction that writes, lock them first
/// with [`super::subscribers::lock_by_emails`]).
pub fn known_by_emails(conn: &mut DbConnection, emails: &[&str]) -> Result<Vec<Known>, StoreError> {
    let mut found = Vec::with_capacity(emails.len());
    for chunk in emails.chunks(ROWS_PER_STATEMENT) {
        found.extend(
            subscribers::table
                .filter(subscribers::email.eq_any(chunk))
                .select(Known::as_select())
                .load(conn)?,
        );
    }
    Ok(found)
}

/// Up to `limit` subscribers with an id above `after`, in id order: a walk over all of them that
/// holds one page in memory at a time.
pub fn subscribers_after(
    conn: &mut DbConnection,
    after: i64,
    limit: i64,
) -> Result<Vec<super::subscribers::Subscriber>, StoreError> {
    Ok(subscribers::table
        .filter(subscribers::id.gt(after))
        .order(subscribers::id)
        .limit(limit)
        .select(super::subscribers::Subscriber::as_select())
        .load(conn)?)
}

/// How many subscribers the bridge knows, unsubscribed ones included.
pub fn count_subscribers(conn: &mut DbConnection) -> Result<i64, StoreError> {
    Ok(subscribers::table.count().get_result(conn)?)
}

/// A finished run, as recorded.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = reconcile_runs)]
pub struct Run {
    /// When it started (unix ms).
    pub started_at: i64,
    /// When it finished (unix ms).
    pub finished_at: i64,
    /// Whether it mended what it found (`--fix`).
    pub fixed: bool,
    /// Distinct subscribers the platform listed.
    pub platform_subscribers: i64,
    /// Subscribers here, unsubscribed ones included.
    pub here: i64,
    /// Subscribed here, unknown there.
    pub missing_at_platform: i64,
    /// Unsubscribed here, listed there.
    pub unsubscribed_here: i64,
    /// Listed there, never seen here.
    pub unknown_here: i64,
    /// Fields that differ (one per field and person).
    pub fields_differ: i64,
    /// Jobs queued to mend them.
    pub queued: i64,
}

/// Records a finished run.
pub fn record_run(conn: &mut DbConnection, run: &Run) -> Result<(), StoreError> {
    let insert = diesel::insert_into(reconcile_runs::table).values(run);
    on_backend!(conn, |c| insert.execute(c))?;
    Ok(())
}

/// The last finished run, if any.
pub fn last_run(conn: &mut DbConnection) -> Result<Option<Run>, StoreError> {
    Ok(reconcile_runs::table
        .order(reconcile_runs::id.desc())
        .select(Run::as_select())
        .first(conn)
        .optional()?)
}

/// Takes the turn of periodic work `name` for `holder` when it is due (`now` or later than its
/// `due_at`), moving it `period_ms` on; `false` when it is not due, or another instance took
/// this turn. One `UPDATE` decides, so of instances asking at once only one is given it.
pub fn take_turn(
    conn: &mut DbConnection,
    name: &str,
    holder: &str,
    now: i64,
    period_ms: i64,
) -> Result<bool, StoreError> {
    let insert = diesel::insert_into(schedules::table)
        .values((
            schedules::name.eq(name),
            schedules::due_at.eq(now),
            schedules::holder.eq(None::<String>),
        ))
        .on_conflict_do_nothing();
    on_backend!(conn, |c| insert.execute(c))?;
    let taken = diesel::update(
        schedules::table
            .filter(schedules::name.eq(name))
            .filter(schedules::due_at.le(now)),
    )
    .set((
        schedules::due_at.eq(now + period_ms),
        schedules::holder.eq(holder),
    ))
    .execute(conn)?;
    Ok(taken == 1)
}

/// Forgets subscriber `id`'s referral status (the platform has none for them any more).
pub fn clear_partner_status(conn: &mut DbConnection, id: i64) -> Result<(), StoreError> {
    diesel::update(subscribers::table.find(id))
        .set(subscribers::partner_status.eq(None::<String>))
        .execute(conn)?;
    Ok(())
}

/// Forgets the hash of subscriber `id`'s last field write, so that the next one is sent even
/// when its body is the same (the ESP no longer holds what was written).
pub fn forget_written(conn: &mut DbConnection, id: i64) -> Result<(), StoreError> {
    diesel::update(subscribers::table.find(id))
        .set(subscribers::esp_written_sha256.eq(None::<String>))
        .execute(conn)?;
    Ok(())
}
