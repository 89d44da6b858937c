//! Claiming due jobs under a lease, renewing and releasing leases, and when the next job is due.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Text};

use super::JobStatus;
use crate::db::prepared::prepared;
use crate::db::schema::jobs;
use crate::db::{DbConnection, StoreError};

/// A job a worker has claimed.
#[derive(Debug, Clone, QueryableByName)]
pub struct ClaimedJob {
    /// The job's id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// Whom it is about.
    #[diesel(sql_type = BigInt)]
    pub subscriber_id: i64,
    /// Where it goes.
    #[diesel(sql_type = Text)]
    pub destination: String,
    /// What it does.
    #[diesel(sql_type = Text)]
    pub kind: String,
    /// The request body.
    #[diesel(sql_type = Text)]
    pub payload: String,
    /// Attempts made before this one.
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    /// Start of the retry horizon (unix ms).
    #[diesel(sql_type = BigInt)]
    pub retry_from: i64,
    /// When the claim ends (unix ms); also tells this claim from a later one of the same job.
    #[diesel(sql_type = BigInt)]
    pub lease_expires_at: i64,
}

/// Extends the claim on `job` to `until`, provided it is still this claim and has not ended at
/// `now` (after which another worker, or this one, may have claimed the job again). Returns
/// whether the claim was extended; if not, the job is no longer this worker's to send.
pub fn renew_lease(
    conn: &mut DbConnection,
    job: &ClaimedJob,
    lease_token: &str,
    now: i64,
    until: i64,
) -> Result<bool, StoreError> {
    if job.lease_expires_at <= now {
        return Ok(false);
    }
    let renewed = diesel::update(
        jobs::table
            .filter(jobs::id.eq(job.id))
            .filter(jobs::status.eq(JobStatus::Running.as_str()))
            .filter(jobs::lease_token.eq(lease_token))
            .filter(jobs::lease_expires_at.eq(job.lease_expires_at)),
    )
    .set(jobs::lease_expires_at.eq(until))
    .execute(conn)?;
    Ok(renewed == 1)
}

/// Due jobs, in claiming order: heads of their lines, pending and past `run_at`.
const DUE: &str =
    "j.status = 'pending' AND j.run_at <= {now} AND j.destination IN ({destinations})";

fn in_list(destinations: &[&'static str]) -> String {
    // Destination names are the bridge's own constants, never input, so inlining them is safe.
    destinations
        .iter()
        .map(|d| format!("'{d}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Makes running jobs whose lease ended before `now` pending again (their worker died or
/// stalled); they keep their place in line.
pub fn reclaim_expired(conn: &mut DbConnection, now: i64) -> Result<usize, StoreError> {
    Ok(diesel::update(
        jobs::table
            .filter(jobs::status.eq(JobStatus::Running.as_str()))
            .filter(jobs::lease_expires_at.le(now)),
    )
    .set((
        jobs::status.eq(JobStatus::Pending.as_str()),
        jobs::lease_token.eq(None::<String>),
        jobs::lease_expires_at.eq(None::<i64>),
    ))
    .execute(conn)?)
}

/// Claims up to `limit` due jobs for `destinations`, marking them running under `lease_token`
/// until `lease_until`, after reclaiming expired leases. Run inside [`super::Db::write`]: on
/// Postgres `FOR UPDATE SKIP LOCKED` lets several processes claim at once without ever taking
/// the same job; on SQLite the immediate transaction makes the claim exclusive.
pub fn claim(
    conn: &mut DbConnection,
    destinations: &[&'static str],
    limit: i64,
    lease_token: &str,
    now: i64,
    lease_until: i64,
) -> Result<Vec<ClaimedJob>, StoreError> {
    if destinations.is_empty() || limit <= 0 {
        return Ok(Vec::new());
    }
    if let DbConnection::Postgres(c) = conn {
        // A claim must read `jobs_by_status` from the front and stop after `limit` rows. Until
        // the table has been analysed (a new queue, or one that just grew by a burst), Postgres
        // guesses that few jobs are pending and would rather collect all of them and sort: 10 ms
        // instead of 0.6 ms with 25,000 pending. For this transaction only, it walks the index.
        c.batch_execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")?;
    }
    reclaim_expired(conn, now)?;
    let returning =
        "RETURNING id, subscriber_id, destination, kind, payload, attempts, retry_from, \
                     lease_expires_at";
    let jobs = match conn {
        DbConnection::Postgres(c) => {
            let due = DUE
                .replace("{now}", "$1")
                .replace("{destinations}", &in_list(destinations));
            let sql = format!(
                "UPDATE jobs SET status = 'running', lease_token = $2, lease_expires_at = $3 \
                 WHERE id IN (SELECT j.id FROM jobs j WHERE {due} \
                     ORDER BY j.run_at, j.id LIMIT $4 FOR UPDATE SKIP LOCKED) {returning}"
            );
            prepared(
                diesel::sql_query(sql)
                    .bind::<BigInt, _>(now)
                    .bind::<Text, _>(lease_token)
                    .bind::<BigInt, _>(lease_until)
                    .bind::<BigInt, _>(limit),
            )
            .load::<ClaimedJob>(c)?
        }
        DbConnection::Sqlite(c) => {
            let due = DUE
                .replace("{now}", "?1")
                .replace("{destinations}", &in_list(destinations));
            let sql = format!(
                "UPDATE jobs SET status = 'running', lease_token = ?2, lease_expires_at = ?3 \
                 WHERE id IN (SELECT j.id FROM jobs j WHERE {due} \
                     ORDER BY j.run_at, j.id LIMIT ?4) {returning}"
            );
            diesel::sql_query(sql)
                .bind::<BigInt, _>(now)
                .bind::<Text, _>(lease_token)
                .bind::<BigInt, _>(lease_until)
                .bind::<BigInt, _>(limit)
                .load::<ClaimedJob>(c)?
        }
    };
    Ok(jobs)
}

/// Makes running jobs pending again: those of `lease_token`, or all of them when `None` (a
/// SQLite file is served by one process, so at start-up no other process can hold a lease).
pub fn release_leases(
    conn: &mut DbConnection,
    lease_token: Option<&str>,
) -> Result<usize, StoreError> {
    let running = jobs::table.filter(jobs::status.eq(JobStatus::Running.as_str()));
    let reset = (
        jobs::status.eq(JobStatus::Pending.as_str()),
        jobs::lease_token.eq(None::<String>),
        jobs::lease_expires_at.eq(None::<i64>),
    );
    Ok(match lease_token {
        Some(token) => diesel::update(running.filter(jobs::lease_token.eq(token)))
            .set(reset)
            .execute(conn)?,
        None => diesel::update(running).set(reset).execute(conn)?,
    })
}
/// When the next pending job of `destinations` is due (unix ms); only heads of lines are
/// pending, so this is when the workers next have something to do.
pub fn next_run_at(
    conn: &mut DbConnection,
    destinations: &[&'static str],
) -> Result<Option<i64>, StoreError> {
    Ok(jobs::table
        .filter(jobs::status.eq(JobStatus::Pending.as_str()))
        .filter(jobs::destination.eq_any(destinations))
        .select(diesel::dsl::min(jobs::run_at))
        .first::<Option<i64>>(conn)?)
}
