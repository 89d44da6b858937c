//! Recording the attempts of a batch of claimed jobs, and what becomes of each job.

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text};

use super::{lock_lines, promote_next, ClaimedJob, JobStatus};
use crate::db::prepared::{prepared, Count};
use crate::db::schema::{attempts, jobs, subscribers};
use crate::db::{column, DbConnection, StoreError, ROWS_PER_STATEMENT};

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
    /// Not sent: it would have sent what was last written.
    Skipped,
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
    /// For a field write: the body it sent (or would have sent), kept once it is done.
    pub written: Option<&'a Written>,
}

/// The body of a field write, kept with its job (so that `deliveries show` shows what was
/// sent) and, by its hash, with the subscriber (so that the same body is not sent again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The body as sent.
    pub body: String,
    /// Its SHA-256, in hex.
    pub sha256: String,
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
    if let DbConnection::Postgres(c) = conn {
        if batch
            .iter()
            .all(|a| a.outcome == &Outcome::Done && a.written.is_none())
        {
            return finish_deliveries(c, lease_token, batch);
        }
    }
    let finishing: Vec<i64> = batch
        .iter()
        .filter(|a| !matches!(a.outcome, Outcome::Retry { .. }))
        .map(|a| a.job.subscriber_id)
        .collect();
    lock_lines(conn, &finishing)?;
    let new_attempts: Vec<&NewAttempt> = batch.iter().map(|a| a.attempt).collect();
    insert_attempts(conn, &new_attempts)?;
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
        .filter(|a| a.outcome == &Outcome::Done && a.written.is_none())
        .map(|a| a.job.id)
        .collect();
    // One finishing time for the lot: the attempts ended within the batch's few milliseconds.
    let now = batch.iter().map(|a| a.now).max().unwrap_or(0);
    changed.extend(finish_done(conn, lease_token, &done, now)?);
    for a in batch {
        let update = diesel::update(owned(vec![a.job.id]));
        let updated = match (a.outcome, a.written) {
            (Outcome::Done, None) => continue,
            (Outcome::Done | Outcome::Skipped, Some(written)) => {
                let status = if a.outcome == &Outcome::Done {
                    JobStatus::Done
                } else {
                    JobStatus::Skipped
                };
                let updated = update
                    .set((
                        jobs::status.eq(status.as_str()),
                        release(),
                        jobs::last_error.eq(None::<String>),
                        jobs::finished_at.eq(Some(a.now)),
                        jobs::payload.eq(&written.body),
                    ))
                    .execute(conn)?;
                if updated == 1 && status == JobStatus::Done {
                    diesel::update(subscribers::table.find(a.job.subscriber_id))
                        .set(subscribers::esp_written_sha256.eq(&written.sha256))
                        .execute(conn)?;
                }
                updated
            }
            (Outcome::Skipped, None) => update
                .set((
                    jobs::status.eq(JobStatus::Skipped.as_str()),
                    release(),
                    jobs::last_error.eq(None::<String>),
                    jobs::finished_at.eq(Some(a.now)),
                ))
                .execute(conn)?,
            (Outcome::Retry { run_at, error }, _) => update
                .set((
                    jobs::status.eq(JobStatus::Pending.as_str()),
                    release(),
                    jobs::run_at.eq(run_at),
                    jobs::last_error.eq(Some(error)),
                ))
                .execute(conn)?,
            (Outcome::Dead { error }, _) => update
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

/// [`record_attempts`] on Postgres for a batch of deliveries that all succeeded and wrote no
/// fields (the bulk of them): one call of the `finish_deliveries` function of migration 16,
/// which does what the general path's four statements do.
fn finish_deliveries(
    conn: &mut diesel::PgConnection,
    lease_token: &str,
    batch: &[Attempted<'_>],
) -> Result<Vec<bool>, StoreError> {
    #[derive(QueryableByName)]
    struct Finished {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    let mut lines: Vec<i64> = batch.iter().map(|a| a.job.subscriber_id).collect();
    lines.sort_unstable();
    lines.dedup();
    let done: Vec<i64> = batch.iter().map(|a| a.job.id).collect();
    let attempts: Vec<&NewAttempt> = batch.iter().map(|a| a.attempt).collect();
    // One finishing time for the lot, as in the general path.
    let now = batch.iter().map(|a| a.now).max().unwrap_or(0);
    let finished: Vec<Finished> = prepared(
        diesel::sql_query(
            "SELECT id FROM finish_deliveries($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) AS f(id)",
        )
        .bind::<Text, _>(lease_token)
        .bind::<BigInt, _>(now)
        .bind::<Array<BigInt>, _>(&lines)
        .bind::<Array<BigInt>, _>(&done)
        .bind::<Array<BigInt>, _>(column(&attempts, |a| a.job_id))
        .bind::<Array<BigInt>, _>(column(&attempts, |a| a.started_at))
        .bind::<Array<BigInt>, _>(column(&attempts, |a| a.duration_ms))
        .bind::<Array<Nullable<Integer>>, _>(column(&attempts, |a| a.status_code))
        .bind::<Array<Nullable<Text>>, _>(column(&attempts, |a| a.error.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(column(&attempts, |a| a.response_body.as_deref())),
    )
    .load(conn)?;
    let finished: std::collections::HashSet<i64> = finished.into_iter().map(|f| f.id).collect();
    Ok(batch.iter().map(|a| finished.contains(&a.job.id)).collect())
}

/// Inserts attempts: on Postgres in one statement from arrays, prepared once per connection (as
/// `inbox::insert_all`); on SQLite a few hundred per statement.
fn insert_attempts(conn: &mut DbConnection, new: &[&NewAttempt]) -> Result<(), StoreError> {
    if new.is_empty() {
        return Ok(());
    }
    if let DbConnection::Postgres(c) = conn {
        prepared(
            diesel::sql_query(
                "WITH recorded AS (INSERT INTO attempts (job_id, started_at, duration_ms, \
                 status_code, error, response_body) \
                 SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int4[], \
                 $5::text[], $6::text[]) RETURNING 1) SELECT count(*) AS n FROM recorded",
            )
            .bind::<Array<BigInt>, _>(column(new, |a| a.job_id))
            .bind::<Array<BigInt>, _>(column(new, |a| a.started_at))
            .bind::<Array<BigInt>, _>(column(new, |a| a.duration_ms))
            .bind::<Array<Nullable<Integer>>, _>(column(new, |a| a.status_code))
            .bind::<Array<Nullable<Text>>, _>(column(new, |a| a.error.as_deref()))
            .bind::<Array<Nullable<Text>>, _>(column(new, |a| a.response_body.as_deref())),
        )
        .get_result::<Count>(c)?;
        return Ok(());
    }
    for chunk in new.chunks(ROWS_PER_STATEMENT) {
        let rows: Vec<NewAttempt> = chunk.iter().map(|a| (*a).clone()).collect();
        let insert = diesel::insert_into(attempts::table).values(rows);
        on_backend!(conn, |c| insert.execute(c))?;
    }
    Ok(())
}

/// Marks done the jobs among `ids` that `lease_token` still holds, finished at `now`, and returns
/// their ids: on Postgres one prepared statement, on SQLite one per few hundred jobs.
fn finish_done(
    conn: &mut DbConnection,
    lease_token: &str,
    ids: &[i64],
    now: i64,
) -> Result<Vec<i64>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    if let DbConnection::Postgres(c) = conn {
        #[derive(QueryableByName)]
        struct Finished {
            #[diesel(sql_type = BigInt)]
            id: i64,
        }
        let finished: Vec<Finished> = prepared(
            diesel::sql_query(
                "UPDATE jobs SET status = 'done', attempts = attempts + 1, lease_token = NULL, \
                 lease_expires_at = NULL, last_error = NULL, finished_at = $1 \
                 WHERE id = ANY($2) AND status = 'running' AND lease_token = $3 RETURNING id",
            )
            .bind::<BigInt, _>(now)
            .bind::<Array<BigInt>, _>(ids)
            .bind::<Text, _>(lease_token),
        )
        .load(c)?;
        return Ok(finished.into_iter().map(|row| row.id).collect());
    }
    let mut finished = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let owned = jobs::table
            .filter(jobs::id.eq_any(chunk))
            .filter(jobs::status.eq(JobStatus::Running.as_str()))
            .filter(jobs::lease_token.eq(lease_token));
        let ids: Vec<i64> = diesel::update(owned)
            .set((
                jobs::status.eq(JobStatus::Done.as_str()),
                jobs::attempts.eq(jobs::attempts + 1),
                jobs::lease_token.eq(None::<String>),
                jobs::lease_expires_at.eq(None::<i64>),
                jobs::last_error.eq(None::<String>),
                jobs::finished_at.eq(Some(now)),
            ))
            .returning(jobs::id)
            .get_results(conn)?;
        finished.extend(ids);
    }
    Ok(finished)
}

#[cfg(test)]
mod tests {
    use diesel::connection::SimpleConnection;

    use super::*;
    use crate::db::jobs::claim;
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

    /// Jobs 1-6 of four subscribers (1 and 2 with a job waiting behind their head), all but 2
    /// and 4 claimed under lease "mine" then job 6 taken by another worker, and `outcomes` for
    /// jobs 1, 3, 5 and 6 recorded: what `record_attempts` answered, every job's state, and how
    /// many attempts were kept.
    fn record_four(outcomes: [Outcome; 4]) -> (Vec<bool>, Vec<String>, i64) {
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
                written: None,
            })
            .collect();
        let changed = db
            .write(|conn| record_attempts(conn, "mine", &batch))
            .unwrap();

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
        let recorded: i64 = db
            .read(|conn| Ok(attempts::table.count().get_result(conn)?))
            .unwrap();
        (changed, state, recorded)
    }

    #[test]
    fn a_batch_of_attempts_finishes_retries_and_hands_lines_on_only_under_its_lease() {
        let (changed, state, recorded) = record_four([
            Outcome::Done,
            Outcome::Dead {
                error: "HTTP 400".into(),
            },
            Outcome::Retry {
                run_at: 5_000,
                error: "HTTP 503".into(),
            },
            Outcome::Done,
        ]);
        assert_eq!(changed, [true, true, true, false]);
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
        assert_eq!(
            recorded, 4,
            "an attempt is kept even when its lease was lost"
        );
    }

    /// A batch that all succeeded takes Postgres's one-call path (`finish_deliveries`): the
    /// same guarantees.
    #[test]
    fn a_batch_of_deliveries_done_hands_lines_on_only_under_its_lease() {
        let (changed, state, recorded) =
            record_four([Outcome::Done, Outcome::Done, Outcome::Done, Outcome::Done]);
        assert_eq!(changed, [true, true, true, false]);
        assert_eq!(
            state,
            [
                r#"(1, "done", 1, 0, None, None)"#,
                r#"(2, "pending", 0, 2000, None, None)"#,
                r#"(3, "done", 1, 0, None, None)"#,
                r#"(4, "pending", 0, 2000, None, None)"#,
                r#"(5, "done", 1, 0, None, None)"#,
                r#"(6, "running", 0, 0, Some("theirs"), None)"#,
            ]
        );
        assert_eq!(recorded, 4);
    }
}
