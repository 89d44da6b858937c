//! The file around the rows: the physical line each record is on, and the rejects file.

use std::borrow::Cow;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use super::ImportError;

/// The physical line a byte of the file is on, counted by reading the file a second time as the
/// records go by (they come in order, so the file is read once in all): the csv crate's own line
/// numbers count a `\r\n` as two breaks in some places and one in others, and `\r\r\n` as two.
/// Lines end at `\n`; a file without any `\n` (old Mac files) ends them at `\r`.
pub(super) struct LineCounter {
    reader: BufReader<File>,
    at: u64,
    line: u64,
    end: u8,
}

impl LineCounter {
    pub(super) fn open(path: &Path) -> std::io::Result<LineCounter> {
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
    pub(super) fn line_at(&mut self, offset: u64) -> std::io::Result<u64> {
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

pub(super) fn read_failed(path: &Path) -> impl Fn(std::io::Error) -> ImportError + '_ {
    move |source| ImportError::Open {
        path: path.to_path_buf(),
        source,
    }
}

/// `FILE.rejects.csv`: each refused row with its line and reason, opened at the first one.
pub(super) struct Rejects {
    path: PathBuf,
    headers: csv::StringRecord,
    writer: Option<csv::Writer<File>>,
    dry_run: bool,
}

impl Rejects {
    pub(super) fn new(source: &Path, headers: &csv::StringRecord, dry_run: bool) -> Rejects {
        Rejects {
            path: rejects_path(source),
            headers: headers.clone(),
            writer: None,
            dry_run,
        }
    }

    pub(super) fn add(
        &mut self,
        line: u64,
        reason: &str,
        fields: &[Cow<'_, str>],
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

    pub(super) fn finish(self) -> Result<(), ImportError> {
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
