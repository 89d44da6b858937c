//! Retention (DESIGN 3.10): stored webhook bodies, finished jobs and their attempts older than
//! the cutoff, deleted in short batches. Both walks go by id, oldest first, and stop at the
//! first row younger than the cutoff (ids are handed out in time order), so a pass reads the
//! old rows and the few it keeps, never the whole table.

use diesel::dsl::{exists, not};
use diesel::prelude::*;

use super::schema::{admin_sessions, attempts, inbound_events, jobs};
use super::{DbConnection, StoreError};

/// The statuses of a job that has finished with nothing left to keep.
const FINISHED: [&str; 2] = ["done", "skipped"];

/// What one batch removed (or, dry, would remove).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Stored webhook bodies.
    pub bodies: u64,
    /// Finished (done or skipped) jobs.
    pub jobs: u64,
    /// Attempts of those jobs.
    pub attempts: u64,
    /// Expired dashboard sessions.
    pub sessions: u64,
}

impl std::ops::AddAssign for Removed {
    fn add_assign(&mut self, other: Removed) {
        self.bodies += other.bodies;
        self.jobs += other.jobs;
        self.attempts += other.attempts;
        self.sessions += other.sessions;
    }
}

/// Where a walk goes on: after this id, or finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// More rows may be old: go on after this id.
    After(i64),
    /// The walk reached a row younger than the cutoff, or the end.
    Done,
}

impl Walk {
    /// After a batch that read `read` rows of the `limit` asked for, the last with id `last`:
    /// on after it, or done when the table ran out.
    fn next(last: Option<i64>, read: usize, limit: i64) -> Walk {
        match last {
            Some(id) if read as i64 >= limit => Walk::After(id),
            _ => Walk::Done,
        }
    }
}

/// One batch of the jobs' walk from after `after`: finished jobs that finished before `cutoff`,
/// with their attempts, among the next `limit` jobs created before it. Dead and open jobs stay.
pub fn jobs_batch(
    conn: &mut DbConnection,
    after: i64,
    cutoff: i64,
    limit: i64,
    dry_run: bool,
) -> Result<(Removed, Walk), StoreError> {
    let rows: Vec<(i64, String, i64, Option<i64>)> = jobs::table
        .filter(jobs::id.gt(after))
        .order(jobs::id)
        .limit(limit)
        .select((jobs::id, jobs::status, jobs::created_at, jobs::finished_at))
        .load(conn)?;
    let mut walk = Walk::next(rows.last().map(|r| r.0), rows.len(), limit);
    let mut old = Vec::new();
    for (id, status, created_at, finished_at) in &rows {
        if *created_at >= cutoff {
            walk = Walk::Done;
            break;
        }
        let finished = FINISHED.contains(&status.as_str());
        if finished && finished_at.is_some_and(|at| at < cutoff) {
            old.push(*id);
        }
    }
    let mut removed = Removed::default();
    if old.is_empty() {
        return Ok((removed, walk));
    }
    let their_attempts = attempts::table.filter(attempts::job_id.eq_any(&old));
    if dry_run {
        removed.attempts = their_attempts.count().get_result::<i64>(conn)? as u64;
        removed.jobs = old.len() as u64;
    } else {
        removed.attempts = diesel::delete(their_attempts).execute(conn)? as u64;
        removed.jobs =
            diesel::delete(jobs::table.filter(jobs::id.eq_any(&old))).execute(conn)? as u64;
    }
    Ok((removed, walk))
}

/// One batch of the bodies' walk from after `after`: webhooks received before `cutoff` among the
/// next `limit`, unless a job still points at one (a dead job keeps its body).
pub fn bodies_batch(
    conn: &mut DbConnection,
    after: i64,
    cutoff: i64,
    limit: i64,
    dry_run: bool,
) -> Result<(Removed, Walk), StoreError> {
    let rows: Vec<(i64, i64)> = inbound_events::table
        .filter(inbound_events::id.gt(after))
        .order(inbound_events::id)
        .limit(limit)
        .select((inbound_events::id, inbound_events::received_at))
        .load(conn)?;
    let mut walk = Walk::next(rows.last().map(|r| r.0), rows.len(), limit);
    let mut old = Vec::new();
    for (id, received_at) in &rows {
        if *received_at >= cutoff {
            walk = Walk::Done;
            break;
        }
        old.push(*id);
    }
    let mut removed = Removed::default();
    if old.is_empty() {
        return Ok((removed, walk));
    }
    let unreferenced = inbound_events::table
        .filter(inbound_events::id.eq_any(&old))
        .filter(not(exists(jobs::table.filter(
            jobs::inbound_event_id.eq(inbound_events::id.nullable()),
        ))));
    removed.bodies = if dry_run {
        // Nothing was deleted: count the bodies whose jobs all go in this pass.
        inbound_events::table
            .filter(inbound_events::id.eq_any(&old))
            .filter(not(exists(
                jobs::table
                    .filter(jobs::inbound_event_id.eq(inbound_events::id.nullable()))
                    .filter(
                        jobs::status
                            .ne_all(FINISHED)
                            .or(jobs::finished_at.assume_not_null().ge(cutoff))
                            .or(jobs::created_at.ge(cutoff)),
                    ),
            )))
            .count()
            .get_result::<i64>(conn)? as u64
    } else {
        // Redemptions keep their own columns: the reference is set to NULL by the database.
        diesel::delete(unreferenced).execute(conn)? as u64
    };
    Ok((removed, walk))
}

/// Deletes (or, dry, counts) the dashboard sessions that expired before `now`.
pub fn expired_sessions(
    conn: &mut DbConnection,
    now: i64,
    dry_run: bool,
) -> Result<u64, StoreError> {
    let expired = admin_sessions::table.filter(admin_sessions::expires_at.lt(now));
    Ok(if dry_run {
        expired.count().get_result::<i64>(conn)? as u64
    } else {
        diesel::delete(expired).execute(conn)? as u64
    })
}

/// The size of the database in bytes (SQLite: its pages; Postgres: `pg_database_size`).
pub fn database_size(conn: &mut DbConnection) -> Result<i64, StoreError> {
    #[derive(QueryableByName)]
    struct Size {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        bytes: i64,
    }
    let sql = match conn {
        DbConnection::Sqlite(_) => {
            "SELECT page_count * page_size AS bytes FROM pragma_page_count(), pragma_page_size()"
        }
        DbConnection::Postgres(_) => "SELECT pg_database_size(current_database()) AS bytes",
    };
    Ok(diesel::sql_query(sql).get_result::<Size>(conn)?.bytes)
}

/// SQLite: gives up to `pages` free pages back to the file system; returns the bytes given
/// back. Postgres: 0 (autovacuum makes deleted rows' space reusable; the files keep their size).
pub fn incremental_vacuum(conn: &mut DbConnection, pages: i64) -> Result<i64, StoreError> {
    if matches!(conn, DbConnection::Postgres(_)) {
        return Ok(0);
    }
    let before = database_size(conn)?;
    diesel::sql_query(format!("PRAGMA incremental_vacuum({pages})")).execute(conn)?;
    Ok((before - database_size(conn)?).max(0))
}

/// Postgres: `VACUUM` of the tables the bridge deletes from and updates all the time, when the
/// server does not vacuum by itself (`autovacuum` or `track_counts` off, as on some CI or
/// tuned servers): until a table is vacuumed the space of its deleted and replaced rows is not
/// reused, and the database grows with every row ever written, pruned or not. Answers whether
/// it vacuumed; with autovacuum on it leaves the tables to it (migration 12 makes it visit them
/// after 2% changed). Not in a transaction. SQLite: nothing (its freed pages are reused).
pub fn vacuum_unless_autovacuum(conn: &mut DbConnection) -> Result<bool, StoreError> {
    #[derive(QueryableByName)]
    struct Server {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        vacuums: bool,
    }
    let DbConnection::Postgres(c) = conn else {
        return Ok(false);
    };
    let server = diesel::sql_query(
        "SELECT current_setting('autovacuum') = 'on' \
            AND current_setting('track_counts') = 'on' AS vacuums",
    )
    .get_result::<Server>(c)?;
    if server.vacuums {
        return Ok(false);
    }
    // SKIP_LOCKED: a table another instance's pass is vacuuming is being done already.
    diesel::connection::SimpleConnection::batch_execute(
        c,
        "VACUUM (SKIP_LOCKED) inbound_events, jobs, attempts, subscribers",
    )?;
    Ok(true)
}

/// When the oldest stored webhook body was received (unix ms), if any is stored.
pub fn oldest_body(conn: &mut DbConnection) -> Result<Option<i64>, StoreError> {
    Ok(inbound_events::table
        .order(inbound_events::id)
        .select(inbound_events::received_at)
        .first::<i64>(conn)
        .optional()?)
}
