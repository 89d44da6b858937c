//! `reconcile --esp`: the referral fields the ESP holds, read back a page of contacts at a time
//! (Mailchimp's members, Brevo's contacts, MailerLite's and Kit's subscribers, each with their
//! custom fields), compared with what the bridge would write after the adapter's own conversions
//! (its field keys: Mailchimp's 10-character tags, Kit's lower-case keys; values compared as
//! text); with `--fix` each person who differs gets their field write queued. SparkLoop's
//! "pre-launch check" (few subscribers with an empty `RH_REFLINK`), for everyone, at any time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use referral_bridge_adapters::outbound::ContactPage;
use referral_bridge_adapters::{Email, EspAdapter};
use serde_json::{Map, Value};

use super::{Difference, Kind, Observer};
use crate::config::Settings;
use crate::db::reconcile::{self, Known};
use crate::db::subscribers::SUBSCRIBED;
use crate::db::{jobs, now_ms, Db, DbConnection, StoreError};
use crate::fields::{self, FieldMap};
use crate::send::{describe, http_request, Answer};
use crate::worker::pace::SlidingWindow;

/// The most of a page of contacts that is read (1,000 contacts with their fields).
const PAGE_BYTES: usize = 64 << 20;

/// Tries of a page that fails (network, 5xx) before the run stops.
const TRIES: u32 = 4;

/// What a read-back found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EspSummary {
    /// Distinct contacts the ESP listed.
    pub contacts: u64,
    /// Of those, subscribed here.
    pub known: u64,
    /// Fields that differ (one per field and person).
    pub differences: u64,
    /// People with at least one.
    pub people: u64,
    /// Field writes queued.
    pub queued: u64,
    /// Pages read.
    pub pages: u32,
}

/// Reads the ESP's contacts back.
pub struct EspReadBack {
    db: Db,
    esp: Arc<dyn EspAdapter>,
    http: reqwest::Client,
    pace: SlidingWindow,
    fields: FieldMap,
    reflink_template: Option<String>,
    fix: bool,
    write_delay_ms: i64,
}

/// Text as the ESP and the bridge are compared: `null` and empty text are "none".
fn as_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.trim().to_string(),
        other => other.to_string(),
    }
}

impl EspReadBack {
    /// A read-back of the configured ESP (`ESP_API_URL`, `ESP_API_KEY`), at `ESP_RATE_LIMIT`.
    pub fn new(db: Db, settings: &Settings, fix: bool) -> anyhow::Result<Self> {
        let peers = crate::peers::Peers::new(settings)?;
        let esp = peers.esp.clone();
        if esp.list_contacts(None).is_none() {
            anyhow::bail!(
                "ESP_ADAPTER {} cannot list its contacts: `reconcile --esp` reads back \
                 mailchimp, brevo, mailerlite and kit",
                settings.esp.adapter
            );
        }
        if let Some(problem) = esp.outbound_problem() {
            anyhow::bail!("{problem}");
        }
        Ok(EspReadBack {
            db,
            http: crate::send::client(settings.worker.request_timeout)
                .context("cannot make an HTTP client")?,
            pace: SlidingWindow::with_limits(&peers.esp_limits),
            esp,
            fields: settings.esp.fields.clone(),
            reflink_template: settings.sparkloop.reflink_template.clone(),
            fix,
            write_delay_ms: crate::config::millis(settings.esp.write_delay),
        })
    }

    /// Reads every page, compares and (with `--fix`) queues the field writes; each page is one
    /// transaction.
    pub async fn run(&self, observer: &mut dyn Observer) -> anyhow::Result<EspSummary> {
        let mut summary = EspSummary::default();
        let mut cursor: Option<String> = None;
        // A contact listed twice (a page that shifted while paging by offset) counts once.
        let mut seen = super::SeenAddresses::default();
        loop {
            let page = self
                .fetch(cursor.as_deref(), summary.pages + 1, observer)
                .await?;
            let ContactPage { contacts, next } = page;
            let contacts: Vec<_> = contacts
                .into_iter()
                .filter(|(email, _)| seen.insert(&email.trim().to_lowercase()))
                .collect();
            summary.pages += 1;
            summary.contacts += contacts.len() as u64;
            let (fields, template) = (self.fields.clone(), self.reflink_template.clone());
            let esp = self.esp.clone();
            let (fix, delay) = (self.fix, self.write_delay_ms);
            let compare = move |conn: &mut DbConnection| {
                compare_page(
                    conn,
                    &contacts,
                    &*esp,
                    &fields,
                    template.as_deref(),
                    fix,
                    delay,
                )
            };
            let (differences, known, queued) = if self.fix {
                self.db.write_async(compare).await
            } else {
                self.db.read_async(compare).await
            }
            .with_context(|| {
                format!(
                    "cannot compare page {} of the ESP's contacts",
                    summary.pages
                )
            })?;
            summary.known += known;
            summary.queued += queued;
            summary.differences += differences.len() as u64;
            let mut people: Vec<&str> = differences.iter().map(|d| d.email.as_str()).collect();
            people.dedup();
            summary.people += people.len() as u64;
            for difference in &differences {
                observer.difference(difference)?;
            }
            // The number of pages is not known ahead: shown as one more than read.
            let total = summary.pages + u32::from(next.is_some());
            observer.page(summary.pages, total, summary.contacts, Default::default());
            match next {
                Some(next) => cursor = Some(next),
                None => return Ok(summary),
            }
        }
    }

    /// The page after `cursor`, at the ESP's pace, a 429 waited out, failures tried again.
    async fn fetch(
        &self,
        cursor: Option<&str>,
        page: u32,
        observer: &mut dyn Observer,
    ) -> anyhow::Result<ContactPage> {
        let mut failures = 0;
        loop {
            let request = self
                .esp
                .list_contacts(cursor)
                .context("the ESP cannot list its contacts")?;
            self.pace.acquire().await;
            let sent = http_request(&self.http, request)?.send().await;
            let reason = match sent {
                Ok(response) => {
                    let answer = Answer::read(response, PAGE_BYTES, |headers| {
                        self.esp.retry_after(headers, SystemTime::now())
                    })
                    .await;
                    match answer.status {
                        429 => {
                            observer.paused(answer.retry_after.unwrap_or_default());
                            self.pace.pause(answer.retry_after);
                            continue;
                        }
                        200..=299 => {
                            return self
                                .esp
                                .read_contacts(&answer.as_adapter(), cursor)
                                .map_err(|e| {
                                    anyhow::anyhow!("page {page} of the ESP's contacts: {e}")
                                })
                        }
                        408 | 500..=599 => format!("HTTP {}", answer.status),
                        status => anyhow::bail!(
                            "the ESP answered HTTP {status} to page {page} of its contacts: {}",
                            referral_bridge_adapters::outbound::error_text(&answer.body).trim()
                        ),
                    }
                }
                Err(e) => describe(&e),
            };
            failures += 1;
            if failures >= TRIES {
                anyhow::bail!("page {page} of the ESP's contacts could not be read after {TRIES} tries: {reason}");
            }
            log::warn!("page {page} of the ESP's contacts: {reason}; trying again");
            tokio::time::sleep(std::time::Duration::from_millis(500) * 2u32.pow(failures)).await;
        }
    }
}

/// Compares one page of contacts with what the bridge would write for them; with `fix`, queues
/// the field write of each person who differs, forgetting the hash of their last write so that
/// the same body is sent again (the ESP no longer holds it). Returns the differences, how many
/// contacts are subscribed here, and the jobs queued.
fn compare_page(
    conn: &mut DbConnection,
    contacts: &[referral_bridge_adapters::outbound::Contact],
    esp: &dyn EspAdapter,
    fields: &FieldMap,
    reflink_template: Option<&str>,
    fix: bool,
    write_delay_ms: i64,
) -> Result<(Vec<Difference>, u64, u64), StoreError> {
    let parsed: Vec<(Email, &Map<String, Value>)> = contacts
        .iter()
        .filter_map(|(email, custom)| Some((Email::parse(email).ok()?, custom)))
        .collect();
    let emails: Vec<&str> = parsed.iter().map(|(e, _)| e.as_str()).collect();
    let known: HashMap<String, Known> = reconcile::known_by_emails(conn, &emails)?
        .into_iter()
        .filter(|k| k.status == SUBSCRIBED)
        .map(|k| (k.state.email.clone(), k))
        .collect();
    let now = now_ms();
    let (mut differences, mut queued) = (Vec::new(), 0);
    for (email, custom) in &parsed {
        let Some(here) = known.get(email.as_str()) else {
            continue;
        };
        let before = differences.len();
        for (name, value) in fields::values(fields, &here.state, reflink_template) {
            // A value the bridge does not know yet is not written: nothing to compare.
            if value.is_null() {
                continue;
            }
            let key = esp.field_key(&name);
            let held = custom.get(&key).map(as_text).unwrap_or_default();
            let wanted = as_text(&value);
            if held != wanted {
                differences.push(Difference {
                    email: email.as_str().to_string(),
                    kind: Kind::EspFieldsDiffer,
                    field: Some(key),
                    here: wanted,
                    platform: held,
                });
            }
        }
        if fix && differences.len() > before {
            reconcile::forget_written(conn, here.id)?;
            queued += u64::from(jobs::queue_coalesced(
                conn,
                here.id,
                fields::DESTINATION,
                fields::KIND,
                now,
                now + write_delay_ms,
                None,
            )?);
        }
    }
    Ok((differences, known.len() as u64, queued))
}
