//! The job queue: outgoing calls, claimed with a lease, retried with back-off, kept when dead.
//!
//! A subscriber's jobs to one destination form a line, served one at a time in id order: the
//! head of the line is `pending` (or `running` while a worker holds its lease), the jobs behind
//! it are `waiting`. When the head is done or dead, the next one is promoted to `pending`. So a
//! claim only ever looks at `pending` jobs in `run_at` order, an index range that it reads from
//! the front and stops, whatever the backlog. A running job whose lease ran out is pending again.

use std::collections::HashSet;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text};

use super::schema::{attempts, jobs};
use super::{column, DbConnection, StoreError};

/// The state of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Behind an earlier open job of the same subscriber and destination.
    Waiting,
    /// At the head of its line, due at `run_at`.
    Pending,
    /// Claimed by a worker.
    Running,
    /// Delivered.
    Done,
    /// Given up on; kept for the operator and replayable.
    Dead,
}

impl JobStatus {
    /// The text stored in `jobs.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Waiting => "waiting",
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Dead => "dead",
        }
    }
}

/// The statuses of a job that is not finished.
pub(crate) const OPEN: [&str; 3] = ["waiting", "pending", "running"];

/// A job to insert; [`insert_all`] gives it its status.
#[derive(Debug, Clone, Copy, Insertable)]
#[diesel(table_name = jobs)]
// `None` is NULL rather than DEFAULT, so that many rows go in one statement on SQLite too.
#[diesel(treat_none_as_default_value = false)]
pub struct NewJob<'a> {
    /// Whom it is about.
    pub subscriber_id: i64,
    /// Where it goes (`sparkloop`, ...).
    pub destination: &'a str,
    /// What it does (`subscribe`, `update`, `unsubscribe`, ...).
    pub kind: &'a str,
    /// The request body to send.
    pub payload: &'a str,
    /// Creation time (unix ms).
    pub created_at: i64,
    /// Start of the retry horizon: the creation time.
    pub retry_from: i64,
    /// When it is first due: the creation time.
    pub run_at: i64,
    /// The inbound event it came from.
    pub inbound_event_id: Option<i64>,
}

/// The subscribers among `subscriber_ids` whose line to `destination` has an unfinished job.
pub fn open_lines(
    conn: &mut DbConnection,
    subscriber_ids: &[i64],
    destination: &str,
) -> Result<HashSet<i64>, StoreError> {
    let mut open = HashSet::new();
    for chunk in subscriber_ids.chunks(super::ROWS_PER_STATEMENT) {
        let ids: Vec<i64> = jobs::table
            .filter(jobs::subscriber_id.eq_any(chunk))
            .filter(jobs::destination.eq(destination))
            .filter(jobs::status.eq_any(OPEN))
            .select(jobs::subscriber_id)
            .distinct()
            .load(conn)?;
        open.extend(ids);
    }
    Ok(open)
}

/// A job with the status it starts in.
#[derive(Insertable)]
#[diesel(table_name = jobs)]
struct QueuedJob<'a> {
    #[diesel(embed)]
    job: NewJob<'a>,
    status: &'a str,
}

/// Inserts jobs (one statement on Postgres, a few hundred per statement on SQLite), each with
/// its status: `Pending` for the head of an empty line, `Waiting` behind an open job (see
/// [`open_lines`]). On Postgres the caller must hold the subscribers' row locks
/// ([`super::subscribers::lock_by_emails`] or any update of the row takes one; a row inserted in
/// the same transaction is invisible to others), so that a line's head finishing at the same
/// moment sees the new job.
pub fn insert_all(
    conn: &mut DbConnection,
    new: &[(NewJob<'_>, JobStatus)],
) -> Result<(), StoreError> {
    if new.is_empty() {
        return Ok(());
    }
    if let DbConnection::Postgres(c) = conn {
        // One array per column, as in `inbox::insert_all`.
        diesel::sql_query(
            "INSERT INTO jobs (subscriber_id, destination, kind, payload, created_at, \
             retry_from, run_at, inbound_event_id, status) \
             SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::int8[], \
             $6::int8[], $7::int8[], $8::int8[], $9::text[])",
        )
        .bind::<Array<BigInt>, _>(column(new, |(job, _)| job.subscriber_id))
        .bind::<Array<Text>, _>(column(new, |(job, _)| job.destination))
        .bind::<Array<Text>, _>(column(new, |(job, _)| job.kind))
        .bind::<Array<Text>, _>(column(new, |(job, _)| job.payload))
        .bind::<Array<BigInt>, _>(column(new, |(job, _)| job.created_at))
        .bind::<Array<BigInt>, _>(column(new, |(job, _)| job.retry_from))
        .bind::<Array<BigInt>, _>(column(new, |(job, _)| job.run_at))
        .bind::<Array<Nullable<BigInt>>, _>(column(new, |(job, _)| job.inbound_event_id))
        .bind::<Array<Text>, _>(column(new, |(_, status)| status.as_str()))
        .execute(c)?;
        return Ok(());
    }
    for chunk in new.chunks(super::ROWS_PER_STATEMENT) {
        let rows: Vec<QueuedJob<'_>> = chunk
            .iter()
            .map(|(job, status)| QueuedJob {
                job: *job,
                status: status.as_str(),
            })
            .collect();
        let insert = diesel::insert_into(jobs::table).values(&rows);
        on_backend!(conn, |c| insert.execute(c))?;
    }
    Ok(())
}

/// Queues a coalesced job for `destination`, due at `run_at`: one that sends the subscriber's
/// state as it is when it runs, so one pending job stands for any number of changes. Nothing is
/// queued when a job is already pending or waiting in the line; behind a running job (whose state
/// may be stale), one waits, and is due as soon as the running one ends. Returns whether a job
/// was queued.
pub fn queue_coalesced(
    conn: &mut DbConnection,
    subscriber_id: i64,
    destination: &str,
    kind: &str,
    now: i64,
    run_at: i64,
    inbound_event_id: Option<i64>,
) -> Result<bool, StoreError> {
    lock_lines(conn, &[subscriber_id])?;
    let line = jobs::table
        .filter(jobs::subscriber_id.eq(subscriber_id))
        .filter(jobs::destination.eq(destination))
        .filter(jobs::status.eq_any(OPEN))
        .select(jobs::status);
    // On Postgres the pending job is locked: a worker claiming it at this moment either skips it
    // (and claims it after this transaction, reading the state it wrote) or has claimed it
    // already, and then it is seen as running, so that a job is queued behind it. Without the
    // lock, a claim could read the old state and this change would never be sent.
    let open: Vec<String> = match conn {
        DbConnection::Postgres(c) => line.for_update().load(c)?,
        DbConnection::Sqlite(c) => line.load(c)?,
    };
    if open
        .iter()
        .any(|status| status != JobStatus::Running.as_str())
    {
        return Ok(false);
    }
    let status = if open.is_empty() {
        JobStatus::Pending
    } else {
        JobStatus::Waiting
    };
    let job = NewJob {
        subscriber_id,
        destination,
        kind,
        payload: "",
        created_at: now,
        retry_from: now,
        run_at,
        inbound_event_id,
    };
    insert_all(conn, &[(job, status)])?;
    Ok(true)
}

/// Takes the subscribers' row locks on Postgres, in id order (so that two transactions cannot
/// deadlock), so that promoting the next job of a line and appending a job to it never miss
/// each other; SQLite's single writer already ensures it.
pub(crate) fn lock_lines(
    conn: &mut DbConnection,
    subscriber_ids: &[i64],
) -> Result<(), StoreError> {
    if let DbConnection::Postgres(c) = conn {
        let mut ids = subscriber_ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        for chunk in ids.chunks(super::ROWS_PER_STATEMENT) {
            diesel::sql_query(
                "SELECT id FROM subscribers WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            )
            .bind::<diesel::sql_types::Array<BigInt>, _>(chunk)
            .execute(c)?;
        }
    }
    Ok(())
}

/// In every line of these subscribers that has no head, makes the oldest waiting job pending,
/// due `now`. The caller holds the lines' locks ([`lock_lines`]).
pub(crate) fn promote_next(
    conn: &mut DbConnection,
    subscriber_ids: &[i64],
    now: i64,
) -> Result<(), StoreError> {
    for chunk in subscriber_ids.chunks(super::ROWS_PER_STATEMENT) {
        // The ids are the bridge's own integers, so writing them into the text is safe.
        let ids = chunk
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let sql = |now: &str| {
            format!(
                "UPDATE jobs SET status = 'pending', run_at = {now} WHERE id IN ( \
                     SELECT MIN(w.id) FROM jobs w \
                     WHERE w.subscriber_id IN ({ids}) AND w.status = 'waiting' \
                     GROUP BY w.subscriber_id, w.destination) \
                 AND NOT EXISTS (SELECT 1 FROM jobs h \
                     WHERE h.subscriber_id = jobs.subscriber_id \
                     AND h.destination = jobs.destination \
                     AND h.status IN ('pending', 'running'))"
            )
        };
        match conn {
            DbConnection::Postgres(c) => diesel::sql_query(sql("$1"))
                .bind::<BigInt, _>(now)
                .execute(c)?,
            DbConnection::Sqlite(c) => diesel::sql_query(sql("?1"))
                .bind::<BigInt, _>(now)
                .execute(c)?,
        };
    }
    Ok(())
}

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
            diesel::sql_query(sql)
                .bind::<BigInt, _>(now)
                .bind::<Text, _>(lease_token)
                .bind::<BigInt, _>(lease_until)
                .bind::<BigInt, _>(limit)
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

/// One HTTP call made for a job.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = attempts)]
pub struct NewAttempt {
    /// The job.
    pub job_id: i64,
    /// When the call started (unix ms).
    pub started_at: i64,
    /// How long it took.
    pub duration_ms: i64,
    /// The answer's status, when there was an answer.
    pub status_code: Option<i32>,
    /// What went wrong, when something did.
    pub error: Option<String>,
    /// The start of the answer's body.
    pub response_body: Option<String>,
}

/// What becomes of a job after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered.
    Done,
    /// Try again at `run_at` (unix ms).
    Retry {
        /// When.
        run_at: i64,
        /// Why the attempt failed.
        error: String,
    },
    /// Give up; the job is kept for the operator.
    Dead {
        /// Why.
        error: String,
    },
}

/// An attempt to record, with what becomes of its job.
pub struct Attempted<'a> {
    /// The job, as claimed.
    pub job: &'a ClaimedJob,
    /// The HTTP call.
    pub attempt: &'a NewAttempt,
    /// The job's new state.
    pub outcome: &'a Outcome,
    /// When the attempt ended (unix ms).
    pub now: i64,
}

/// Records attempts and their jobs' new states; a job that is done or dead hands its line to the
/// next job. A state changes only while `lease_token` still holds the job (a worker that outlived
/// its lease must not overwrite the new owner's result); the attempt is recorded either way.
/// Returns, for each attempt, whether its job's state changed. Deliveries that succeed, the bulk
/// of them, cost one statement per kind of change, whatever their number.
pub fn record_attempts(
    conn: &mut DbConnection,
    lease_token: &str,
    batch: &[Attempted<'_>],
) -> Result<Vec<bool>, StoreError> {
    let finishing: Vec<i64> = batch
        .iter()
        .filter(|a| !matches!(a.outcome, Outcome::Retry { .. }))
        .map(|a| a.job.subscriber_id)
        .collect();
    lock_lines(conn, &finishing)?;
    let new_attempts: Vec<&NewAttempt> = batch.iter().map(|a| a.attempt).collect();
    for chunk in new_attempts.chunks(super::ROWS_PER_STATEMENT) {
        let insert = diesel::insert_into(attempts::table).values(chunk.to_vec());
        on_backend!(conn, |c| insert.execute(c))?;
    }
    let owned = |ids: Vec<i64>| {
        jobs::table
            .filter(jobs::id.eq_any(ids))
            .filter(jobs::status.eq(JobStatus::Running.as_str()))
            .filter(jobs::lease_token.eq(lease_token))
    };
    let release = || {
        (
            jobs::attempts.eq(jobs::attempts + 1),
            jobs::lease_token.eq(None::<String>),
            jobs::lease_expires_at.eq(None::<i64>),
        )
    };

    let mut changed = std::collections::HashSet::new();
    let done: Vec<i64> = batch
        .iter()
        .filter(|a| a.outcome == &Outcome::Done)
        .map(|a| a.job.id)
        .collect();
    // One finishing time for the lot: the attempts ended within the batch's few milliseconds.
    let now = batch.iter().map(|a| a.now).max().unwrap_or(0);
    for chunk in done.chunks(super::ROWS_PER_STATEMENT) {
        let ids: Vec<i64> = diesel::update(owned(chunk.to_vec()))
            .set((
                jobs::status.eq(JobStatus::Done.as_str()),
                release(),
                jobs::last_error.eq(None::<String>),
                jobs::finished_at.eq(Some(now)),
            ))
            .returning(jobs::id)
            .get_results(conn)?;
        changed.extend(ids);
    }
    for a in batch {
        let update = diesel::update(owned(vec![a.job.id]));
        let updated = match a.outcome {
            Outcome::Done => continue,
            Outcome::Retry { run_at, error } => update
                .set((
                    jobs::status.eq(JobStatus::Pending.as_str()),
                    release(),
                    jobs::run_at.eq(run_at),
                    jobs::last_error.eq(Some(error)),
                ))
                .execute(conn)?,
            Outcome::Dead { error } => update
                .set((
                    jobs::status.eq(JobStatus::Dead.as_str()),
                    release(),
                    jobs::last_error.eq(Some(error)),
                    jobs::finished_at.eq(Some(a.now)),
                ))
                .execute(conn)?,
        };
        if updated == 1 {
            changed.insert(a.job.id);
        }
    }

    let handed_on: Vec<i64> = batch
        .iter()
        .filter(|a| !matches!(a.outcome, Outcome::Retry { .. }) && changed.contains(&a.job.id))
        .map(|a| a.job.subscriber_id)
        .collect();
    promote_next(conn, &handed_on, now)?;
    Ok(batch.iter().map(|a| changed.contains(&a.job.id)).collect())
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

/// Puts a finished job back in its subscriber's line, with a fresh retry horizon: pending and
/// due now if the line is empty, else waiting (it goes next, being the oldest).
pub(crate) fn requeue(conn: &mut DbConnection, id: i64, now: i64) -> Result<(), StoreError> {
    let subscriber_id: i64 = jobs::table
        .find(id)
        .select(jobs::subscriber_id)
        .first(conn)?;
    lock_lines(conn, &[subscriber_id])?;
    diesel::update(jobs::table.find(id))
        .set((
            jobs::status.eq(JobStatus::Waiting.as_str()),
            jobs::run_at.eq(now),
            jobs::retry_from.eq(now),
            jobs::finished_at.eq(None::<i64>),
        ))
        .execute(conn)?;
    promote_next(conn, &[subscriber_id], now)
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

#[cfg(test)]
mod tests {
    use diesel::connection::SimpleConnection;

    use super::*;
    use crate::db::test_db::TestDb;

    fn attempt(job_id: i64, status_code: i32) -> NewAttempt {
        NewAttempt {
            job_id,
            started_at: 1_000,
            duration_ms: 5,
            status_code: Some(status_code),
            error: None,
            response_body: None,
        }
    }

    #[test]
    fn a_batch_of_attempts_finishes_retries_and_hands_lines_on_only_under_its_lease() {
        let test = TestDb::default();
        let db = &test.db;
        // Four subscribers; the first two have a job waiting behind their head.
        db.write(|conn| {
            let mut sql = String::new();
            for n in 1..=4 {
                sql += &format!(
                    "INSERT INTO subscribers (id, email, status, created_at, updated_at) \
                     VALUES ({n}, 's{n}@example.com', 'subscribed', 0, 0);"
                );
            }
            for (id, subscriber, status) in [
                (1, 1, "pending"),
                (2, 1, "waiting"),
                (3, 2, "pending"),
                (4, 2, "waiting"),
                (5, 3, "pending"),
                (6, 4, "pending"),
            ] {
                sql += &format!(
                    "INSERT INTO jobs (id, subscriber_id, destination, kind, payload, status, \
                     created_at, retry_from, run_at) VALUES ({id}, {subscriber}, 'sparkloop', \
                     'subscribe', '{{}}', '{status}', 0, 0, 0);"
                );
            }
            on_backend!(conn, |c| c.batch_execute(&sql))?;
            Ok(())
        })
        .unwrap();
        let claimed = db
            .write(|conn| claim(conn, &["sparkloop"], 10, "mine", 10, 30_000))
            .unwrap();
        let mut claimed: Vec<ClaimedJob> = claimed;
        claimed.sort_by_key(|job| job.id);
        assert_eq!(
            claimed.iter().map(|job| job.id).collect::<Vec<_>>(),
            [1, 3, 5, 6]
        );
        // Job 6's lease ran out and another worker took it.
        db.write(|conn| {
            Ok(diesel::update(jobs::table.find(6))
                .set(jobs::lease_token.eq("theirs"))
                .execute(conn)?)
        })
        .unwrap();

        let outcomes = [
            Outcome::Done,
            Outcome::Dead {
                error: "HTTP 400".into(),
            },
            Outcome::Retry {
                run_at: 5_000,
                error: "HTTP 503".into(),
            },
            Outcome::Done,
        ];
        let attempts: Vec<NewAttempt> = claimed
            .iter()
            .zip([200, 400, 503, 200])
            .map(|(job, code)| attempt(job.id, code))
            .collect();
        let batch: Vec<Attempted<'_>> = claimed
            .iter()
            .zip(&attempts)
            .zip(&outcomes)
            .map(|((job, attempt), outcome)| Attempted {
                job,
                attempt,
                outcome,
                now: 2_000,
            })
            .collect();
        let changed = db
            .write(|conn| record_attempts(conn, "mine", &batch))
            .unwrap();
        assert_eq!(changed, [true, true, true, false]);

        type Row = (i64, String, i32, i64, Option<String>, Option<String>);
        let state: Vec<Row> = db
            .read(|conn| {
                Ok(jobs::table
                    .order(jobs::id)
                    .select((
                        jobs::id,
                        jobs::status,
                        jobs::attempts,
                        jobs::run_at,
                        jobs::lease_token,
                        jobs::last_error,
                    ))
                    .load(conn)?)
            })
            .unwrap();
        let state: Vec<String> = state.into_iter().map(|s| format!("{s:?}")).collect();
        assert_eq!(
            state,
            [
                r#"(1, "done", 1, 0, None, None)"#,
                r#"(2, "pending", 0, 2000, None, None)"#,
                r#"(3, "dead", 1, 0, None, Some("HTTP 400"))"#,
                r#"(4, "pending", 0, 2000, None, None)"#,
                r#"(5, "pending", 1, 5000, None, Some("HTTP 503"))"#,
                r#"(6, "running", 0, 0, Some("theirs"), None)"#,
            ]
        );
        let recorded: i64 = db
            .read(|conn| Ok(attempts::table.count().get_result(conn)?))
            .unwrap();
        assert_eq!(
            recorded, 4,
            "an attempt is kept even when its lease was lost"
        );
    }
}
