//! `referral-bridge prune [--dry-run]`: one retention pass now (DESIGN 3.10), as `serve` runs
//! in the background.

use std::process::ExitCode;

use anyhow::Context;

use crate::config::Settings;
use crate::db::now_ms;
use crate::lifecycle::{cutoff, prune_pass};
use crate::startup::{existing_database, open_database, ExistingDatabase};

/// Prunes what is older than the retention (or, dry, counts it) and prints the counts.
pub async fn run(settings: &Settings, dry_run: bool) -> anyhow::Result<ExitCode> {
    let db = if dry_run {
        // A dry run writes nothing, not even a migration (DESIGN 3.11).
        match existing_database(settings).await? {
            ExistingDatabase::Found { db, pending: 0 } => db,
            ExistingDatabase::Found { pending, .. } => anyhow::bail!(
                "the database lacks {pending} migration(s); `referral-bridge migrate` applies them"
            ),
            ExistingDatabase::Missing => {
                println!(
                    "the database {} does not exist yet: nothing to prune",
                    settings.database_url.redacted()
                );
                return Ok(ExitCode::SUCCESS);
            }
        }
    } else {
        open_database(settings).await?
    };
    let now = now_ms();
    let cutoff = cutoff(settings, now);
    let kept = settings.retention.max(settings.dedupe_window);
    eprintln!(
        "{} what is older than {} (BRIDGE_RETENTION{})",
        if dry_run { "counting" } else { "pruning" },
        humantime::format_duration(kept),
        if settings.dedupe_window > settings.retention {
            ", raised to DEDUPE_WINDOW"
        } else {
            ""
        }
    );
    let bar = indicatif::ProgressBar::new_spinner();
    let report = tokio::task::spawn_blocking(move || {
        let report = prune_pass(&db, cutoff, dry_run, |r| {
            bar.set_message(format!(
                "{} bodies, {} jobs, {} attempts",
                r.bodies, r.jobs, r.attempts
            ));
            bar.tick();
            true
        });
        bar.finish_and_clear();
        report
    })
    .await
    .context("the pruning task panicked")??;
    let r = report.removed;
    let verb = if dry_run { "would remove" } else { "removed" };
    println!(
        "{verb} {} stored webhook bodies, {} finished jobs, {} attempts, {} expired sessions",
        r.bodies, r.jobs, r.attempts, r.sessions
    );
    if !dry_run {
        println!(
            "{} bytes given back to the file system",
            report.reclaimed_bytes
        );
        if report.vacuumed {
            println!("tables vacuumed: the Postgres server's autovacuum is off");
        }
    }
    Ok(ExitCode::SUCCESS)
}
