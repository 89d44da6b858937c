//! SQLite: the write-ahead log copied back into the database file beside the writer, not by it.
//!
//! SQLite's own automatic checkpoint runs inside the commit that fills the log, on the writer's
//! thread, while every batch queued behind it waits: under wrk it was 8% of the ingest writer's
//! time, with the file's `fdatasync`. A pass here every [`EVERY`] copies what was committed since
//! the last one (`PASSIVE`: it never waits for, nor blocks, a reader or the writer). The writer's
//! automatic checkpoint (at SQLite's default of 1,000 pages in the log) stays as the backstop: it
//! then finds the log copied but for the last few frames, and starts it again from the top.

use std::time::Duration;

use diesel::sql_types::Integer;
use diesel::{QueryableByName, RunQueryDsl};

use super::{Db, DbConnection, StoreError};

/// How often the log is copied back.
pub const EVERY: Duration = Duration::from_millis(20);

/// What a `PRAGMA wal_checkpoint` answered.
#[derive(Debug, QueryableByName)]
pub struct Checkpointed {
    /// 1 when another checkpoint held the log (nothing was done), else 0.
    #[diesel(sql_type = Integer)]
    pub busy: i32,
    /// Frames in the log.
    #[diesel(sql_type = Integer)]
    pub log: i32,
    /// Frames of the log now in the database file.
    #[diesel(sql_type = Integer)]
    pub checkpointed: i32,
}

/// Copies the log's committed frames into the database file without waiting for anyone;
/// `None` on Postgres.
pub fn checkpoint_passive(conn: &mut DbConnection) -> Result<Option<Checkpointed>, StoreError> {
    let DbConnection::Sqlite(c) = conn else {
        return Ok(None);
    };
    let answer = diesel::sql_query("PRAGMA wal_checkpoint(PASSIVE)").get_result(c)?;
    Ok(Some(answer))
}

/// Copies the log back every [`EVERY`] until `stop`, when something was written since the last
/// time; returns at once on Postgres.
pub async fn run(db: Db, stop: tokio_util::sync::CancellationToken) {
    if !db.is_sqlite() {
        return;
    }
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let mut written = db.write_time();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        // Every write transaction adds to it when it ends: an idle bridge checks nothing.
        let now_written = db.write_time();
        if now_written == written {
            continue;
        }
        written = now_written;
        match db.read_async(checkpoint_passive).await {
            Ok(_) => failing = false,
            // Said once per run of failures: the writer's own checkpoint still bounds the log.
            Err(e) if !failing => {
                failing = true;
                log::warn!("WAL checkpoint failed ({e}); the writer's own checkpoint goes on");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::test_db::TestDb;

    /// A passive checkpoint copies every committed frame back into the file.
    #[test]
    fn a_pass_copies_the_committed_log_back() {
        let test = TestDb::default();
        if !test.db.is_sqlite() {
            return; // Postgres has no log of this kind
        }
        test.db
            .write(|conn| {
                diesel::sql_query("CREATE TABLE filler (x TEXT)").execute(conn)?;
                diesel::sql_query(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) \
                     INSERT INTO filler SELECT hex(randomblob(500)) FROM n",
                )
                .execute(conn)?;
                Ok(())
            })
            .unwrap();
        let done = test.db.read(checkpoint_passive).unwrap().unwrap();
        assert_eq!(done.busy, 0);
        assert!(done.log > 0, "the writes are in the log: {done:?}");
        assert_eq!(done.checkpointed, done.log, "all of it copied: {done:?}");
    }
}
