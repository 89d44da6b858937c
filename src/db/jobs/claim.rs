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

/// The first `{limit}` due jobs of destination `{destination}` in claiming order (`run_at`,
/// then id): heads of their lines, pending and past `run_at`; one range of `jobs_by_status`
/// (status, destination, run_at, id), read from the front.
const DUE: &str = "SELECT j.id, j.run_at FROM jobs j WHERE j.status = 'pending' \
     AND j.destination = {destination} AND j.run_at <= {now} ORDER BY j.run_at, j.id LIMIT {limit}";

/// A destination's name as an SQL literal. Destination names are the bridge's own constants,
/// never input, so inlining them is safe.
fn literal(destination: &str) -> String {
    debug_assert!(destination.chars().all(|c| c.is_ascii_lowercase()));
    format!("'{destination}'")
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
            // Each destination's first due jobs, locked (another process skips them), then
            // the earliest of those across destinations.
            let due = DUE
                .replace("{destination}", "d.destination")
                .replace("{now}", "$1")
                .replace("{limit}", "$4");
            let names: Vec<String> = destinations
                .iter()
                .map(|d| format!("({})", literal(d)))
                .collect();
            let sql = format!(
                "UPDATE jobs SET status = 'running', lease_token = $2, lease_expires_at = $3 \
                 WHERE id IN (SELECT x.id FROM (VALUES {}) AS d(destination) \
                     CROSS JOIN LATERAL ({due} FOR UPDATE SKIP LOCKED) x \
                     ORDER BY x.run_at, x.id LIMIT $4) {returning}",
                names.join(", ")
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
            // Each destination's first due jobs, then the earliest of those across them.
            let arms: Vec<String> = destinations
                .iter()
                .map(|d| {
                    let due = DUE
                        .replace("{destination}", &literal(d))
                        .replace("{now}", "?1")
                        .replace("{limit}", "?4");
                    format!("SELECT * FROM ({due})")
                })
                .collect();
            let sql = format!(
                "UPDATE jobs SET status = 'running', lease_token = ?2, lease_expires_at = ?3 \
                 WHERE id IN (SELECT id FROM ({}) ORDER BY run_at, id LIMIT ?4) {returning}",
                arms.join(" UNION ALL ")
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
/// pending, so this is when the workers next have something to do. The earliest of each
/// destination's first entry in `jobs_by_status`: one index seek per destination, whatever the
/// backlog.
pub fn next_run_at(
    conn: &mut DbConnection,
    destinations: &[&'static str],
) -> Result<Option<i64>, StoreError> {
    #[derive(QueryableByName)]
    struct Earliest {
        #[diesel(sql_type = diesel::sql_types::Nullable<BigInt>)]
        run_at: Option<i64>,
    }
    if destinations.is_empty() {
        return Ok(None);
    }
    let firsts: Vec<String> = destinations
        .iter()
        .map(|d| {
            format!(
                "SELECT (SELECT MIN(run_at) FROM jobs WHERE status = 'pending' \
                 AND destination = {}) AS first",
                literal(d)
            )
        })
        .collect();
    let sql = format!(
        "SELECT MIN(first) AS run_at FROM ({}) AS firsts",
        firsts.join(" UNION ALL ")
    );
    Ok(diesel::sql_query(sql).get_result::<Earliest>(conn)?.run_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::test_db::TestDb;

    /// A backlog of due jobs for SparkLoop, and three due ESP writes among them (plus one not
    /// yet due): a claim for the ESP alone takes its own three and reads past none of the
    /// others; a claim for both takes the earliest across the two.
    #[test]
    fn a_claim_reads_only_its_destinations_due_jobs_earliest_first() {
        let test = TestDb::default();
        let db = &test.db;
        db.write(|conn| {
            let mut sql = String::from(
                "INSERT INTO subscribers (id, email, status, created_at, updated_at) \
                 VALUES (1, 's@example.com', 'subscribed', 0, 0);",
            );
            let mut jobs = Vec::new();
            for id in 1..=300 {
                jobs.push((id, "sparkloop", id));
            }
            jobs.extend([
                (301, "esp", 150),
                (302, "esp", 50),
                (303, "esp", 250),
                (304, "esp", 5_000),
            ]);
            for (id, destination, run_at) in jobs {
                sql += &format!(
                    "INSERT INTO jobs (id, subscriber_id, destination, kind, payload, status, \
                     created_at, retry_from, run_at) VALUES ({id}, 1, '{destination}', \
                     'subscribe', '{{}}', 'pending', 0, 0, {run_at});"
                );
            }
            on_backend!(conn, |c| c.batch_execute(&sql))?;
            Ok(())
        })
        .unwrap();
        assert_eq!(
            db.read(|conn| next_run_at(conn, &["esp"])).unwrap(),
            Some(50)
        );
        assert_eq!(
            db.read(|conn| next_run_at(conn, &["sparkloop", "esp"]))
                .unwrap(),
            Some(1)
        );
        assert_eq!(db.read(|conn| next_run_at(conn, &[])).unwrap(), None);
        // The dashboard's and /metrics' oldest due job: the earliest pending, once it is due.
        let oldest_due = |now| db.read(|conn| crate::db::admin::oldest_due(conn, now));
        assert_eq!(oldest_due(1_000).unwrap(), Some(1));
        assert_eq!(oldest_due(0).unwrap(), None);
        let ids = |jobs: Vec<ClaimedJob>| {
            let mut ids: Vec<i64> = jobs.iter().map(|job| job.id).collect();
            ids.sort_unstable();
            ids
        };
        let esp = db
            .write(|conn| claim(conn, &["esp"], 10, "mine", 1_000, 30_000))
            .unwrap();
        assert_eq!(ids(esp), [301, 302, 303]);
        let both = db
            .write(|conn| claim(conn, &["sparkloop", "esp"], 4, "mine", 1_000, 30_000))
            .unwrap();
        assert_eq!(ids(both), [1, 2, 3, 4]);
        // The ESP's jobs are a range of the index of their own (status, destination, run_at).
        if db.is_sqlite() {
            #[derive(QueryableByName)]
            struct Plan {
                #[diesel(sql_type = Text)]
                detail: String,
            }
            let due = DUE
                .replace("{destination}", "'esp'")
                .replace("{now}", "1000")
                .replace("{limit}", "10");
            let plan: Vec<Plan> = db
                .read(|conn| Ok(diesel::sql_query(format!("EXPLAIN QUERY PLAN {due}")).load(conn)?))
                .unwrap();
            assert!(
                plan.iter().any(|p| p
                    .detail
                    .contains("jobs_by_status (status=? AND destination=? AND run_at<?)")),
                "{:?}",
                plan.iter().map(|p| &p.detail).collect::<Vec<_>>()
            );
        }
    }
}
