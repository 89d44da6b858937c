//! `referral-bridge reconcile [--fix] [--report FILE.csv]`: the campaign's subscribers at
//! SparkLoop compared with the bridge's (DESIGN 3.9), with a progress line, the counts, and a
//! CSV report written whole or not at all.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::config::Settings;
use crate::reconcile::{Difference, Kind, Observer, Reconciler};
use crate::startup::{existing_database, open_database, ExistingDatabase};

/// Shows the paging: a bar on a terminal, a line every few seconds otherwise; and writes the
/// report's rows.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_line: std::time::Instant,
    report: Option<csv::Writer<std::fs::File>>,
    /// Whether the number of pages is known ahead (SparkLoop's are; the ESP's are not).
    estimates: bool,
}

impl Progress {
    fn say(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }
}

/// `4m 10s`, whole seconds.
fn about(duration: Duration) -> String {
    humantime::format_duration(Duration::from_secs(duration.as_secs())).to_string()
}

impl Observer for Progress {
    fn page(&mut self, page: u32, total: u32, rows: u64, left: Duration) {
        let message = if self.estimates {
            format!(
                "page {page}/{total}, {rows} subscribers, about {} left",
                about(left)
            )
        } else {
            format!("page {page}, {rows} contacts")
        };
        match &self.bar {
            Some(bar) => {
                bar.set_length(u64::from(total));
                bar.set_position(u64::from(page));
                bar.set_message(message);
            }
            None if page == 1
                || page == total
                || self.last_line.elapsed() >= Duration::from_secs(5) =>
            {
                eprintln!("{message}");
                self.last_line = std::time::Instant::now();
            }
            None => {}
        }
    }

    fn paused(&mut self, delay: Duration) {
        self.say(format!(
            "SparkLoop asked to wait (429): resuming in {}",
            humantime::format_duration(delay)
        ));
    }

    fn difference(&mut self, d: &Difference) -> anyhow::Result<()> {
        if let Some(report) = &mut self.report {
            report
                .write_record([
                    d.email.as_str(),
                    d.kind.as_str(),
                    d.field.as_deref().unwrap_or(""),
                    &d.here,
                    &d.platform,
                ])
                .context("cannot write the report")?;
        }
        Ok(())
    }
}

/// Where the report is written until it is whole: renamed to its name only then.
fn partial(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Ends the progress bar and, when the run is whole, moves the report to its name; a run that
/// stopped leaves no report.
fn finish<T>(
    mut progress: Progress,
    result: anyhow::Result<T>,
    report: &Option<PathBuf>,
    fix: bool,
) -> anyhow::Result<T> {
    if let Some(bar) = &progress.bar {
        bar.finish_and_clear();
    }
    let summary = match result {
        Ok(summary) => summary,
        Err(e) => {
            if let Some(path) = report {
                let _ = std::fs::remove_file(partial(path));
            }
            let mended = if fix {
                "; the pages compared before it are mended, and running it again goes on correctly"
            } else {
                ""
            };
            return Err(e.context(format!("reconciliation stopped{mended}")));
        }
    };
    if let (Some(writer), Some(path)) = (progress.report.take(), report) {
        let file = writer
            .into_inner()
            .map_err(|e| anyhow::anyhow!("cannot write the report: {}", e.error()))?;
        file.sync_all().context("cannot write the report")?;
        std::fs::rename(partial(path), path)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(summary)
}

/// Runs the command: against SparkLoop, or with `esp` against the ESP's own fields.
pub async fn run(
    settings: &Settings,
    fix: bool,
    esp: bool,
    report: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let db = if fix {
        open_database(settings).await?
    } else {
        // Without --fix nothing is written: not even a migration.
        match existing_database(settings).await? {
            ExistingDatabase::Found { db, pending: 0 } => db,
            ExistingDatabase::Found { pending, .. } => anyhow::bail!(
                "the database lacks {pending} migration(s); `referral-bridge migrate` applies them"
            ),
            ExistingDatabase::Missing => anyhow::bail!(
                "the database {} does not exist yet: there is nothing to compare",
                settings.database_url.redacted()
            ),
        }
    };
    // Both are built (and their settings checked) before a report file is begun.
    let (reconciler, read_back) = if esp {
        let read_back = crate::reconcile::esp::EspReadBack::new(db, settings, fix)?;
        (None, Some(read_back))
    } else {
        (Some(Reconciler::new(db, settings, None, fix)?), None)
    };
    let report_file = match &report {
        Some(path) => {
            let file = std::fs::File::create(partial(path))
                .with_context(|| format!("cannot write {}", partial(path).display()))?;
            let mut writer = csv::Writer::from_writer(file);
            writer
                .write_record(["email", "kind", "field", "here", "platform"])
                .context("cannot write the report")?;
            Some(writer)
        }
        None => None,
    };
    let bar = {
        use std::io::IsTerminal;
        std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(1);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {msg}")
                    .expect("a valid template"),
            );
            bar
        })
    };
    let mut progress = Progress {
        bar,
        last_line: std::time::Instant::now(),
        report: report_file,
        estimates: !esp,
    };
    if let Some(read_back) = read_back {
        eprintln!(
            "reading the ESP's contacts back ({}) at ESP_RATE_LIMIT",
            settings.esp.adapter
        );
        let result = read_back.run(&mut progress).await;
        let summary = finish(progress, result, &report, fix)?;
        println!(
            "esp_fields_differ: {} ({} subscribers)",
            summary.differences, summary.people
        );
        println!(
            "read back: {} ESP contacts, {} subscribed here, {} differences",
            summary.contacts, summary.known, summary.differences
        );
        if fix {
            eprintln!("queued {} field writes", summary.queued);
        } else if summary.differences > 0 {
            eprintln!("nothing was changed: `reconcile --esp --fix` rewrites them");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let reconciler = reconciler.expect("built unless --esp");
    let rate = settings.sparkloop.rate_limit;
    eprintln!(
        "reading the campaign's subscribers, {} a page, at {} calls per {} \
         (SPARKLOOP_RATE_LIMIT): 100,000 subscribers take about {}",
        referral_bridge_adapters::sparkloop::subscribers::PER_PAGE,
        rate.requests,
        humantime::format_duration(rate.per),
        about(reconciler.time_for(500)),
    );
    let result = reconciler.run(&mut progress).await;
    let summary = finish(progress, result, &report, fix)?;
    for kind in Kind::ALL {
        let count = summary.count(kind);
        if kind == Kind::FieldsDiffer {
            println!(
                "{}: {count} ({} subscribers)",
                kind.as_str(),
                summary.people_with_fields_differing
            );
        } else {
            println!("{}: {count}", kind.as_str());
        }
    }
    println!(
        "reconciled: {} platform subscribers, {} here, {} differences",
        summary.platform_subscribers,
        summary.here,
        summary.differences()
    );
    if let Some(path) = &report {
        eprintln!(
            "one row per difference: {} ({} rows)",
            path.display(),
            summary.differences()
        );
    }
    if fix {
        eprintln!(
            "queued {} jobs to mend them (subscribes for SparkLoop, field writes for the ESP); \
             unsubscribed_here is reported only",
            summary.queued
        );
    } else if summary.differences() > 0 {
        eprintln!("nothing was changed: `reconcile --fix` mends them");
    }
    Ok(ExitCode::SUCCESS)
}
