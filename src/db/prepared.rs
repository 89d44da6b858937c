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
