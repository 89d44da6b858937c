//! Subscriber records: one per person, keyed by normalised email; identity survives an email
//! change.

use diesel::prelude::*;
use referral_bridge_adapters::{EspEvent, Person};

use super::schema::subscribers;
use super::{DbConnection, StoreError};

/// `subscribers.status` of someone on the list.
pub const SUBSCRIBED: &str = "subscribed";
/// `subscribers.status` of someone who left.
pub const UNSUBSCRIBED: &str = "unsubscribed";

/// A subscriber as stored.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
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

#[derive(Insertable)]
#[diesel(table_name = subscribers)]
struct NewSubscriber<'a> {
    email: &'a str,
    esp_id: Option<String>,
    first_name: Option<&'a str>,
    name: Option<&'a str>,
    status: &'a str,
    created_at: i64,
    updated_at: i64,
}

/// The columns an event changes; `None` leaves a column as it is.
#[derive(AsChangeset, Default)]
#[diesel(table_name = subscribers)]
struct Changes<'a> {
    email: Option<&'a str>,
    esp_id: Option<String>,
    first_name: Option<&'a str>,
    name: Option<&'a str>,
    status: Option<&'a str>,
    updated_at: i64,
}

/// Finds the subscriber with this normalised email.
pub fn find_by_email(
    conn: &mut DbConnection,
    email: &str,
) -> Result<Option<Subscriber>, StoreError> {
    Ok(subscribers::table
        .filter(subscribers::email.eq(email))
        .select(Subscriber::as_select())
        .first(conn)
        .optional()?)
}

/// Inserts a subscriber and returns their id.
fn insert(conn: &mut DbConnection, new: NewSubscriber<'_>) -> Result<i64, StoreError> {
    Ok(diesel::insert_into(subscribers::table)
        .values(&new)
        .returning(subscribers::id)
        .get_result(conn)?)
}

/// Updates the given columns of one subscriber.
fn update(conn: &mut DbConnection, id: i64, changes: Changes<'_>) -> Result<(), StoreError> {
    diesel::update(subscribers::table.find(id))
        .set(&changes)
        .execute(conn)?;
    Ok(())
}

fn person_changes<'a>(person: &'a Person, status: Option<&'a str>, now: i64) -> Changes<'a> {
    Changes {
        email: None,
        esp_id: person.esp_id.as_ref().map(|id| id.to_string()),
        first_name: person.first_name.as_deref(),
        name: person.name.as_deref(),
        status,
        updated_at: now,
    }
}

fn insert_person(
    conn: &mut DbConnection,
    person: &Person,
    status: &str,
    now: i64,
) -> Result<i64, StoreError> {
    insert(
        conn,
        NewSubscriber {
            email: person.email.as_str(),
            esp_id: person.esp_id.as_ref().map(|id| id.to_string()),
            first_name: person.first_name.as_deref(),
            name: person.name.as_deref(),
            status,
            created_at: now,
            updated_at: now,
        },
    )
}

/// Brings the subscriber records up to date with an ESP event and returns the id of the
/// subscriber it is about, or `None` for an ignored event. Values the event does not carry are
/// left as they were.
pub fn apply_esp_event(
    conn: &mut DbConnection,
    event: &EspEvent,
    now: i64,
) -> Result<Option<i64>, StoreError> {
    let id = match event {
        EspEvent::Subscribed { person, .. } => match find_by_email(conn, person.email.as_str())? {
            Some(found) => {
                update(
                    conn,
                    found.id,
                    person_changes(person, Some(SUBSCRIBED), now),
                )?;
                found.id
            }
            None => insert_person(conn, person, SUBSCRIBED, now)?,
        },
        EspEvent::Updated {
            person,
            previous_email,
            ..
        } => {
            let current = find_by_email(conn, person.email.as_str())?;
            let previous = match (&current, previous_email) {
                (None, Some(previous)) => find_by_email(conn, previous.as_str())?,
                _ => None,
            };
            match (current, previous) {
                (Some(found), _) => {
                    update(conn, found.id, person_changes(person, None, now))?;
                    found.id
                }
                // The address changed: the same subscriber carries on under the new one.
                (None, Some(found)) => {
                    let changes = Changes {
                        email: Some(person.email.as_str()),
                        ..person_changes(person, None, now)
                    };
                    update(conn, found.id, changes)?;
                    found.id
                }
                (None, None) => insert_person(conn, person, SUBSCRIBED, now)?,
            }
        }
        EspEvent::Unsubscribed { email } => match find_by_email(conn, email.as_str())? {
            Some(found) => {
                let changes = Changes {
                    status: Some(UNSUBSCRIBED),
                    updated_at: now,
                    ..Changes::default()
                };
                update(conn, found.id, changes)?;
                found.id
            }
            None => {
                let person = Person {
                    email: email.clone(),
                    esp_id: None,
                    first_name: None,
                    name: None,
                };
                insert_person(conn, &person, UNSUBSCRIBED, now)?
            }
        },
        EspEvent::Ignored { .. } => return Ok(None),
    };
    Ok(Some(id))
}
