//! Opening connections: one by URL with the settings each backend needs, and the pool's
//! manager, which opens them and drops those that found the server gone.

use diesel::connection::SimpleConnection;
use diesel::r2d2::{ManageConnection, PooledConnection};
use diesel::Connection;

use super::{DbConnection, StoreError};
use crate::config::DatabaseUrl;

/// Opens one connection by URL, with the real error on failure (diesel's derived `establish`
/// would report only the last backend it tried).
pub fn establish(url: &DatabaseUrl) -> Result<DbConnection, StoreError> {
    match url {
        DatabaseUrl::Postgres(url) => open_postgres(url).map(DbConnection::Postgres),
        DatabaseUrl::Sqlite(path) => open_sqlite(path).map(DbConnection::Sqlite),
    }
}

/// Opens a Postgres connection that plans every execution of a prepared statement for its own
/// parameters. diesel prepares and keeps each statement; Postgres would soon settle on one
/// generic plan per statement, costed on the table as it was then, and a queue's tables start
/// empty: a plan made on the empty table (a sequential scan) would stay in use after the table
/// had grown, until the next ANALYZE. Planning these small statements costs microseconds.
fn open_postgres(url: &str) -> Result<diesel::PgConnection, StoreError> {
    let mut conn = diesel::PgConnection::establish(url)
        .map_err(|e| StoreError::Connect(e.to_string().trim().to_string()))?;
    conn.batch_execute("SET plan_cache_mode = force_custom_plan")
        .map_err(|e| StoreError::Connect(e.to_string().trim().to_string()))?;
    Ok(conn)
}

/// Opens a SQLite file (creating it) with the settings every connection needs: WAL so readers
/// never block the writer, `synchronous=NORMAL` (durable across process crashes, a committed
/// transaction survives a kill), a busy timeout for other processes, and foreign keys.
fn open_sqlite(path: &std::path::Path) -> Result<diesel::SqliteConnection, StoreError> {
    let path_text = path.to_str().ok_or_else(|| {
        StoreError::Connect(format!(
            "the SQLite path {} is not valid UTF-8",
            path.display()
        ))
    })?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            return Err(StoreError::Connect(format!(
                "the folder {} of the SQLite file does not exist",
                parent.display()
            )));
        }
    }
    let mut conn = diesel::SqliteConnection::establish(path_text)
        .map_err(|e| StoreError::Connect(format!("{}: {e}", path.display())))?;
    conn.batch_execute(
        "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
         PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA secure_delete = FAST;",
    )
    .map_err(|e| StoreError::Connect(format!("{}: {e}", path.display())))?;
    Ok(conn)
}

/// The r2d2 manager: opens connections with [`establish`].
#[derive(Debug)]
pub struct Manager {
    pub(super) url: DatabaseUrl,
}

/// A connection in the pool, and whether a statement on it found the server gone: r2d2 then
/// drops it rather than hand it out again.
pub struct Pooled {
    pub(super) conn: DbConnection,
    pub(super) broken: bool,
}

impl std::ops::Deref for Pooled {
    type Target = DbConnection;
    fn deref(&self) -> &DbConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut DbConnection {
        &mut self.conn
    }
}

impl ManageConnection for Manager {
    type Connection = Pooled;
    type Error = StoreError;

    fn connect(&self) -> Result<Pooled, StoreError> {
        Ok(Pooled {
            conn: establish(&self.url)?,
            broken: false,
        })
    }

    fn is_valid(&self, conn: &mut Pooled) -> Result<(), StoreError> {
        conn.conn
            .batch_execute("SELECT 1")
            .map_err(StoreError::from)
    }

    fn has_broken(&self, conn: &mut Pooled) -> bool {
        conn.broken
    }
}

/// A pooled connection.
pub type PooledConn = PooledConnection<Manager>;
