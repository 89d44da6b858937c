//! `referral-bridge import FILE`: existing subscribers from a CSV file, with a progress bar.

use std::process::ExitCode;
use std::time::Duration;

use crate::config::{Settings, Upstream};
use crate::db::Db;

/// Shows an import's progress: a bar on a terminal, a line every few seconds otherwise.
struct ImportProgress {
    bar: Option<indicatif::ProgressBar>,
    started: std::time::Instant,
    last_line: std::time::Instant,
    rejects_shown: u64,
}

/// Rejected rows printed one by one before the rest go to the rejects file only.
const REJECTS_SHOWN: u64 = 50;

impl ImportProgress {
    fn new() -> Self {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {percent:>3}% {msg} (about {eta} left)",
                )
                .expect("a valid template"),
            );
            bar
        });
        let now = std::time::Instant::now();
        ImportProgress {
            bar,
            started: now,
            last_line: now,
            rejects_shown: 0,
        }
    }

    fn say(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }
}

impl crate::import::Progress for ImportProgress {
    fn advance(&mut self, bytes: u64, total: u64, summary: &crate::import::Summary) {
        let rate = summary.read as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        let message = format!("{} rows, {rate:.0} rows/s", summary.read);
        match &self.bar {
            Some(bar) => {
                bar.set_length(total.max(1));
                bar.set_position(bytes);
                bar.set_message(message);
            }
            None if self.last_line.elapsed() >= Duration::from_secs(5) || bytes >= total => {
                let percent = 100.0 * bytes as f64 / total.max(1) as f64;
                eprintln!("{message}, {percent:.0}% of the file");
                self.last_line = std::time::Instant::now();
            }
            None => {}
        }
    }

    fn rejected(&mut self, line: u64, reason: &str) {
        self.rejects_shown += 1;
        if self.rejects_shown <= REJECTS_SHOWN {
            self.say(format!("line {line}: {reason}"));
        } else if self.rejects_shown == REJECTS_SHOWN + 1 {
            self.say("more rejected rows: see the rejects file".into());
        }
    }
}

/// Imports `file`, showing progress, then says what was done and what was queued.
pub fn run(
    db: &Db,
    settings: &Settings,
    file: &std::path::Path,
    options: crate::import::Options,
) -> anyhow::Result<ExitCode> {
    let mut progress = ImportProgress::new();
    let result = crate::import::import(file, db, options, &mut progress);
    if let Some(bar) = &progress.bar {
        bar.finish_and_clear();
    }
    let summary = result?;
    let elapsed = progress.started.elapsed();
    println!(
        "{}read {}, new {}, changed {}, unchanged {}, rejected {} in {:.1} s ({:.0} rows/s)",
        if options.dry_run {
            "dry run, nothing written: "
        } else {
            ""
        },
        summary.read,
        summary.new,
        summary.changed,
        summary.unchanged,
        summary.rejected,
        elapsed.as_secs_f64(),
        summary.read as f64 / elapsed.as_secs_f64().max(0.001)
    );
    if summary.rejected > 0 && !options.dry_run {
        println!(
            "rejected rows, with their line and reason: {}",
            crate::import::rejects_path(file).display()
        );
    }
    if options.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    if !options.push {
        println!("nothing queued for SparkLoop (--no-push)");
    } else {
        match &settings.sparkloop.upstream {
            Upstream::Webhook { .. } => println!(
                "queued {} subscribe webhooks for SparkLoop, sent {} at a time once `serve` runs",
                summary.queued, settings.worker.concurrency
            ),
            Upstream::Api => {
                let limit = settings.sparkloop.rate_limit;
                println!(
                    "queued {} subscribers for SparkLoop's API; at SPARKLOOP_RATE_LIMIT ({}/{}) \
                     the push takes about {} once `serve` runs",
                    summary.queued,
                    limit.requests,
                    humantime::format_duration(limit.per),
                    humantime::format_duration(limit.time_for(summary.queued))
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
