//! The subscribers a batch of ESP events is about: loaded (and on Postgres locked) once,
//! brought up to date event by event in memory, then written back in a few statements.

use std::collections::HashMap;

use referral_bridge_adapters::{Email, EspEvent, Person};

use super::subscribers::{
    insert_all, lock_by_emails, update_all, NewSubscriber, Subscriber, SUBSCRIBED, UNSUBSCRIBED,
};
use super::{DbConnection, StoreError};

/// Which subscriber of a [`Working`] set an event was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slot(usize);

/// The subscribers a batch of events is about, loaded in one query, brought up to date event by
/// event in memory, then written back in a few statements ([`Working::save`]).
pub struct Working {
    slots: Vec<Entry>,
    /// Current email → slot; an email change moves the key, so later events see the new address.
    by_email: HashMap<String, usize>,
    /// How many slots were loaded: the stored subscribers, which come before the new ones.
    loaded: usize,
}

struct Entry {
    record: Subscriber,
    /// Whether the record is in the database (else it is new and its `id` is not yet known).
    stored: bool,
    changed: bool,
}

impl Working {
    /// Loads the subscribers with any of `emails` (every address the events may look up),
    /// locking them on Postgres (see [`lock_by_emails`]).
    pub fn load(conn: &mut DbConnection, emails: &[&str]) -> Result<Working, StoreError> {
        Ok(Working::stored(lock_by_emails(conn, emails)?))
    }

    /// A set of the stored subscribers `records`, loaded (and locked) by the caller.
    pub fn stored(records: Vec<Subscriber>) -> Working {
        let slots: Vec<Entry> = records
            .into_iter()
            .map(|record| Entry {
                record,
                stored: true,
                changed: false,
            })
            .collect();
        let by_email = slots
            .iter()
            .enumerate()
            .map(|(n, entry)| (entry.record.email.clone(), n))
            .collect();
        Working {
            loaded: slots.len(),
            slots,
            by_email,
        }
    }

    /// The stored id of the subscriber in `slot`, `None` while they are new.
    pub fn stored_id(&self, slot: Slot) -> Option<i64> {
        let entry = &self.slots[slot.0];
        entry.stored.then_some(entry.record.id)
    }

    fn find(&self, email: &Email) -> Option<usize> {
        self.by_email.get(email.as_str()).copied()
    }

    fn add(&mut self, person: &Person, status: &str, now: i64) -> usize {
        let record = Subscriber {
            id: 0,
            email: person.email.as_str().to_string(),
            esp_id: person.esp_id.as_ref().map(|id| id.to_string()),
            first_name: person.first_name.clone(),
            name: person.name.clone(),
            status: status.to_string(),
            created_at: now,
            updated_at: now,
        };
        self.by_email.insert(record.email.clone(), self.slots.len());
        self.slots.push(Entry {
            record,
            stored: false,
            changed: true,
        });
        self.slots.len() - 1
    }

    /// Applies what `person` carries (values it lacks stay as they were) and, if given, a status.
    fn merge(&mut self, n: usize, person: Option<&Person>, status: Option<&str>, now: i64) {
        let entry = &mut self.slots[n];
        let record = &mut entry.record;
        if let Some(person) = person {
            if let Some(esp_id) = &person.esp_id {
                record.esp_id = Some(esp_id.to_string());
            }
            if let Some(first_name) = &person.first_name {
                record.first_name = Some(first_name.clone());
            }
            if let Some(name) = &person.name {
                record.name = Some(name.clone());
            }
        }
        if let Some(status) = status {
            record.status = status.to_string();
        }
        record.updated_at = now;
        entry.changed = true;
    }

    /// Brings the records up to date with an ESP event and returns the slot of the subscriber
    /// it is about, or `None` for an ignored event, with whether the event is news for the
    /// platform. Values the event does not carry are left as they were. A profile update that
    /// changes neither the address, the status nor a name is not news: ESPs send one when the
    /// bridge writes its own fields (echo suppression).
    pub fn apply(&mut self, event: &EspEvent, now: i64) -> Option<(Slot, bool)> {
        let (n, news) = match event {
            EspEvent::Subscribed { person, .. } => match self.find(&person.email) {
                Some(n) => {
                    self.merge(n, Some(person), Some(SUBSCRIBED), now);
                    (n, true)
                }
                None => (self.add(person, SUBSCRIBED, now), true),
            },
            EspEvent::Updated {
                person,
                previous_email,
                ..
            } => {
                let current = self.find(&person.email);
                let previous = match (current, previous_email) {
                    (None, Some(previous)) => self.find(previous),
                    _ => None,
                };
                match (current, previous) {
                    (Some(n), _) => {
                        let names = |r: &Subscriber| (r.first_name.clone(), r.name.clone());
                        let before = names(&self.slots[n].record);
                        self.merge(n, Some(person), None, now);
                        (n, names(&self.slots[n].record) != before)
                    }
                    // The address changed: the same subscriber carries on under the new one.
                    (None, Some(n)) => {
                        let record = &mut self.slots[n].record;
                        self.by_email.remove(&record.email);
                        record.email = person.email.as_str().to_string();
                        self.by_email.insert(record.email.clone(), n);
                        self.merge(n, Some(person), None, now);
                        (n, true)
                    }
                    (None, None) => (self.add(person, SUBSCRIBED, now), true),
                }
            }
            EspEvent::Unsubscribed { email } | EspEvent::Deleted { email } => {
                match self.find(email) {
                    Some(n) => {
                        self.merge(n, None, Some(UNSUBSCRIBED), now);
                        (n, true)
                    }
                    None => {
                        let person = Person {
                            email: email.clone(),
                            esp_id: None,
                            first_name: None,
                            name: None,
                        };
                        (self.add(&person, UNSUBSCRIBED, now), true)
                    }
                }
            }
            EspEvent::Ignored { .. } => return None,
        };
        Some((Slot(n), news))
    }

    /// Writes the changed records back and returns every slot's id. On Postgres the stored
    /// records were locked by [`Working::load`]; the locks also keep each subscriber's job line
    /// stable until commit (see [`super::jobs::insert_all`]). Changed records go back in one
    /// statement on Postgres, in id order one by one on SQLite; new records in one statement
    /// per few hundred.
    pub fn save(mut self, conn: &mut DbConnection) -> Result<SavedIds, StoreError> {
        self.save_changed(conn)?;
        let new_ids = insert_all(conn, &self.new_records())?;
        for entry in self.slots.iter_mut().filter(|entry| !entry.stored) {
            entry.record.id = *new_ids
                .get(&entry.record.email)
                .ok_or_else(|| StoreError::Query(diesel::result::Error::NotFound))?;
            entry.stored = true;
        }
        Ok(SavedIds(
            self.slots.iter().map(|entry| entry.record.id).collect(),
        ))
    }

    /// The first half of [`Working::save`]: writes the changed stored records back, leaving the
    /// new ones ([`Working::new_records`]) to the caller.
    pub fn save_changed(&self, conn: &mut DbConnection) -> Result<(), StoreError> {
        let mut stored: Vec<&Subscriber> = self
            .slots
            .iter()
            .filter(|entry| entry.stored && entry.changed)
            .map(|entry| &entry.record)
            .collect();
        stored.sort_unstable_by_key(|record| record.id);
        update_all(conn, &stored)
    }

    /// The records not yet in the database, as they now stand.
    pub fn new_records(&self) -> Vec<NewSubscriber<'_>> {
        self.slots
            .iter()
            .filter(|entry| !entry.stored)
            .map(|entry| NewSubscriber {
                email: &entry.record.email,
                esp_id: entry.record.esp_id.as_deref(),
                first_name: entry.record.first_name.as_deref(),
                name: entry.record.name.as_deref(),
                status: &entry.record.status,
                created_at: entry.record.created_at,
                updated_at: entry.record.updated_at,
            })
            .collect()
    }

    /// The subscriber in `slot`: their id if stored, else their place in
    /// [`Working::new_records`] (new slots follow the loaded ones, in that order).
    pub fn who(&self, slot: Slot) -> Who {
        let entry = &self.slots[slot.0];
        if entry.stored {
            Who::Stored(entry.record.id)
        } else {
            Who::New(slot.0 - self.loaded)
        }
    }
}

/// A subscriber of a [`Working`] set before it is saved ([`Working::who`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// In the database, with this id.
    Stored(i64),
    /// To be inserted: this place (from 0) in [`Working::new_records`].
    New(usize),
}

impl Who {
    /// Their id, if they are stored.
    pub fn stored_id(self) -> Option<i64> {
        match self {
            Who::Stored(id) => Some(id),
            Who::New(_) => None,
        }
    }

    /// Their place in [`Working::new_records`], if they are new.
    pub fn new_place(self) -> Option<usize> {
        match self {
            Who::New(place) => Some(place),
            Who::Stored(_) => None,
        }
    }
}

/// The ids of a [`Working`] set's subscribers once saved.
pub struct SavedIds(Vec<i64>);

impl SavedIds {
    /// The id of the subscriber in `slot`.
    pub fn of(&self, slot: Slot) -> i64 {
        self.0[slot.0]
    }
}
