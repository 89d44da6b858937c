//! Raw statements that Postgres prepares once per connection.
//!
//! Diesel never caches a `sql_query`'s prepared statement (it cannot know that the text does not
//! vary), so Postgres parses, analyses and plans it on every call: for the batch statements of
//! ingest and callbacks, a large share of the database's work per batch. Their text is fixed
//! (arrays carry the rows), so they are marked safe to cache, keyed by their text.

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::BigInt;
use diesel::{QueryResult, QueryableByName, RunQueryDsl};

/// A statement whose text never varies (no rows spliced into it), cached by the connection.
///
/// Run it with `load` or `get_result`: diesel's `execute` hands the statement on by reference,
/// and a reference, with diesel's own `QueryFragment`, loses the mark. A statement that returns
/// nothing is written to answer its row count instead (`WITH w AS (... RETURNING 1) SELECT
/// count(*) AS n FROM w`, read as a [`Count`]).
#[derive(Debug, Clone)]
pub struct Prepared<T>(pub T);

impl<T: QueryFragment<Pg>> QueryFragment<Pg> for Prepared<T> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &Pg) -> QueryResult<bool> {
        Ok(true)
    }
}

impl<T> QueryId for Prepared<T> {
    type QueryId = ();

    // Keyed by its text rather than by its type.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<T: Query> Query for Prepared<T> {
    type SqlType = T::SqlType;
}

impl<T, Conn> RunQueryDsl<Conn> for Prepared<T> {}

/// Wraps a fixed-text `diesel::sql_query` so that Postgres prepares it once per connection.
pub fn prepared<T>(query: T) -> Prepared<T> {
    Prepared(query)
}

/// The one row of a statement that answers how many rows it wrote.
#[derive(Debug, QueryableByName)]
pub struct Count {
    /// The number of rows.
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

#[cfg(test)]
mod tests {
    use diesel::sql_types::Text;

    use crate::db::test_db::TestDb;
    use crate::db::{inbox, jobs, DbConnection};

    /// The batch statements are prepared once per connection, whether they are read (`load`) or
    /// only run for their effect (the row-count form): run twice, each is one prepared
    /// statement on the server.
    #[test]
    fn batch_statements_are_prepared_once_per_connection() {
        let test = TestDb::default();
        let mut pooled = test.db.conn().unwrap();
        let conn: &mut DbConnection = &mut pooled;
        if !matches!(conn, DbConnection::Postgres(_)) {
            return; // SQLite: nothing is planned over a network, nothing to check
        }
        for n in 0..2 {
            let email = format!("p{n}@example.com");
            let row = inbox::NewInboundEvent {
                source: "esp",
                event_type: "subscribe",
                subject: Some(&email),
                body_sha256: "h",
                body: "{}",
                outcome: inbox::PROCESSED,
                subscriber_id: None,
                received_at: n,
                idempotency_key: None,
            };
            inbox::insert_all(conn, &[row]).unwrap();
            jobs::lock_lines(conn, &[n + 1]).unwrap();
        }
        #[derive(diesel::QueryableByName)]
        struct Statement {
            #[diesel(sql_type = Text)]
            statement: String,
        }
        let DbConnection::Postgres(c) = conn else {
            unreachable!()
        };
        let prepared: Vec<Statement> = diesel::RunQueryDsl::load(
            diesel::sql_query("SELECT statement FROM pg_prepared_statements"),
            c,
        )
        .unwrap();
        let count = |text: &str| {
            prepared
                .iter()
                .filter(|s| s.statement.contains(text))
                .count()
        };
        assert_eq!(count("INSERT INTO inbound_events"), 1);
        assert_eq!(count("WITH locked AS"), 1);
    }
}
