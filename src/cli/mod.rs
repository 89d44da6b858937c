//! The command line: `serve` (the default), `migrate`, `import`, `deliveries`, `esp`,
//! `sparkloop`, `check`, `reconcile`, `prune`, `forget`, `redemptions`, each command but the
//! first two in a file of its own.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod check;
mod deliveries;
mod esp;
mod forget;
mod import;
mod prune;
mod reconcile;
mod redemptions;
mod sparkloop;

use crate::config::Settings;
use crate::peers::Peers;
use crate::startup::{
    empty_database, existing_database, open_database, Application, ExistingDatabase,
};
use deliveries::Deliveries;
use esp::EspCommand;
use sparkloop::SparkLoopCommand;

/// Integration middleware between an email service provider (ESP) and a referral platform.
///
/// Receives the ESP's signup, email-change and unsubscribe webhooks on POST /webhooks/esp,
/// stores each one durably, and forwards it to SparkLoop, retrying for up to a month; receives
/// SparkLoop's callbacks on POST /webhooks/sparkloop and writes each subscriber's referral code,
/// link, count and rewards into the ESP's custom fields.
/// Configuration comes from environment variables, a .env file and an optional TOML file named
/// by BRIDGE_CONFIG (see README.md and .env.example).
#[derive(Debug, Parser)]
#[command(name = "referral-bridge", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply pending migrations, serve HTTP and run the delivery workers (the default);
    /// stops gracefully on SIGINT or SIGTERM.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Inspect and replay outgoing jobs.
    Deliveries {
        #[command(subcommand)]
        action: Deliveries,
    },
    /// Validate the configuration and reach the database and SparkLoop; exits non-zero with
    /// the problems found.
    Check,
    /// Work with the ESP's own configuration.
    Esp {
        #[command(subcommand)]
        action: EspCommand,
    },
    /// Work with SparkLoop's own configuration.
    Sparkloop {
        #[command(subcommand)]
        action: SparkLoopCommand,
    },
    /// Delete what BRIDGE_RETENTION no longer keeps (as serve does hourly): stored webhook
    /// bodies, finished jobs and their attempts older than it (never younger than
    /// DEDUPE_WINDOW), in short batches; dead jobs and their bodies stay. Subscribers and their
    /// referral state are kept.
    Prune {
        /// Count what would go, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Erase a subscriber: their record, stored webhook bodies (and any other naming their
    /// address), jobs (open ones cancelled), attempts and redemptions. The log names them by
    /// id only.
    Forget {
        /// Their address.
        email: String,
        /// Ask the platform to delete them first (SparkLoop API mode, LoyaltySurf): the deletion
        /// is queued like any delivery, and the erasure here follows once it is done.
        #[arg(long)]
        platform: bool,
    },
    /// Compare the campaign's subscribers at SparkLoop (SPARKLOOP_API_KEY, SPARKLOOP_CAMPAIGN_ID)
    /// with the bridge's, and print the differences by kind: missing_at_platform (subscribed
    /// here, unknown there), unsubscribed_here (listed there; reported only), unknown_here
    /// (listed there, never seen here), fields_differ (RH_SUBID, RH_CODE or RH_ISREF).
    ///
    /// Pages of 200 are read at SPARKLOOP_RATE_LIMIT (120 calls a minute: 100,000 subscribers
    /// take about 4 minutes 10 seconds), a 429 waited out. Without --fix nothing is written.
    /// Safe to interrupt: each page is mended in one transaction, and a second run goes on.
    Reconcile {
        /// Mend what is found: a subscribe queued for each missing_at_platform, each
        /// unknown_here recorded, and SparkLoop's values taken for unknown_here and
        /// fields_differ, their ESP fields queued for writing.
        #[arg(long)]
        fix: bool,
        /// Compare the referral fields the ESP holds (Mailchimp, Brevo, MailerLite, Kit: their
        /// contacts listed with their fields, at ESP_RATE_LIMIT) with what the bridge would
        /// write, instead of SparkLoop's subscribers; with --fix, rewrite each person who
        /// differs.
        #[arg(long)]
        esp: bool,
        /// Also write one CSV row per difference (email,kind,field,here,platform) to this file,
        /// once the run is whole.
        #[arg(long, value_name = "FILE.csv")]
        report: Option<std::path::PathBuf>,
    },
    /// The rewards redeemed (SparkLoop's reward_redeemed), for fulfilment.
    Redemptions {
        #[command(subcommand)]
        action: RedemptionsCommand,
    },
    /// Ask the bridge serving on BRIDGE_LISTEN whether it runs (GET /healthz); exit 0 when it
    /// answers 200, else 1. For a container's HEALTHCHECK: the image needs no curl.
    Healthcheck,
    /// Import existing subscribers from a CSV file and queue the new ones for SparkLoop.
    ///
    /// The header row names the columns, matched case-insensitively: `email` (required), `id`
    /// (the ESP's id), `first_name`, `name`, `created_at` (unix seconds or ISO 8601), and the
    /// attribution SparkLoop's API takes (`referrer_code`, `ip_address`, `user_agent`,
    /// `utm_source`, `utm_campaign`, `country_code`); others are ignored. A bad row is reported with its line and reason, written to FILE.rejects.csv, and
    /// the rest are imported. Importing the same file again changes nothing and queues nothing;
    /// subscribers known to be unsubscribed are not resubscribed.
    Import {
        /// The CSV file.
        file: std::path::PathBuf,
        /// Validate and count only: write nothing (not even FILE.rejects.csv).
        #[arg(long)]
        dry_run: bool,
        /// Record the subscribers without queueing anything for SparkLoop.
        #[arg(long)]
        no_push: bool,
    },
}

#[derive(Debug, Subcommand)]
enum RedemptionsCommand {
    /// Write them as CSV on standard output: email, reward_id, reward, variant, sku, coupon,
    /// shipping_details (JSON), redeemed_at (RFC 3339), oldest first.
    Export {
        /// Only those redeemed at or after this date (`2026-11-26`, UTC) or time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
    },
}

impl Cli {
    /// Lets a command that prints (all but `serve`) end quietly when its output goes to a pipe
    /// that closed (`deliveries list | head -1`), as Unix tools do: Rust ignores `SIGPIPE`, so
    /// that `println!` would panic instead. The server keeps ignoring it: a client that hangs up
    /// must not stop it.
    pub fn end_quietly_on_closed_pipe(&self) {
        #[cfg(unix)]
        if !matches!(self.command, None | Some(Command::Serve)) {
            // SAFETY: SIG_DFL is a valid disposition for SIGPIPE, set once at start before
            // anything is written. Sockets (reqwest, libpq) write with MSG_NOSIGNAL, so only a
            // closed stdout or stderr raises it.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            }
        }
    }
}

/// `GET /healthz` of the bridge listening on `listen` (an unspecified address is reached on
/// loopback).
async fn healthcheck(listen: &str) -> anyhow::Result<ExitCode> {
    let address = listen
        .replace("0.0.0.0", "127.0.0.1")
        .replace("[::]", "[::1]");
    let client = crate::send::client(std::time::Duration::from_secs(3))?;
    match client.get(format!("http://{address}/healthz")).send().await {
        Ok(response) if response.status().is_success() => {
            println!("healthy: {address} answered {}", response.status().as_u16());
            Ok(ExitCode::SUCCESS)
        }
        Ok(response) => {
            println!(
                "unhealthy: {address} answered {}",
                response.status().as_u16()
            );
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            println!("unhealthy: {address}: {}", crate::send::describe(&e));
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Runs the command line's command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = Settings::load()?;
    crate::logging::init(settings.log_format)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build(settings).await?;
            app.run_until_stopped().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let db = open_database(&settings).await?;
            println!(
                "migrations applied; the database ({}) is up to date",
                db.describe()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Deliveries { action } => {
            let db = open_database(&settings).await?;
            let peers = Peers::new(&settings)?;
            tokio::task::spawn_blocking(move || deliveries::run(&db, &peers, action))
                .await
                .context("the database task panicked")?
        }
        Command::Check => check::run(&settings).await,
        Command::Prune { dry_run } => prune::run(&settings, dry_run).await,
        Command::Reconcile { fix, esp, report } => {
            reconcile::run(&settings, fix, esp, report).await
        }
        Command::Forget { email, platform } => forget::run(&settings, &email, platform).await,
        Command::Redemptions {
            action: RedemptionsCommand::Export { since },
        } => redemptions::export(&settings, since).await,
        Command::Healthcheck => healthcheck(&settings.listen).await,
        Command::Sparkloop {
            action: SparkLoopCommand::Webhooks { action },
        } => sparkloop::webhooks(&settings, action).await,
        Command::Esp {
            action: EspCommand::ProvisionFields,
        } => esp::provision_fields(&settings).await,
        Command::Import {
            file,
            dry_run,
            no_push,
        } => {
            let db = if dry_run {
                // A dry run creates and migrates nothing (DESIGN 3.11).
                match existing_database(&settings).await? {
                    ExistingDatabase::Found { db, pending: 0 } => db,
                    ExistingDatabase::Found { pending, .. } => anyhow::bail!(
                        "the database lacks {pending} migration(s), so the file cannot be \
                         compared with it; `referral-bridge migrate` applies them"
                    ),
                    ExistingDatabase::Missing => {
                        eprintln!(
                            "the database {} does not exist yet: every valid row counts as new",
                            settings.database_url.redacted()
                        );
                        empty_database().await?
                    }
                }
            } else {
                open_database(&settings).await?
            };
            let options = crate::import::Options {
                dry_run,
                push: !no_push,
                forwarding: Peers::new(&settings)?.forwarding(),
            };
            tokio::task::spawn_blocking(move || import::run(&db, &settings, &file, options))
                .await
                .context("the import task panicked")?
        }
    }
}
