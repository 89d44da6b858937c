//! Erasure (DESIGN 3.10): everything stored about one person, deleted in one transaction, and
//! the platform deletion queued before it when the platform is to forget them too.

use diesel::prelude::*;

use super::schema::{attempts, inbound_events, jobs, redemptions, subscribers};
use super::wal::Checkpointed;
use super::{DbConnection, StoreError};

diesel::define_sql_function! {
    /// SQL's `lower`, the same on both backends for the ASCII of addresses.
    fn lower(text: diesel::sql_types::Text) -> diesel::sql_types::Text;
}

/// What an erasure removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Erased {
    /// The subscriber's id (for the log: never the address).
    pub subscriber_id: i64,
    /// Stored webhook bodies (theirs, and any other naming their address).
    pub bodies: u64,
    /// Jobs, open ones included.
    pub jobs: u64,
    /// Attempts.
    pub attempts: u64,
    /// Redemptions.
    pub redemptions: u64,
}

/// The id of the subscriber with address `email` (already normalised), if there is one.
pub fn subscriber_id(conn: &mut DbConnection, email: &str) -> Result<Option<i64>, StoreError> {
    Ok(subscribers::table
        .filter(subscribers::email.eq(email))
        .select(subscribers::id)
        .first(conn)
        .optional()?)
}

/// A LIKE pattern matching `text` anywhere, its `%`, `_` and `\` taken literally.
fn containing(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// Deletes subscriber `id` (address `email`) and everything stored about them: their jobs (open
/// ones too) and attempts, their redemptions, their webhook bodies, and any other stored body
/// that names the address (a referral callback naming them as the referrer), as JSON writes it
/// or percent-encoded as a form does. Run it in one writing transaction.
pub fn subscriber(conn: &mut DbConnection, id: i64, email: &str) -> Result<Erased, StoreError> {
    // Every connection zeroes deleted content where it costs no extra write (`FAST`); an
    // erasure zeroes the pages it frees too.
    let sqlite = matches!(conn, DbConnection::Sqlite(_));
    if sqlite {
        diesel::sql_query("PRAGMA secure_delete = ON").execute(conn)?;
    }
    let erased = erase(conn, id, email);
    if sqlite {
        diesel::sql_query("PRAGMA secure_delete = FAST").execute(conn)?;
    }
    erased
}

/// [`subscriber`]'s deletions.
fn erase(conn: &mut DbConnection, id: i64, email: &str) -> Result<Erased, StoreError> {
    let mut erased = Erased {
        subscriber_id: id,
        ..Erased::default()
    };
    let their_jobs = jobs::table
        .filter(jobs::subscriber_id.eq(id))
        .select(jobs::id);
    erased.attempts = diesel::delete(attempts::table.filter(attempts::job_id.eq_any(their_jobs)))
        .execute(conn)? as u64;
    erased.jobs =
        diesel::delete(jobs::table.filter(jobs::subscriber_id.eq(id))).execute(conn)? as u64;
    erased.redemptions =
        diesel::delete(redemptions::table.filter(redemptions::subscriber_id.eq(id)))
            .execute(conn)? as u64;

    let lowered = email.to_lowercase();
    let encoded = referral_bridge_adapters::encode_component(&lowered).to_lowercase();
    let naming = |pattern: String| lower(inbound_events::body).like(pattern).escape('\\');
    let bodies: Vec<i64> = inbound_events::table
        .filter(
            inbound_events::subscriber_id
                .eq(id)
                .or(inbound_events::subject.eq(&lowered))
                .or(naming(containing(&lowered)).nullable())
                .or(naming(containing(&encoded)).nullable()),
        )
        .select(inbound_events::id)
        .load(conn)?;
    for chunk in bodies.chunks(super::ROWS_PER_STATEMENT) {
        // Another person's job may point at a body that names this one: it keeps its payload.
        diesel::update(jobs::table.filter(jobs::inbound_event_id.eq_any(chunk)))
            .set(jobs::inbound_event_id.eq(None::<i64>))
            .execute(conn)?;
        erased.bodies +=
            diesel::delete(inbound_events::table.filter(inbound_events::id.eq_any(chunk)))
                .execute(conn)? as u64;
    }
    // Answers of other deliveries that echo the address.
    diesel::update(
        attempts::table.filter(
            lower(attempts::response_body.assume_not_null())
                .like(containing(&lowered))
                .escape('\\'),
        ),
    )
    .set(attempts::response_body.eq(None::<String>))
    .execute(conn)?;
    diesel::delete(subscribers::table.filter(subscribers::id.eq(id))).execute(conn)?;
    Ok(erased)
}

/// SQLite: writes the WAL back into the file and empties it, so that no copy of an erased page
/// stays in the log. Postgres: nothing (no table holds the rows any more).
///
/// A checkpoint already running (`wal::run`'s, every few milliseconds) makes this one answer
/// "busy" without waiting: it is tried again for up to a second. Returns whether the log was
/// emptied.
pub fn checkpoint(conn: &mut DbConnection) -> Result<bool, StoreError> {
    let DbConnection::Sqlite(c) = conn else {
        return Ok(true);
    };
    for _ in 0..100 {
        let done: Checkpointed =
            diesel::sql_query("PRAGMA wal_checkpoint(TRUNCATE)").get_result(c)?;
        if done.busy == 0 {
            return Ok(true);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Ok(false)
}
