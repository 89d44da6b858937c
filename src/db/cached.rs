//! SQLite statements over many rows that the connection compiles once, not on every call.
//!
//! Diesel never caches a multi-row insert or an `IN` list built from a slice: their text varies
//! with the number of rows. Under load, compiling them again for every ingest batch took a fifth
//! of the ingest writer's time (`sqlite3_prepare_v3`, 18% of its samples under wrk). The types
//! here write the same SQL in chunks of at most [`ROWS`] rows, and mark it safe to cache. The
//! connection keys its cache by the text, so it keeps at most [`ROWS`] statements per shape.
//! Postgres has its own path: one array per column, one fixed text (`super::prepared`).

use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Text, Untyped};
use diesel::sqlite::Sqlite;
use diesel::{QueryResult, RunQueryDsl};

/// The most rows one cached statement carries. Longer batches run in chunks of this length.
pub const ROWS: usize = 64;

/// A row that a cached multi-row insert carries.
pub trait Row {
    /// `INSERT INTO <table> (<columns>) VALUES `, the columns in the order [`Row::push`] binds.
    const INSERT: &'static str;

    /// Binds the row's values, separated by commas.
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Sqlite>) -> QueryResult<()>;
}

/// The body of a [`Row::push`]: binds each value as its SQL type, separated by commas.
macro_rules! bind_values {
    ($out:expr; $first_type:ty => $first:expr $(, $ty:ty => $value:expr)* $(,)?) => {{
        $out.push_bind_param::<$first_type, _>($first)?;
        $(
            $out.push_sql(", ");
            $out.push_bind_param::<$ty, _>($value)?;
        )*
        Ok(())
    }};
}
pub(crate) use bind_values;

/// `INSERT ... VALUES (...), (...) <returning>` of up to [`ROWS`] rows, cached by its text.
pub struct Insert<'a, R> {
    rows: &'a [R],
    returning: &'static str,
}

/// An insert of `rows` (at most [`ROWS`] of them) that answers nothing.
pub fn insert<R: Row>(rows: &[R]) -> Insert<'_, R> {
    insert_returning(rows, "")
}

/// An insert of `rows` (at most [`ROWS`] of them) ending in `returning` (` RETURNING ...`),
/// read with `load` into a `QueryableByName` type.
pub fn insert_returning<'a, R: Row>(rows: &'a [R], returning: &'static str) -> Insert<'a, R> {
    debug_assert!(
        rows.len() <= ROWS,
        "a cached statement carries at most ROWS rows"
    );
    Insert { rows, returning }
}

impl<R: Row> QueryFragment<Sqlite> for Insert<'_, R> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql(R::INSERT);
        for (n, row) in self.rows.iter().enumerate() {
            out.push_sql(if n == 0 { "(" } else { ", (" });
            row.push(&mut out)?;
            out.push_sql(")");
        }
        out.push_sql(self.returning);
        Ok(())
    }
}

/// `<head> (?, ?, ...) <tail>` over up to [`ROWS`] texts, with one more text bound in `head`
/// where it holds a `?` (a placeholder of its own).
pub struct InList<'a> {
    head: &'static str,
    head_bind: Option<&'a str>,
    items: &'a [&'a str],
    tail: &'static str,
}

/// A read whose `head` ends where its list of `items` (at most [`ROWS`]) begins. A `head` that
/// needs a value binds `head_bind` in the first placeholder it writes as `?`.
pub fn in_list<'a>(
    head: &'static str,
    head_bind: Option<&'a str>,
    items: &'a [&'a str],
    tail: &'static str,
) -> InList<'a> {
    debug_assert!(
        items.len() <= ROWS,
        "a cached statement carries at most ROWS items"
    );
    debug_assert_eq!(head.matches('?').count(), usize::from(head_bind.is_some()));
    InList {
        head,
        head_bind,
        items,
        tail,
    }
}

impl QueryFragment<Sqlite> for InList<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        match (self.head.split_once('?'), &self.head_bind) {
            (Some((before, after)), Some(value)) => {
                out.push_sql(before);
                out.push_bind_param::<Text, _>(value)?;
                out.push_sql(after);
            }
            _ => out.push_sql(self.head),
        }
        out.push_sql("(");
        for (n, item) in self.items.iter().enumerate() {
            if n > 0 {
                out.push_sql(", ");
            }
            out.push_bind_param::<Text, _>(item)?;
        }
        out.push_sql(")");
        out.push_sql(self.tail);
        Ok(())
    }
}

macro_rules! cached_by_text {
    ($($ty:ident$(<$r:ident>)?),*) => {$(
        // Keyed by its text (which names its number of rows), not by its type.
        impl<$($r)?> QueryId for $ty<'_ $(, $r)?> {
            type QueryId = ();
            const HAS_STATIC_QUERY_ID: bool = false;
        }

        impl<$($r)?> Query for $ty<'_ $(, $r)?> {
            type SqlType = Untyped;
        }

        impl<$($r,)? Conn> RunQueryDsl<Conn> for $ty<'_ $(, $r)?> {}
    )*};
}

cached_by_text!(Insert<R>, InList);

#[cfg(test)]
mod tests {
    use diesel::connection::{Instrumentation, InstrumentationEvent, SimpleConnection};
    use diesel::prelude::*;
    use diesel::sql_types::BigInt;

    use super::*;

    /// Counts the statements the connection compiles.
    #[derive(Default)]
    struct Compiles(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl Instrumentation for Compiles {
        fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
            if let InstrumentationEvent::CacheQuery { .. } = event {
                self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    struct Pair<'a>(&'a str, i64);

    impl Row for Pair<'_> {
        const INSERT: &'static str = "INSERT INTO t (name, n) VALUES ";
        fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
            bind_values!(out; Text => &self.0, BigInt => &self.1)
        }
    }

    #[derive(QueryableByName, Debug, PartialEq)]
    struct Named {
        #[diesel(sql_type = Text)]
        name: String,
        #[diesel(sql_type = BigInt)]
        n: i64,
    }

    /// The same shape run again is not compiled again, and each statement writes and reads
    /// exactly its rows: two lengths of insert and one of list, run twice, compile three times.
    #[test]
    fn a_shape_is_compiled_once_and_carries_its_rows() {
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        let compiled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        conn.set_instrumentation(Compiles(compiled.clone()));
        conn.batch_execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, n INTEGER)")
            .unwrap();
        for round in 0..2i64 {
            let names: Vec<String> = (0..5).map(|n| format!("r{round}-{n}")).collect();
            let rows: Vec<Pair<'_>> = names
                .iter()
                .enumerate()
                .map(|(n, name)| Pair(name, n as i64))
                .collect();
            assert_eq!(insert(&rows[..2]).execute(&mut conn).unwrap(), 2);
            let back: Vec<Named> = insert_returning(&rows[2..], " RETURNING name, n")
                .load(&mut conn)
                .unwrap();
            assert_eq!(back.len(), 3);
            let wanted: Vec<&str> = names.iter().map(String::as_str).collect();
            let mut found: Vec<Named> = in_list(
                "SELECT name, n FROM t WHERE name <> ? AND name IN ",
                Some("nobody"),
                &wanted[1..4],
                " ORDER BY n",
            )
            .load(&mut conn)
            .unwrap();
            found.sort_by_key(|row| row.n);
            let expected: Vec<Named> = (1..4)
                .map(|n| Named {
                    name: names[n].clone(),
                    n: n as i64,
                })
                .collect();
            assert_eq!(found, expected);
        }
        assert_eq!(
            compiled.load(std::sync::atomic::Ordering::Relaxed),
            3,
            "each shape compiled once"
        );
    }
}
