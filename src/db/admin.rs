//! What the operator's views (the admin API, the dashboard, the `deliveries` command) read and
//! change: deliveries filtered and paged by id, one with its attempts, cancelling and retrying
//! them, the queues' depths, a subscriber's timeline, and counts over a recent period.

use diesel::prelude::*;

use super::jobs::{self, JobStatus, OPEN};
use super::schema::{attempts, inbound_events, jobs as jobs_table, subscribers};
use super::{DbConnection, StoreError};

/// A job as the operator sees it.
#[derive(Debug, Clone, Queryable)]
pub struct JobView {
    /// Id.
    pub id: i64,
    /// Destination.
    pub destination: String,
    /// Kind.
    pub kind: String,
    /// Status.
    pub status: String,
    /// The request body.
    pub payload: String,
    /// Attempts made.
    pub attempts: i32,
    /// Created (unix ms).
    pub created_at: i64,
    /// Next due (unix ms).
    pub run_at: i64,
    /// Finished (unix ms).
    pub finished_at: Option<i64>,
    /// Last error.
    pub last_error: Option<String>,
    /// The subscriber's current email.
    pub email: String,
}

/// The columns of a [`JobView`], from `jobs` joined with `subscribers`.
pub(crate) const VIEW: (
    jobs_table::id,
    jobs_table::destination,
    jobs_table::kind,
    jobs_table::status,
    jobs_table::payload,
    jobs_table::attempts,
    jobs_table::created_at,
    jobs_table::run_at,
    jobs_table::finished_at,
    jobs_table::last_error,
    subscribers::email,
) = (
    jobs_table::id,
    jobs_table::destination,
    jobs_table::kind,
    jobs_table::status,
    jobs_table::payload,
    jobs_table::attempts,
    jobs_table::created_at,
    jobs_table::run_at,
    jobs_table::finished_at,
    jobs_table::last_error,
    subscribers::email,
);

/// The result of asking to retry one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryResult {
    /// The job is pending again and due now.
    Queued,
    /// No job has that id.
    NotFound,
    /// The job is still pending or running: it will be sent anyway.
    AlreadyOpen(String),
    /// Earlier jobs of the same subscriber to the same destination are dead (or cancelled):
    /// sending this one first would change the order the peer sees (their ids, oldest first).
    EarlierDead(Vec<i64>),
}

/// Queues a finished (dead or done) job again, due now, with a fresh retry horizon; refused while
/// an earlier job of its line is dead, unless `force` (DESIGN 3.7: order under replay).
pub fn retry(
    conn: &mut DbConnection,
    id: i64,
    now: i64,
    force: bool,
) -> Result<RetryResult, StoreError> {
    let job: Option<(String, i64, String)> = jobs_table::table
        .find(id)
        .select((
            jobs_table::status,
            jobs_table::subscriber_id,
            jobs_table::destination,
        ))
        .first(conn)
        .optional()?;
    let Some((status, subscriber_id, destination)) = job else {
        return Ok(RetryResult::NotFound);
    };
    if OPEN.contains(&status.as_str()) {
        return Ok(RetryResult::AlreadyOpen(status));
    }
    if !force {
        let earlier: Vec<i64> = jobs_table::table
            .filter(jobs_table::subscriber_id.eq(subscriber_id))
            .filter(jobs_table::destination.eq(destination))
            .filter(jobs_table::id.lt(id))
            .filter(jobs_table::status.eq(JobStatus::Dead.as_str()))
            .order(jobs_table::id.asc())
            .select(jobs_table::id)
            .limit(EARLIER_LISTED)
            .load(conn)?;
        if !earlier.is_empty() {
            return Ok(RetryResult::EarlierDead(earlier));
        }
    }
    jobs::requeue(conn, id, now)?;
    Ok(RetryResult::Queued)
}

/// How many earlier dead jobs a refused retry lists at most.
const EARLIER_LISTED: i64 = 20;

/// Open (waiting, pending or running) jobs per destination.
pub fn depth_by_destination(conn: &mut DbConnection) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(jobs_table::table
        .filter(jobs_table::status.eq_any(OPEN))
        .group_by(jobs_table::destination)
        .select((jobs_table::destination, diesel::dsl::count_star()))
        .load(conn)?)
}

/// The earliest `run_at` among pending jobs already due at `now`: the earliest pending one, one
/// index seek per destination (`/metrics` asks on every scrape, whatever the backlog).
pub fn oldest_due(conn: &mut DbConnection, now: i64) -> Result<Option<i64>, StoreError> {
    Ok(
        crate::db::jobs::next_run_at(conn, &crate::db::jobs::DESTINATIONS)?
            .filter(|run_at| *run_at <= now),
    )
}

/// An attempt as the operator sees it.
#[derive(Debug, Clone, Queryable)]
pub struct AttemptSummary {
    /// When it started (unix ms).
    pub started_at: i64,
    /// How long it took.
    pub duration_ms: i64,
    /// The answer's status.
    pub status_code: Option<i32>,
    /// What went wrong.
    pub error: Option<String>,
    /// The start of the answer's body.
    pub response_body: Option<String>,
}

/// The attempts made for a job, oldest first.
pub fn attempts_of(
    conn: &mut DbConnection,
    job_id: i64,
) -> Result<Vec<AttemptSummary>, StoreError> {
    Ok(attempts::table
        .filter(attempts::job_id.eq(job_id))
        .order(attempts::id.asc())
        .select((
            attempts::started_at,
            attempts::duration_ms,
            attempts::status_code,
            attempts::error,
            attempts::response_body,
        ))
        .load(conn)?)
}

/// One job by id.
pub fn get(conn: &mut DbConnection, id: i64) -> Result<Option<JobView>, StoreError> {
    Ok(jobs_table::table
        .inner_join(subscribers::table)
        .filter(jobs_table::id.eq(id))
        .select(VIEW)
        .first(conn)
        .optional()?)
}

/// Which deliveries to list; every filter is optional.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// `waiting`, `pending`, `running`, `done` or `dead`; `open` for the first three.
    pub status: Option<String>,
    /// `sparkloop`, `esp`, ...
    pub destination: Option<String>,
    /// The subscriber's current address (normalised).
    pub email: Option<String>,
    /// Created at or after (unix ms).
    pub since: Option<i64>,
    /// Created before (unix ms).
    pub until: Option<i64>,
    /// Only ids below this one: the page after the one that ended with it.
    pub before: Option<i64>,
}

/// Up to `limit` deliveries matching `filter`, newest first (keyset pagination on the id).
pub fn list_deliveries(
    conn: &mut DbConnection,
    filter: &DeliveryFilter,
    limit: i64,
) -> Result<Vec<JobView>, StoreError> {
    let mut query = jobs_table::table
        .inner_join(subscribers::table)
        .select(VIEW)
        .order(jobs_table::id.desc())
        .limit(limit)
        .into_boxed();
    match filter.status.as_deref() {
        None => {}
        Some("open") => query = query.filter(jobs_table::status.eq_any(OPEN)),
        Some(status) => query = query.filter(jobs_table::status.eq(status.to_string())),
    }
    if let Some(destination) = &filter.destination {
        query = query.filter(jobs_table::destination.eq(destination.clone()));
    }
    if let Some(email) = &filter.email {
        query = query.filter(subscribers::email.eq(email.clone()));
    }
    if let Some(since) = filter.since {
        query = query.filter(jobs_table::created_at.ge(since));
    }
    if let Some(until) = filter.until {
        query = query.filter(jobs_table::created_at.lt(until));
    }
    if let Some(before) = filter.before {
        query = query.filter(jobs_table::id.lt(before));
    }
    Ok(query.load(conn)?)
}

/// What became of a request to cancel a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelResult {
    /// It is dead now (replayable), and its line moved on.
    Cancelled,
    /// No delivery has that id.
    NotFound,
    /// It is being sent or already finished: its status.
    NotOpen(String),
}

/// Cancels a waiting or pending delivery: it becomes dead with the reason given, and the next in
/// its subscriber's line (if it was the head) becomes due.
pub fn cancel(
    conn: &mut DbConnection,
    id: i64,
    now: i64,
    reason: &str,
) -> Result<CancelResult, StoreError> {
    let found: Option<(i64, String)> = jobs_table::table
        .find(id)
        .select((jobs_table::subscriber_id, jobs_table::status))
        .first(conn)
        .optional()?;
    let Some((subscriber_id, _)) = found else {
        return Ok(CancelResult::NotFound);
    };
    jobs::lock_lines(conn, &[subscriber_id])?;
    // Read again under the line's lock: a worker may have claimed it meanwhile.
    let status: String = jobs_table::table
        .find(id)
        .select(jobs_table::status)
        .first(conn)?;
    if status != JobStatus::Waiting.as_str() && status != JobStatus::Pending.as_str() {
        return Ok(CancelResult::NotOpen(status));
    }
    diesel::update(jobs_table::table.find(id))
        .set((
            jobs_table::status.eq(JobStatus::Dead.as_str()),
            jobs_table::last_error.eq(Some(reason)),
            jobs_table::finished_at.eq(Some(now)),
        ))
        .execute(conn)?;
    jobs::promote_next(conn, &[subscriber_id], now)?;
    Ok(CancelResult::Cancelled)
}

/// Queues the dead deliveries matching `destination` and the creation range again; returns
/// how many.
pub fn retry_dead_matching(
    conn: &mut DbConnection,
    destination: Option<&str>,
    since: Option<i64>,
    until: Option<i64>,
    now: i64,
) -> Result<usize, StoreError> {
    let mut query = jobs_table::table
        .filter(jobs_table::status.eq(JobStatus::Dead.as_str()))
        .order(jobs_table::id.asc())
        .select(jobs_table::id)
        .into_boxed();
    if let Some(destination) = destination {
        query = query.filter(jobs_table::destination.eq(destination.to_string()));
    }
    if let Some(since) = since {
        query = query.filter(jobs_table::created_at.ge(since));
    }
    if let Some(until) = until {
        query = query.filter(jobs_table::created_at.lt(until));
    }
    let dead: Vec<i64> = query.load(conn)?;
    for &id in &dead {
        jobs::requeue(conn, id, now)?;
    }
    Ok(dead.len())
}

/// The subscriber with this (normalised) address.
pub fn subscriber_by_email(
    conn: &mut DbConnection,
    email: &str,
) -> Result<Option<super::subscribers::Subscriber>, StoreError> {
    Ok(subscribers::table
        .filter(subscribers::email.eq(email))
        .select(super::subscribers::Subscriber::as_select())
        .first(conn)
        .optional()?)
}

/// One thing that happened to a subscriber.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineEntry {
    /// When (unix ms).
    pub at: i64,
    /// `inbound`, `job` or `attempt`.
    pub kind: &'static str,
    /// The inbound event's, job's or attempt's job id.
    pub id: i64,
    /// A one-line summary.
    pub summary: String,
}

/// An attempt's job id, start, duration, status and error.
type AttemptRow = (i64, i64, i64, Option<i32>, Option<String>);

/// Everything that happened to subscriber `id`, oldest first: webhooks received about them, jobs
/// queued for them and every attempt of those jobs (at most `limit` of each kind, the newest).
pub fn timeline(
    conn: &mut DbConnection,
    id: i64,
    limit: i64,
) -> Result<Vec<TimelineEntry>, StoreError> {
    let inbound: Vec<(i64, i64, String, String, String)> = inbound_events::table
        .filter(inbound_events::subscriber_id.eq(id))
        .order(inbound_events::id.desc())
        .limit(limit)
        .select((
            inbound_events::id,
            inbound_events::received_at,
            inbound_events::source,
            inbound_events::event_type,
            inbound_events::outcome,
        ))
        .load(conn)?;
    let jobs: Vec<(i64, i64, String, String, String)> = jobs_table::table
        .filter(jobs_table::subscriber_id.eq(id))
        .order(jobs_table::id.desc())
        .limit(limit)
        .select((
            jobs_table::id,
            jobs_table::created_at,
            jobs_table::destination,
            jobs_table::kind,
            jobs_table::status,
        ))
        .load(conn)?;
    let job_ids: Vec<i64> = jobs.iter().map(|j| j.0).collect();
    let tries: Vec<AttemptRow> = attempts::table
        .filter(attempts::job_id.eq_any(&job_ids))
        .order(attempts::id.desc())
        .limit(limit)
        .select((
            attempts::job_id,
            attempts::started_at,
            attempts::duration_ms,
            attempts::status_code,
            attempts::error,
        ))
        .load(conn)?;
    let mut entries: Vec<TimelineEntry> = Vec::new();
    entries.extend(
        inbound
            .into_iter()
            .map(|(id, at, source, event_type, outcome)| TimelineEntry {
                at,
                kind: "inbound",
                id,
                summary: format!("{source} {event_type}: {outcome}"),
            }),
    );
    entries.extend(
        jobs.into_iter()
            .map(|(id, at, destination, kind, status)| TimelineEntry {
                at,
                kind: "job",
                id,
                summary: format!("{kind} to {destination}: {status}"),
            }),
    );
    entries.extend(
        tries
            .into_iter()
            .map(|(job, at, ms, status, error)| TimelineEntry {
                at,
                kind: "attempt",
                id: job,
                summary: match (status, error) {
                    (Some(status), None) => format!("job {job}: HTTP {status} in {ms} ms"),
                    (Some(status), Some(error)) => {
                        format!("job {job}: HTTP {status} in {ms} ms: {error}")
                    }
                    (None, error) => {
                        format!("job {job}: no answer: {}", error.unwrap_or_default())
                    }
                },
            }),
    );
    // Same instant: the webhook, then the job it queued, then its attempt.
    let rank = |kind: &str| match kind {
        "inbound" => 0,
        "job" => 1,
        _ => 2,
    };
    entries.sort_by_key(|e| (e.at, rank(e.kind), e.id));
    Ok(entries)
}

/// Counts over a period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Webhooks received (every endpoint, duplicates included).
    pub received: i64,
    /// Deliveries finished done.
    pub delivered: i64,
    /// Deliveries that died.
    pub dead: i64,
    /// Attempts made.
    pub attempts: i64,
    /// Attempts answered 2xx.
    pub attempts_ok: i64,
}

/// What happened since `since` (unix ms).
pub fn counts_since(conn: &mut DbConnection, since: i64) -> Result<Counts, StoreError> {
    let count_finished = |conn: &mut DbConnection, status: JobStatus| {
        jobs_table::table
            .filter(jobs_table::status.eq(status.as_str()))
            .filter(jobs_table::finished_at.ge(since))
            .count()
            .get_result::<i64>(conn)
    };
    Ok(Counts {
        received: inbound_events::table
            .filter(inbound_events::received_at.ge(since))
            .count()
            .get_result(conn)?,
        delivered: count_finished(conn, JobStatus::Done)?,
        dead: count_finished(conn, JobStatus::Dead)?,
        attempts: attempts::table
            .filter(attempts::started_at.ge(since))
            .count()
            .get_result(conn)?,
        attempts_ok: attempts::table
            .filter(attempts::started_at.ge(since))
            .filter(attempts::status_code.between(200, 299))
            .count()
            .get_result(conn)?,
    })
}

/// Per hour since `since` (unix ms, whole hours): webhooks received, deliveries done and
/// deliveries dead, as `(hour since the epoch, count)` for the hours that have any.
pub fn hourly(conn: &mut DbConnection, since: i64) -> Result<HourlyCounts, StoreError> {
    #[derive(QueryableByName)]
    struct Hour {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        hour: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    // `since` is a number of ours, written into the text: the same statement on both backends
    // (integer division of BIGINTs is whole on both).
    let mut per_hour = |sql: String| -> Result<Vec<(i64, i64)>, StoreError> {
        Ok(diesel::sql_query(sql)
            .load::<Hour>(conn)?
            .into_iter()
            .map(|h| (h.hour, h.n))
            .collect())
    };
    Ok(HourlyCounts {
        received: per_hour(format!(
            "SELECT received_at / 3600000 AS hour, COUNT(*) AS n FROM inbound_events \
             WHERE received_at >= {since} GROUP BY received_at / 3600000"
        ))?,
        done: per_hour(format!(
            "SELECT finished_at / 3600000 AS hour, COUNT(*) AS n FROM jobs \
             WHERE status = 'done' AND finished_at >= {since} GROUP BY finished_at / 3600000"
        ))?,
        dead: per_hour(format!(
            "SELECT finished_at / 3600000 AS hour, COUNT(*) AS n FROM jobs \
             WHERE status = 'dead' AND finished_at >= {since} GROUP BY finished_at / 3600000"
        ))?,
    })
}

/// [`hourly`]'s three series.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HourlyCounts {
    /// Webhooks received per hour.
    pub received: Vec<(i64, i64)>,
    /// Deliveries done per hour.
    pub done: Vec<(i64, i64)>,
    /// Deliveries dead per hour.
    pub dead: Vec<(i64, i64)>,
}
