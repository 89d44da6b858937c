//! `referral-bridge import FILE.csv`: existing subscribers, read as a stream (memory stays flat
//! whatever the file's size), checked row by row, and written in batched transactions, each new
//! one queued for SparkLoop unless asked not to.

mod file;
mod push;
mod rows;

pub use file::rejects_path;
pub use push::{push_unpushed, queue_subscribes};
pub use rows::parse_time;

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use referral_bridge_adapters::EspEvent;

use crate::db::jobs::{self, JobStatus};
use crate::db::subscribers::{self, ImportedPerson};
use crate::db::{Db, DbConnection, StoreError};
use file::{read_failed, LineCounter, Rejects};
use rows::{parse_row, Columns, Row};

/// Rows written per transaction.
const BATCH_ROWS: usize = 5_000;

/// Why a file cannot be imported at all; nothing has been written.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file cannot be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not CSV text with a header row.
    #[error("{path} is not a CSV file with a header row: {reason}")]
    NotCsv {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The header row names no `email` column.
    #[error("{path} has no `email` column (its header row has: {found})")]
    NoEmailColumn {
        /// The file.
        path: PathBuf,
        /// The columns found.
        found: String,
    },
    /// Reading or writing failed part-way; the batches already committed stay.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// What the import does besides reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Validate and classify only; write nothing, not even the rejects file.
    pub dry_run: bool,
    /// Queue a `subscribe` job for the platform for each new subscriber.
    pub push: bool,
    /// The platform's queue.
    pub forwarding: crate::peers::Forwarding,
}

/// Counts of what the import found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Data rows read (the header not counted).
    pub read: u64,
    /// Subscribers the bridge did not know.
    pub new: u64,
    /// Known subscribers whose id or names changed.
    pub changed: u64,
    /// Known subscribers with nothing new (unsubscribed ones included: never resubscribed).
    pub unchanged: u64,
    /// Rows refused, each reported with its line and reason.
    pub rejected: u64,
    /// Jobs queued for SparkLoop.
    pub queued: u64,
}

/// Hears how the import goes.
pub trait Progress {
    /// `bytes` of `total` read, with the counts so far.
    fn advance(&mut self, bytes: u64, total: u64, summary: &Summary);
    /// A row was refused.
    fn rejected(&mut self, line: u64, reason: &str);
}

/// Imports `path` into `db`; a dry run only reads the database.
pub fn import(
    path: &Path,
    db: &Db,
    options: Options,
    progress: &mut dyn Progress,
) -> Result<Summary, ImportError> {
    let file = File::open(path).map_err(|source| ImportError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut lines = LineCounter::open(path).map_err(|source| ImportError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(BufReader::with_capacity(1 << 20, file));
    let headers = reader
        .headers()
        .map_err(|e| ImportError::NotCsv {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?
        .clone();
    if headers.is_empty() {
        return Err(ImportError::NotCsv {
            path: path.to_path_buf(),
            reason: "the file is empty".into(),
        });
    }
    let columns = Columns::find(&headers, path)?;
    let mut rejects = Rejects::new(path, &headers, options.dry_run);

    let mut summary = Summary::default();
    let mut batch: Vec<Row> = Vec::with_capacity(BATCH_ROWS);
    let mut raw = csv::ByteRecord::new();
    let mut last_report = Instant::now();
    loop {
        let more = match reader.read_byte_record(&mut raw) {
            Ok(more) => more,
            Err(e) => {
                // A malformed record is refused like any bad row.
                let line = match e.position() {
                    Some(p) => lines.line_at(p.byte()).map_err(read_failed(path))?,
                    None => summary.read + 2,
                };
                summary.read += 1;
                summary.rejected += 1;
                let reason = format!("unreadable row: {e}");
                progress.rejected(line, &reason);
                rejects.add(line, &reason, &[])?;
                continue;
            }
        };
        if !more {
            break;
        }
        summary.read += 1;
        let line = match raw.position() {
            Some(p) => lines.line_at(p.byte()).map_err(read_failed(path))?,
            None => summary.read + 1,
        };
        let parsed = match csv::StringRecord::from_byte_record(raw.clone()) {
            Ok(record) => parse_row(&record, &columns),
            Err(_) => Err("it is not UTF-8 text".to_string()),
        };
        match parsed {
            Ok(row) => batch.push(row),
            Err(reason) => {
                summary.rejected += 1;
                progress.rejected(line, &reason);
                // The row as it was, bytes that are not UTF-8 shown as U+FFFD.
                let fields: Vec<std::borrow::Cow<'_, str>> =
                    raw.iter().map(String::from_utf8_lossy).collect();
                rejects.add(line, &reason, &fields)?;
            }
        }
        if batch.len() == BATCH_ROWS {
            write_batch(db, &mut batch, options, &mut summary)?;
        }
        if last_report.elapsed() > Duration::from_millis(200) {
            progress.advance(reader.position().byte(), total, &summary);
            last_report = Instant::now();
        }
    }
    write_batch(db, &mut batch, options, &mut summary)?;
    rejects.finish()?;
    progress.advance(total, total, &summary);
    Ok(summary)
}

/// Classifies a batch and, unless it is a dry run, writes it in one transaction.
fn write_batch(
    db: &Db,
    batch: &mut Vec<Row>,
    options: Options,
    summary: &mut Summary,
) -> Result<(), ImportError> {
    if batch.is_empty() {
        return Ok(());
    }
    let now = crate::db::now_ms();
    let counts = if options.dry_run {
        db.read(|conn| record_batch(conn, batch, options, now))
    } else {
        db.write(|conn| record_batch(conn, batch, options, now))
    }
    .map_err(|e| anyhow::anyhow!("cannot write a batch of rows: {e}"))?;
    summary.new += counts.new;
    summary.changed += counts.changed;
    summary.unchanged += counts.unchanged;
    summary.queued += counts.queued;
    batch.clear();
    Ok(())
}

/// Records a batch: new subscribers inserted (and queued for SparkLoop when pushing), known
/// ones updated where the file brings a new id or name, unsubscribed ones left alone. With
/// `dry_run` it only classifies.
fn record_batch(
    conn: &mut DbConnection,
    rows: &[Row],
    options: Options,
    now: i64,
) -> Result<Summary, StoreError> {
    let emails: Vec<&str> = rows.iter().map(|r| r.person.email.as_str()).collect();
    // A dry run only reads; a real one locks the people it is about to update.
    let known = if options.dry_run {
        subscribers::find_by_emails(conn, &emails)?
    } else {
        subscribers::lock_by_emails(conn, &emails)?
    };
    let known: HashMap<String, subscribers::Subscriber> =
        known.into_iter().map(|s| (s.email.clone(), s)).collect();
    let mut counts = Summary::default();
    // A file may name someone twice: later rows are compared with earlier ones.
    let mut seen: HashMap<&str, ImportedPerson> = HashMap::new();
    let mut new_order: Vec<&str> = Vec::new();
    // A new person's signup time and attribution, from their first row.
    let mut created: HashMap<&str, (Option<i64>, &referral_bridge_adapters::Attribution)> =
        HashMap::new();
    let mut changed: Vec<&str> = Vec::new();
    for row in rows {
        let email = row.person.email.as_str();
        let current = match seen.get(email) {
            Some(person) => Some(person.clone()),
            None => known.get(email).map(ImportedPerson::from),
        };
        match current {
            None => {
                counts.new += 1;
                seen.insert(email, ImportedPerson::from(&row.person));
                new_order.push(email);
                created.insert(email, (row.created_at, &row.attribution));
            }
            Some(person) if person.status == subscribers::UNSUBSCRIBED => counts.unchanged += 1,
            Some(person) => {
                let merged = person.merged(&row.person);
                if merged == person {
                    counts.unchanged += 1;
                } else {
                    counts.changed += 1;
                    if known.contains_key(email) && !changed.contains(&email) {
                        changed.push(email);
                    }
                    seen.insert(email, merged);
                }
            }
        }
    }
    if options.dry_run {
        return Ok(counts);
    }
    for email in &changed {
        subscribers::update_imported(conn, known[*email].id, &seen[email], now)?;
    }
    let new: Vec<&ImportedPerson> = new_order.iter().map(|email| &seen[email]).collect();
    let ids = subscribers::insert_imported(conn, &new, now)?;
    if !options.push {
        // So that `deliveries push-unpushed` can send them later.
        let new_ids: Vec<i64> = ids.values().copied().collect();
        subscribers::mark_unpushed(conn, &new_ids)?;
    }
    if options.push {
        let payloads: Vec<(i64, &'static str, String)> = new
            .iter()
            .filter_map(|person| {
                let (created_at, attribution) = created[person.email.as_str()];
                let event = EspEvent::Subscribed {
                    attribution: attribution.clone(),
                    person: person.to_person()?,
                    created_at,
                };
                let (kind, payload) = referral_bridge_adapters::sparkloop::webhook_payload(&event)
                    .filter(|(kind, _)| options.forwarding.forwards(kind))?;
                Some((*ids.get(&person.email)?, kind, payload))
            })
            .collect();
        let queued: Vec<(jobs::NewJob<'_>, JobStatus)> = payloads
            .iter()
            .map(|(subscriber_id, kind, payload)| {
                let job = jobs::NewJob {
                    subscriber_id: *subscriber_id,
                    destination: options.forwarding.destination,
                    kind,
                    payload,
                    created_at: now,
                    retry_from: now,
                    run_at: now,
                    inbound_event_id: None,
                };
                // New people have no line yet: each job heads its own.
                (job, JobStatus::Pending)
            })
            .collect();
        jobs::insert_all(conn, &queued)?;
        counts.queued = queued.len() as u64;
    }
    Ok(counts)
}
