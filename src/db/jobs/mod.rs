//! The job queue: outgoing calls, claimed with a lease, retried with back-off, kept when dead.
//!
//! A subscriber's jobs to one destination form a line, served one at a time in id order: the
//! head of the line is `pending` (or `running` while a worker holds its lease), the jobs behind
//! it are `waiting`. When the head is done or dead, the next one is promoted to `pending`. So a
//! claim only ever looks at `pending` jobs in `run_at` order, one index range per destination
//! (`jobs_by_status`: status, destination, run_at, id) that it reads from the front and stops,
//! whatever the backlog, its own or another destination's. A running job whose lease ran out
//! is pending again.

mod attempts;
mod claim;

pub use attempts::{record_attempts, Attempted, NewAttempt, Outcome, Written};
pub use claim::{claim, next_run_at, reclaim_expired, release_leases, renew_lease, ClaimedJob};

/// `jobs.destination` of ESP field writes.
pub const ESP_DESTINATION: &str = "esp";

/// The destinations a job can have: the platforms' and the ESP's field writes.
pub const DESTINATIONS: [&str; 4] = [
    referral_bridge_adapters::sparkloop::DESTINATION,
    referral_bridge_adapters::loyaltysurf::DESTINATION,
    referral_bridge_adapters::referralloop::DESTINATION,
    ESP_DESTINATION,
];

use std::collections::{HashMap, HashSet};

use diesel::prelude::*;
use diesel::query_builder::AstPass;
use diesel::sql_types::{Array, BigInt, Nullable, Text};
use diesel::sqlite::Sqlite;

use super::schema::jobs;
use super::{cached, column, DbConnection, StoreError};
use crate::db::prepared::{prepared, Count};

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
    /// Not sent, because it had nothing to send: a field write whose body is byte for byte
    /// the one last written (DESIGN 3.7). Finished, like a delivered job.
    Skipped,
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
            JobStatus::Skipped => "skipped",
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

/// The status a new job of `subscriber_id` starts in, given `open_lines`, the subscribers whose
/// line to the destination already has an open job ([`open_lines`]), which it then joins:
/// `Pending` at the head of an empty line, `Waiting` behind an open job.
pub fn place_in_line(open_lines: &mut HashSet<i64>, subscriber_id: i64) -> JobStatus {
    if open_lines.insert(subscriber_id) {
        JobStatus::Pending
    } else {
        JobStatus::Waiting
    }
}

/// A job with the status it starts in, as SQLite's insert carries it.
struct QueuedJob<'a> {
    job: NewJob<'a>,
    status: &'a str,
}

/// Inserts jobs (one statement on Postgres, [`cached::ROWS`] per cached statement on SQLite),
/// each with its status: `Pending` for the head of an empty line, `Waiting` behind an open job
/// (see [`open_lines`]). On Postgres the caller must hold the subscribers' row locks
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
        prepared(
            diesel::sql_query(
                "WITH queued AS (INSERT INTO jobs (subscriber_id, destination, kind, payload, \
             created_at, retry_from, run_at, inbound_event_id, status) \
             SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::int8[], \
             $6::int8[], $7::int8[], $8::int8[], $9::text[]) RETURNING 1) \
             SELECT count(*) AS n FROM queued",
            )
            .bind::<Array<BigInt>, _>(column(new, |(job, _)| job.subscriber_id))
            .bind::<Array<Text>, _>(column(new, |(job, _)| job.destination))
            .bind::<Array<Text>, _>(column(new, |(job, _)| job.kind))
            .bind::<Array<Text>, _>(column(new, |(job, _)| job.payload))
            .bind::<Array<BigInt>, _>(column(new, |(job, _)| job.created_at))
            .bind::<Array<BigInt>, _>(column(new, |(job, _)| job.retry_from))
            .bind::<Array<BigInt>, _>(column(new, |(job, _)| job.run_at))
            .bind::<Array<Nullable<BigInt>>, _>(column(new, |(job, _)| job.inbound_event_id))
            .bind::<Array<Text>, _>(column(new, |(_, status)| status.as_str())),
        )
        .get_result::<Count>(c)?;
        return Ok(());
    }
    let DbConnection::Sqlite(c) = conn else {
        unreachable!("Postgres is answered above")
    };
    for chunk in new.chunks(cached::ROWS) {
        let rows: Vec<QueuedJob<'_>> = chunk
            .iter()
            .map(|(job, status)| QueuedJob {
                job: *job,
                status: status.as_str(),
            })
            .collect();
        cached::insert(&rows).execute(c)?;
    }
    Ok(())
}

impl cached::Row for QueuedJob<'_> {
    const INSERT: &'static str = "INSERT INTO jobs (subscriber_id, destination, kind, payload, \
        created_at, retry_from, run_at, inbound_event_id, status) VALUES ";

    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        let job = &self.job;
        cached::bind_values!(out;
            BigInt => &job.subscriber_id,
            Text => &job.destination,
            Text => &job.kind,
            Text => &job.payload,
            BigInt => &job.created_at,
            BigInt => &job.retry_from,
            BigInt => &job.run_at,
            Nullable<BigInt> => &job.inbound_event_id,
            Text => &self.status,
        )
    }
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
    let wanted = Coalesced {
        subscriber_id,
        now,
        run_at,
        inbound_event_id,
    };
    Ok(queue_coalesced_all(conn, destination, kind, &[wanted])? == 1)
}

/// A change that calls for a coalesced job (see [`queue_coalesced_all`]).
#[derive(Debug, Clone, Copy)]
pub struct Coalesced {
    /// Whom it is about.
    pub subscriber_id: i64,
    /// When the change happened (unix ms).
    pub now: i64,
    /// When a job queued for it is due.
    pub run_at: i64,
    /// The inbound event it came from.
    pub inbound_event_id: Option<i64>,
}

/// [`queue_coalesced`] for many changes at once, in a fixed number of statements: a subscriber
/// named more than once gets at most one job, queued for their first change (the later ones
/// would find it pending). Returns how many jobs were queued.
pub fn queue_coalesced_all(
    conn: &mut DbConnection,
    destination: &str,
    kind: &str,
    wanted: &[Coalesced],
) -> Result<usize, StoreError> {
    let mut firsts: Vec<Coalesced> = Vec::with_capacity(wanted.len());
    let mut named = HashSet::with_capacity(wanted.len());
    for change in wanted {
        if named.insert(change.subscriber_id) {
            firsts.push(*change);
        }
    }
    let ids: Vec<i64> = firsts.iter().map(|change| change.subscriber_id).collect();
    lock_lines(conn, &ids)?;
    // On Postgres the pending jobs are locked: a worker claiming one at this moment either skips
    // it (and claims it after this transaction, reading the state it wrote) or has claimed it
    // already, and then it is seen as running, so that a job is queued behind it. Without the
    // lock, a claim could read the old state and this change would never be sent.
    let mut open: HashMap<i64, Vec<String>> = HashMap::new();
    for chunk in ids.chunks(super::ROWS_PER_STATEMENT) {
        let lines = jobs::table
            .filter(jobs::subscriber_id.eq_any(chunk))
            .filter(jobs::destination.eq(destination))
            .filter(jobs::status.eq_any(OPEN))
            .select((jobs::subscriber_id, jobs::status));
        let rows: Vec<(i64, String)> = match conn {
            DbConnection::Postgres(c) => lines.for_update().load(c)?,
            DbConnection::Sqlite(c) => lines.load(c)?,
        };
        for (subscriber_id, status) in rows {
            open.entry(subscriber_id).or_default().push(status);
        }
    }
    let queued: Vec<(NewJob<'_>, JobStatus)> = firsts
        .iter()
        .filter_map(|change| {
            let line = open
                .get(&change.subscriber_id)
                .map_or(&[][..], Vec::as_slice);
            if line
                .iter()
                .any(|status| status != JobStatus::Running.as_str())
            {
                return None;
            }
            let status = if line.is_empty() {
                JobStatus::Pending
            } else {
                JobStatus::Waiting
            };
            let job = NewJob {
                subscriber_id: change.subscriber_id,
                destination,
                kind,
                payload: "",
                created_at: change.now,
                retry_from: change.now,
                run_at: change.run_at,
                inbound_event_id: change.inbound_event_id,
            };
            Some((job, status))
        })
        .collect();
    insert_all(conn, &queued)?;
    Ok(queued.len())
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
            prepared(
                diesel::sql_query(
                    "WITH locked AS (SELECT id FROM subscribers WHERE id = ANY($1) ORDER BY id \
                     FOR UPDATE) SELECT count(*) AS n FROM locked",
                )
                .bind::<diesel::sql_types::Array<BigInt>, _>(chunk),
            )
            .get_result::<Count>(c)?;
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
    if subscriber_ids.is_empty() {
        return Ok(());
    }
    let sql = |now: &str, ids: &str| {
        format!(
            "UPDATE jobs SET status = 'pending', run_at = {now} WHERE id IN ( \
                 SELECT MIN(w.id) FROM jobs w \
                 WHERE w.subscriber_id {ids} AND w.status = 'waiting' \
                 GROUP BY w.subscriber_id, w.destination) \
             AND NOT EXISTS (SELECT 1 FROM jobs h \
                 WHERE h.subscriber_id = jobs.subscriber_id \
                 AND h.destination = jobs.destination \
                 AND h.status IN ('pending', 'running'))"
        )
    };
    if let DbConnection::Postgres(c) = conn {
        // The ids as an array: one text for any number, prepared once per connection.
        prepared(
            diesel::sql_query(format!(
                "WITH promoted AS ({} RETURNING 1) SELECT count(*) AS n FROM promoted",
                sql("$1", "= ANY($2)")
            ))
            .bind::<BigInt, _>(now)
            .bind::<diesel::sql_types::Array<BigInt>, _>(subscriber_ids),
        )
        .get_result::<Count>(c)?;
        return Ok(());
    }
    let DbConnection::Sqlite(c) = conn else {
        unreachable!("Postgres is handled above")
    };
    for chunk in subscriber_ids.chunks(super::ROWS_PER_STATEMENT) {
        // The ids are the bridge's own integers, so writing them into the text is safe.
        let ids = chunk
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        diesel::sql_query(sql("?1", &format!("IN ({ids})")))
            .bind::<BigInt, _>(now)
            .execute(c)?;
    }
    Ok(())
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

/// The id of subscriber `subscriber_id`'s newest job of `kind`.
pub fn latest_of(
    conn: &mut DbConnection,
    subscriber_id: i64,
    kind: &str,
) -> Result<i64, StoreError> {
    Ok(jobs::table
        .filter(jobs::subscriber_id.eq(subscriber_id))
        .filter(jobs::kind.eq(kind))
        .order(jobs::id.desc())
        .select(jobs::id)
        .first(conn)?)
}
