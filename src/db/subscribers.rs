//! Subscriber records: one per person, keyed by normalised email; identity survives an email
//! change.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel::query_builder::AstPass;
use diesel::sql_types::{Array, BigInt, Nullable, Text};
use diesel::sqlite::Sqlite;
use referral_bridge_adapters::{Email, Person};

use super::schema::subscribers;
use super::{cached, column, DbConnection, StoreError, ROWS_PER_STATEMENT};
use crate::db::prepared::{prepared, Count};

/// `subscribers.status` of someone on the list.
pub const SUBSCRIBED: &str = "subscribed";
/// `subscribers.status` of someone who left.
pub const UNSUBSCRIBED: &str = "unsubscribed";

/// A subscriber as stored.
#[derive(Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = subscribers)]
pub struct Subscriber {
    /// The bridge's own id, stable across email changes.
    pub id: i64,
    /// Normalised email.
    pub email: String,
    /// The ESP's id as a JSON literal (`123` or `"abc"`).
    pub esp_id: Option<String>,
    /// First name.
    pub first_name: Option<String>,
    /// Full name.
    pub name: Option<String>,
    /// `subscribed` or `unsubscribed`.
    pub status: String,
    /// When the bridge first heard of them (unix ms).
    pub created_at: i64,
    /// When the record last changed (unix ms).
    pub updated_at: i64,
}

/// A subscriber to insert.
#[derive(Insertable)]
#[diesel(table_name = subscribers)]
// `None` is NULL rather than DEFAULT, so that many rows go in one statement on SQLite too.
#[diesel(treat_none_as_default_value = false)]
pub struct NewSubscriber<'a> {
    /// Normalised email.
    pub email: &'a str,
    /// The ESP's id as a JSON literal.
    pub esp_id: Option<&'a str>,
    /// First name.
    pub first_name: Option<&'a str>,
    /// Full name.
    pub name: Option<&'a str>,
    /// `subscribed` or `unsubscribed`.
    pub status: &'a str,
    /// When the bridge first heard of them (unix ms).
    pub created_at: i64,
    /// When the record last changed (unix ms).
    pub updated_at: i64,
}

/// Every column a write-back sets: the record as it now stands.
#[derive(AsChangeset)]
#[diesel(table_name = subscribers)]
#[diesel(treat_none_as_null = true)]
struct Fields<'a> {
    email: &'a str,
    esp_id: Option<&'a str>,
    first_name: Option<&'a str>,
    name: Option<&'a str>,
    status: &'a str,
    updated_at: i64,
}

/// The subscribers with these normalised emails.
pub fn find_by_emails(
    conn: &mut DbConnection,
    emails: &[&str],
) -> Result<Vec<Subscriber>, StoreError> {
    let mut found = Vec::with_capacity(emails.len());
    if let DbConnection::Sqlite(c) = conn {
        // The ingest's read of every batch: a cached statement (see `cached`).
        for chunk in emails.chunks(cached::ROWS) {
            found.extend(
                cached::in_list(
                    "SELECT id, email, esp_id, first_name, name, status, created_at, updated_at \
                     FROM subscribers WHERE email IN ",
                    None,
                    chunk,
                    "",
                )
                .load::<Subscriber>(c)?,
            );
        }
        return Ok(found);
    }
    for chunk in emails.chunks(ROWS_PER_STATEMENT) {
        found.extend(
            subscribers::table
                .filter(subscribers::email.eq_any(chunk))
                .select(Subscriber::as_select())
                .load(conn)?,
        );
    }
    Ok(found)
}

/// [`find_by_emails`] for a caller about to write: on Postgres the rows are locked until the end
/// of the caller's transaction.
///
/// The callers read, decide in memory and write back: without the lock, two transactions
/// deciding on the same subscriber at once (two ingest writers, two instances, an import beside
/// the ingest) would each write back what they read, and the later would undo the earlier (a new
/// name, an email change). Locked in id order, so that two callers cannot deadlock; a caller
/// that waited reads the row as committed (Postgres re-checks the email, so a changed address is
/// no longer found under its old one). SQLite has one writer at a time.
pub fn lock_by_emails(
    conn: &mut DbConnection,
    emails: &[&str],
) -> Result<Vec<Subscriber>, StoreError> {
    let DbConnection::Postgres(c) = conn else {
        return find_by_emails(conn, emails);
    };
    let mut found = Vec::with_capacity(emails.len());
    for chunk in emails.chunks(ROWS_PER_STATEMENT) {
        found.extend(
            subscribers::table
                .filter(subscribers::email.eq_any(chunk))
                .select(Subscriber::as_select())
                .order(subscribers::id)
                .for_update()
                .load(c)?,
        );
    }
    Ok(found)
}

/// Inserts subscribers (one statement on Postgres, [`cached::ROWS`] per cached statement on
/// SQLite) and returns their ids by email.
pub(super) fn insert_all(
    conn: &mut DbConnection,
    new: &[NewSubscriber<'_>],
) -> Result<HashMap<String, i64>, StoreError> {
    #[derive(QueryableByName)]
    struct Returned {
        #[diesel(sql_type = Text)]
        email: String,
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    let mut ids = HashMap::with_capacity(new.len());
    if new.is_empty() {
        return Ok(ids);
    }
    if let DbConnection::Postgres(c) = conn {
        // One array per column, as in `inbox::insert_all`.
        let rows: Vec<Returned> = prepared(
            diesel::sql_query(
                "INSERT INTO subscribers (email, esp_id, first_name, name, status, created_at, \
             updated_at) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], \
             $5::text[], $6::int8[], $7::int8[]) RETURNING email, id",
            )
            .bind::<Array<Text>, _>(column(new, |s| s.email))
            .bind::<Array<Nullable<Text>>, _>(column(new, |s| s.esp_id))
            .bind::<Array<Nullable<Text>>, _>(column(new, |s| s.first_name))
            .bind::<Array<Nullable<Text>>, _>(column(new, |s| s.name))
            .bind::<Array<Text>, _>(column(new, |s| s.status))
            .bind::<Array<BigInt>, _>(column(new, |s| s.created_at))
            .bind::<Array<BigInt>, _>(column(new, |s| s.updated_at)),
        )
        .load(c)?;
        ids.extend(rows.into_iter().map(|row| (row.email, row.id)));
        return Ok(ids);
    }
    let DbConnection::Sqlite(c) = conn else {
        unreachable!("Postgres is answered above")
    };
    for chunk in new.chunks(cached::ROWS) {
        let rows: Vec<Returned> =
            cached::insert_returning(chunk, " RETURNING email, id").load(c)?;
        ids.extend(rows.into_iter().map(|row| (row.email, row.id)));
    }
    Ok(ids)
}

impl cached::Row for NewSubscriber<'_> {
    const INSERT: &'static str = "INSERT INTO subscribers (email, esp_id, first_name, name, \
        status, created_at, updated_at) VALUES ";

    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        cached::bind_values!(out;
            Text => &self.email,
            Nullable<Text> => &self.esp_id,
            Nullable<Text> => &self.first_name,
            Nullable<Text> => &self.name,
            Text => &self.status,
            BigInt => &self.created_at,
            BigInt => &self.updated_at,
        )
    }
}

/// Writes back every column an event can change of stored subscribers: on Postgres in one
/// statement (their rows are already locked by [`lock_by_emails`], so the order in which it
/// takes them does not matter), on SQLite one by one in the given order.
pub(super) fn update_all(
    conn: &mut DbConnection,
    records: &[&Subscriber],
) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let DbConnection::Postgres(c) = conn else {
        for record in records {
            update(conn, record)?;
        }
        return Ok(());
    };
    prepared(
        diesel::sql_query(
            "WITH updated AS (UPDATE subscribers AS s SET email = u.email, esp_id = u.esp_id, \
         first_name = u.first_name, name = u.name, status = u.status, \
         updated_at = u.updated_at \
         FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], \
         $6::text[], $7::int8[]) AS u(id, email, esp_id, first_name, name, status, updated_at) \
         WHERE s.id = u.id RETURNING 1) SELECT count(*) AS n FROM updated",
        )
        .bind::<Array<BigInt>, _>(column(records, |r| r.id))
        .bind::<Array<Text>, _>(column(records, |r| r.email.as_str()))
        .bind::<Array<Nullable<Text>>, _>(column(records, |r| r.esp_id.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(column(records, |r| r.first_name.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(column(records, |r| r.name.as_deref()))
        .bind::<Array<Text>, _>(column(records, |r| r.status.as_str()))
        .bind::<Array<BigInt>, _>(column(records, |r| r.updated_at)),
    )
    .get_result::<Count>(c)?;
    Ok(())
}

/// Writes back every column an event can change of one stored subscriber.
fn update(conn: &mut DbConnection, record: &Subscriber) -> Result<(), StoreError> {
    diesel::update(subscribers::table.find(record.id))
        .set(Fields {
            email: &record.email,
            esp_id: record.esp_id.as_deref(),
            first_name: record.first_name.as_deref(),
            name: record.name.as_deref(),
            status: &record.status,
            updated_at: record.updated_at,
        })
        .execute(conn)?;
    Ok(())
}

/// A person as an import sees them: what a CSV row can set, and their status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedPerson {
    /// Normalised email.
    pub email: String,
    /// The ESP's id as a JSON literal.
    pub esp_id: Option<String>,
    /// First name.
    pub first_name: Option<String>,
    /// Full name.
    pub name: Option<String>,
    /// `subscribed` or `unsubscribed`.
    pub status: String,
}

impl From<&Subscriber> for ImportedPerson {
    fn from(s: &Subscriber) -> Self {
        ImportedPerson {
            email: s.email.clone(),
            esp_id: s.esp_id.clone(),
            first_name: s.first_name.clone(),
            name: s.name.clone(),
            status: s.status.clone(),
        }
    }
}

impl From<&Person> for ImportedPerson {
    fn from(p: &Person) -> Self {
        ImportedPerson {
            email: p.email.as_str().to_string(),
            esp_id: p.esp_id.as_ref().map(|id| id.to_string()),
            first_name: p.first_name.clone(),
            name: p.name.clone(),
            status: SUBSCRIBED.to_string(),
        }
    }
}

impl ImportedPerson {
    /// This person with what `row` carries (values it lacks stay as they were).
    pub fn merged(&self, row: &Person) -> ImportedPerson {
        ImportedPerson {
            email: self.email.clone(),
            esp_id: row
                .esp_id
                .as_ref()
                .map(|id| id.to_string())
                .or_else(|| self.esp_id.clone()),
            first_name: row.first_name.clone().or_else(|| self.first_name.clone()),
            name: row.name.clone().or_else(|| self.name.clone()),
            status: self.status.clone(),
        }
    }

    /// The person as an ESP event would carry them.
    pub fn to_person(&self) -> Option<Person> {
        Some(Person {
            email: Email::parse(&self.email).ok()?,
            esp_id: super::referral::esp_id_value(self.esp_id.as_deref()),
            first_name: self.first_name.clone(),
            name: self.name.clone(),
        })
    }
}

/// Writes an imported person's id and names over a stored subscriber's.
pub fn update_imported(
    conn: &mut DbConnection,
    id: i64,
    person: &ImportedPerson,
    now: i64,
) -> Result<(), StoreError> {
    diesel::update(subscribers::table.find(id))
        .set((
            subscribers::esp_id.eq(&person.esp_id),
            subscribers::first_name.eq(&person.first_name),
            subscribers::name.eq(&person.name),
            subscribers::updated_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

/// Inserts imported people, a few hundred per statement; returns their ids by email.
pub fn insert_imported(
    conn: &mut DbConnection,
    people: &[&ImportedPerson],
    now: i64,
) -> Result<HashMap<String, i64>, StoreError> {
    let rows: Vec<NewSubscriber<'_>> = people
        .iter()
        .map(|p| NewSubscriber {
            email: &p.email,
            esp_id: p.esp_id.as_deref(),
            first_name: p.first_name.as_deref(),
            name: p.name.as_deref(),
            status: &p.status,
            created_at: now,
            updated_at: now,
        })
        .collect();
    insert_all(conn, &rows)
}

/// Marks subscribers as recorded without being sent to the platform (`import --no-push`).
pub fn mark_unpushed(conn: &mut DbConnection, ids: &[i64]) -> Result<(), StoreError> {
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        diesel::update(subscribers::table.filter(subscribers::id.eq_any(chunk)))
            .set(subscribers::unpushed.eq(true))
            .execute(conn)?;
    }
    Ok(())
}

/// Up to `limit` subscribed subscribers still marked unpushed, oldest first, their rows locked
/// on Postgres; their mark is cleared (the caller queues them in the same transaction).
pub fn take_unpushed(conn: &mut DbConnection, limit: i64) -> Result<Vec<Subscriber>, StoreError> {
    let unpushed = subscribers::table
        .filter(subscribers::unpushed.eq(true))
        .filter(subscribers::status.eq(SUBSCRIBED))
        .order(subscribers::id.asc())
        .limit(limit);
    let taken: Vec<Subscriber> = match conn {
        DbConnection::Postgres(c) => unpushed
            .select(Subscriber::as_select())
            .for_update()
            .load(c)?,
        DbConnection::Sqlite(c) => unpushed.select(Subscriber::as_select()).load(c)?,
    };
    let ids: Vec<i64> = taken.iter().map(|s| s.id).collect();
    diesel::update(subscribers::table.filter(subscribers::id.eq_any(&ids)))
        .set(subscribers::unpushed.eq(false))
        .execute(conn)?;
    // Unsubscribed people keep no mark: they are never pushed.
    Ok(taken)
}

/// The address of subscriber `id`, if they are there.
pub fn email_of(conn: &mut DbConnection, id: i64) -> Result<Option<String>, StoreError> {
    Ok(subscribers::table
        .filter(subscribers::id.eq(id))
        .select(subscribers::email)
        .first(conn)
        .optional()?)
}
