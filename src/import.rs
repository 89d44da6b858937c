//! `referral-bridge import FILE.csv`: existing subscribers, read as a stream (memory stays flat
//! whatever the file's size), checked row by row, and written in batched transactions, each new
//! one queued for SparkLoop unless asked not to.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use referral_bridge_adapters::{Email, EspEvent, Person};
use serde_json::Value;

use crate::db::jobs::{self, JobStatus};
use crate::db::subscribers::{self, ImportedPerson};
use crate::db::{Db, DbConnection, StoreError};

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

/// The columns the import reads, by position.
struct Columns {
    email: usize,
    id: Option<usize>,
    first_name: Option<usize>,
    name: Option<usize>,
    created_at: Option<usize>,
    count: usize,
}

impl Columns {
    fn find(headers: &csv::StringRecord, path: &Path) -> Result<Columns, ImportError> {
        let names: Vec<String> = headers
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        let find = |wanted: &str| names.iter().position(|n| n == wanted);
        let email = find("email").ok_or_else(|| ImportError::NoEmailColumn {
            path: path.to_path_buf(),
            found: headers
                .iter()
                .map(|h| format!("`{}`", h.chars().take(40).collect::<String>()))
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        Ok(Columns {
            email,
            id: find("id"),
            first_name: find("first_name"),
            name: find("name"),
            created_at: find("created_at"),
            count: names.len(),
        })
    }
}

/// One good row.
struct Row {
    person: Person,
    created_at: Option<i64>,
}

/// Reads a row, or says why it is refused.
fn parse_row(record: &csv::StringRecord, columns: &Columns) -> Result<Row, String> {
    if record.len() != columns.count {
        return Err(format!(
            "expected {} columns, found {}",
            columns.count,
            record.len()
        ));
    }
    let field = |at: Option<usize>| {
        at.and_then(|i| record.get(i))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let email = Email::parse(record.get(columns.email).unwrap_or_default())
        .map_err(|e| format!("the email is not a valid address: {}", e.reason))?;
    let created_at = field(columns.created_at)
        .map(|text| {
            parse_time(text).ok_or_else(|| {
                "created_at is neither unix seconds nor an ISO 8601 date".to_string()
            })
        })
        .transpose()?;
    // An id of digits stays a number, as the ESP would send it; anything else is text.
    // An id of digits stays a number, as the ESP would send it, of any length (serde_json keeps
    // a number's digits exactly); anything else, a leading zero included, is text.
    let digits = |id: &str| {
        !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_digit())
            && (!id.starts_with('0') || id == "0")
    };
    let esp_id = field(columns.id).map(|id| match serde_json::from_str::<Value>(id) {
        Ok(number) if digits(id) => number,
        _ => Value::from(id),
    });
    let person = Person {
        email,
        esp_id,
        first_name: field(columns.first_name).map(str::to_string),
        name: field(columns.name).map(str::to_string),
    };
    person.check().map_err(|e| e.0)?;
    Ok(Row { person, created_at })
}

/// Unix seconds, or an ISO 8601 date or date-time (`2024-01-31`, `2024-01-31T10:00:00Z`,
/// `2024-01-31 10:00:00`, with an offset or without, read as UTC).
pub fn parse_time(text: &str) -> Option<i64> {
    if let Ok(seconds) = text.parse::<i64>() {
        return Some(seconds);
    }
    referral_bridge_adapters::time::iso8601_seconds(text)
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

/// The physical line a byte of the file is on, counted by reading the file a second time as the
/// records go by (they come in order, so the file is read once in all): the csv crate's own line
/// numbers count a `\r\n` as two breaks in some places and one in others, and `\r\r\n` as two.
/// Lines end at `\n`; a file without any `\n` (old Mac files) ends them at `\r`.
struct LineCounter {
    reader: BufReader<File>,
    at: u64,
    line: u64,
    end: u8,
}

impl LineCounter {
    fn open(path: &Path) -> std::io::Result<LineCounter> {
        use std::io::Read;
        let mut start = vec![0u8; 64 * 1024];
        let read = File::open(path)?.read(&mut start)?;
        let start = &start[..read];
        let end = if !start.contains(&b'\n') && start.contains(&b'\r') {
            b'\r'
        } else {
            b'\n'
        };
        Ok(LineCounter {
            reader: BufReader::with_capacity(1 << 20, File::open(path)?),
            at: 0,
            line: 1,
            end,
        })
    }

    /// The line (from 1) of the record the csv crate places at byte `offset`; offsets must not
    /// go backwards. The csv crate places a record where it began reading it, before the line
    /// ends (and blank lines) it skipped: the record's line is that of its first other byte.
    fn line_at(&mut self, offset: u64) -> std::io::Result<u64> {
        use std::io::BufRead;
        while self.at < offset {
            let buffer = self.reader.fill_buf()?;
            if buffer.is_empty() {
                break;
            }
            let take = buffer
                .len()
                .min(usize::try_from(offset - self.at).unwrap_or(usize::MAX));
            self.line += buffer[..take].iter().filter(|b| **b == self.end).count() as u64;
            self.reader.consume(take);
            self.at += take as u64;
        }
        loop {
            let buffer = self.reader.fill_buf()?;
            let ends = buffer
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            self.line += buffer[..ends].iter().filter(|b| **b == self.end).count() as u64;
            let whole = ends == buffer.len() && !buffer.is_empty();
            self.reader.consume(ends);
            self.at += ends as u64;
            if !whole {
                return Ok(self.line);
            }
        }
    }
}

fn read_failed(path: &Path) -> impl Fn(std::io::Error) -> ImportError + '_ {
    move |source| ImportError::Open {
        path: path.to_path_buf(),
        source,
    }
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
    let mut created: HashMap<&str, Option<i64>> = HashMap::new();
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
                created.insert(email, row.created_at);
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
                let event = EspEvent::Subscribed {
                    person: person.to_person()?,
                    created_at: created[person.email.as_str()],
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

/// Queues a `subscribe` for the platform for up to `limit` subscribers recorded with
/// `--no-push` (oldest first), in one transaction; returns how many were taken (0: none left)
/// and how many jobs were queued.
pub fn push_unpushed(
    conn: &mut DbConnection,
    forwarding: crate::peers::Forwarding,
    limit: i64,
    now: i64,
) -> Result<(usize, usize), StoreError> {
    let people = subscribers::take_unpushed(conn, limit)?;
    let ids: Vec<i64> = people.iter().map(|s| s.id).collect();
    let mut open_lines = jobs::open_lines(conn, &ids, forwarding.destination)?;
    let payloads: Vec<(i64, &'static str, String)> = people
        .iter()
        .filter_map(|subscriber| {
            let person = ImportedPerson::from(subscriber).to_person()?;
            let event = EspEvent::Subscribed {
                person,
                created_at: None,
            };
            let (kind, payload) = referral_bridge_adapters::sparkloop::webhook_payload(&event)
                .filter(|(kind, _)| forwarding.forwards(kind))?;
            Some((subscriber.id, kind, payload))
        })
        .collect();
    let queued: Vec<(jobs::NewJob<'_>, JobStatus)> = payloads
        .iter()
        .map(|(subscriber_id, kind, payload)| {
            // Behind whatever their line already holds (a later event of theirs, say).
            let status = if open_lines.insert(*subscriber_id) {
                JobStatus::Pending
            } else {
                JobStatus::Waiting
            };
            let job = jobs::NewJob {
                subscriber_id: *subscriber_id,
                destination: forwarding.destination,
                kind,
                payload,
                created_at: now,
                retry_from: now,
                run_at: now,
                inbound_event_id: None,
            };
            (job, status)
        })
        .collect();
    jobs::insert_all(conn, &queued)?;
    Ok((people.len(), queued.len()))
}

/// `FILE.rejects.csv`: each refused row with its line and reason, opened at the first one.
struct Rejects {
    path: PathBuf,
    headers: csv::StringRecord,
    writer: Option<csv::Writer<File>>,
    dry_run: bool,
}

impl Rejects {
    fn new(source: &Path, headers: &csv::StringRecord, dry_run: bool) -> Rejects {
        Rejects {
            path: rejects_path(source),
            headers: headers.clone(),
            writer: None,
            dry_run,
        }
    }

    fn add(
        &mut self,
        line: u64,
        reason: &str,
        fields: &[std::borrow::Cow<'_, str>],
    ) -> Result<(), ImportError> {
        if self.dry_run {
            return Ok(());
        }
        let failed = |e: csv::Error| {
            ImportError::Failed(anyhow::anyhow!("cannot write {}: {e}", self.path.display()))
        };
        if self.writer.is_none() {
            let mut writer = csv::WriterBuilder::new()
                .flexible(true)
                .from_path(&self.path)
                .map_err(failed)?;
            let mut header = vec!["line", "reason"];
            header.extend(self.headers.iter());
            writer.write_record(&header).map_err(failed)?;
            self.writer = Some(writer);
        }
        let writer = self.writer.as_mut().expect("opened above");
        let line = line.to_string();
        let mut row = vec![line.as_str(), reason];
        row.extend(fields.iter().map(|field| field.as_ref()));
        writer.write_record(&row).map_err(failed)
    }

    fn finish(self) -> Result<(), ImportError> {
        if let Some(mut writer) = self.writer {
            writer.flush().map_err(|e| {
                ImportError::Failed(anyhow::anyhow!("cannot write {}: {e}", self.path.display()))
            })?;
        }
        Ok(())
    }
}

/// The rejects file of `source`: `FILE.rejects.csv` beside it.
pub fn rejects_path(source: &Path) -> PathBuf {
    let mut name = source.file_name().unwrap_or_default().to_os_string();
    name.push(".rejects.csv");
    source.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_accepted_form() {
        assert_eq!(parse_time("1564400550"), Some(1564400550));
        assert_eq!(parse_time("2019-07-29T11:42:30Z"), Some(1564400550));
        assert_eq!(parse_time("2019-07-29 11:42:30"), Some(1564400550));
        assert_eq!(parse_time("2019-07-29T13:42:30+02:00"), Some(1564400550));
        assert_eq!(parse_time("2019-07-29T06:42:30-05:00"), Some(1564400550));
        assert_eq!(parse_time("2019-07-29"), Some(1564358400));
        // `+0530` is five and a half hours, not 530.
        assert_eq!(parse_time("2019-07-29T17:12:30+0530"), Some(1564400550));
        assert_eq!(parse_time("2019-07-29T08:12:30-03:30"), Some(1564400550));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("2019-13-45"), None);
    }
}
