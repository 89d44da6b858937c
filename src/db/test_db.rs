//! Databases for unit tests.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::Connection;

use super::{Db, DbConnection, StoreError};
use crate::config::DatabaseUrl;

/// A migrated database: a fresh one under TEST_DATABASE_URL when set (dropped afterwards),
/// else a SQLite file in a temporary folder.
pub struct TestDb {
    /// The database.
    pub db: Db,
    _dir: tempfile::TempDir,
    postgres: Option<(String, String)>,
}

impl Default for TestDb {
    /// A new, migrated database.
    fn default() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let mut postgres = None;
        let url = match std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
        {
            Some(admin) => {
                let name = format!("rb_unit_{:016x}", rand::random::<u64>());
                let mut conn = diesel::PgConnection::establish(&admin).expect("Postgres");
                conn.batch_execute(&format!("CREATE DATABASE {name}"))
                    .unwrap();
                let base = admin.split('?').next().unwrap();
                let url = format!("{}/{name}", &base[..base.rfind('/').unwrap()]);
                postgres = Some((admin, name));
                url
            }
            None => dir.path().join("unit.db").to_str().unwrap().to_string(),
        };
        let db = Db::connect(
            &DatabaseUrl::parse(&url).unwrap(),
            2,
            Duration::from_secs(5),
        )
        .unwrap();
        db.migrate().unwrap();
        TestDb {
            db,
            _dir: dir,
            postgres,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.postgres {
            if let Ok(mut conn) = diesel::PgConnection::establish(admin) {
                let _ = conn.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"));
            }
        }
    }
}

/// Runs `first` and `second` in two write transactions at once: `second` starts once `first` has
/// done its work, and `first` commits 300 ms later, time enough for `second` to read what it
/// reads were it not made to wait. Returns both results.
pub fn at_once<A: Send, B: Send>(
    db: &Db,
    first: impl FnOnce(&mut DbConnection) -> Result<A, StoreError> + Send,
    second: impl FnOnce(&mut DbConnection) -> Result<B, StoreError> + Send,
) -> (A, B) {
    let (written, wait_written) = std::sync::mpsc::channel();
    let (commit, wait_commit) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let first = scope.spawn(move || {
            db.write(|conn| {
                let result = first(conn)?;
                written.send(()).unwrap();
                wait_commit.recv().unwrap();
                Ok(result)
            })
            .unwrap()
        });
        wait_written.recv().unwrap();
        let second = scope.spawn(|| db.write(second).unwrap());
        std::thread::sleep(Duration::from_millis(300));
        commit.send(()).unwrap();
        (first.join().unwrap(), second.join().unwrap())
    })
}
