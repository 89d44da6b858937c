//! The command line: `serve` (the default), `migrate`, `import`, `deliveries`, `esp`,
//! `sparkloop`, `check`.

use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{Platform, Settings, Upstream};
use crate::db::jobs::{self, ListFilter, RetryResult};
use crate::db::{now_ms, Db};
use crate::startup::{open_database, Application};

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
    /// Import existing subscribers from a CSV file and queue the new ones for SparkLoop.
    ///
    /// The header row names the columns, matched case-insensitively: `email` (required), `id`
    /// (the ESP's id), `first_name`, `name`, `created_at` (unix seconds or ISO 8601); others are
    /// ignored. A bad row is reported with its line and reason, written to FILE.rejects.csv, and
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
enum EspCommand {
    /// Create the configured referral fields in the ESP where they are missing (Mailchimp
    /// merge fields, Kit custom fields, MailerLite fields, Brevo attributes); reports what it
    /// created and what was already there.
    ProvisionFields,
}

#[derive(Debug, Subcommand)]
enum SparkLoopCommand {
    /// Manage the campaign's webhooks (SPARKLOOP_CAMPAIGN_ID) through SparkLoop's API
    /// (SPARKLOOP_API_URL, with SPARKLOOP_API_KEY as X-Api-Key).
    Webhooks {
        #[command(subcommand)]
        action: WebhooksCommand,
    },
}

#[derive(Debug, Subcommand)]
enum WebhooksCommand {
    /// List the campaign's webhooks: id, URL and the events each sends.
    List,
    /// Create a webhook.
    Create {
        /// Where SparkLoop posts: the bridge's public https address of /webhooks/sparkloop.
        #[arg(long)]
        url: String,
        /// The events it sends, comma-separated: new_referral, reward_unlocked.
        #[arg(long, default_value = "new_referral,reward_unlocked")]
        events: String,
    },
    /// Change a webhook's URL or events.
    Update {
        /// The webhook's id, as `list` shows it (webhook_...).
        uuid: String,
        /// A new URL (https).
        #[arg(long)]
        url: Option<String>,
        /// The events it sends from now on, comma-separated: new_referral, reward_unlocked.
        #[arg(long, default_value = "new_referral,reward_unlocked")]
        events: String,
    },
    /// Delete a webhook.
    Delete {
        /// The webhook's id, as `list` shows it (webhook_...).
        uuid: String,
    },
    /// Register URL once: a webhook already posting to URL is given the events (if it has
    /// others) instead of a second one being created. Safe to run at every deploy.
    Ensure {
        /// The bridge's public https address of /webhooks/sparkloop.
        #[arg(long)]
        url: String,
        /// The events it must send, comma-separated: new_referral, reward_unlocked.
        #[arg(long, default_value = "new_referral,reward_unlocked")]
        events: String,
    },
}

#[derive(Debug, Subcommand)]
enum Deliveries {
    /// List outgoing jobs, newest first.
    List {
        /// Only jobs in this state (pending includes jobs being sent).
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        /// How many jobs to show at most.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Show one job: its request body and every attempt with the start of each answer.
    Show {
        /// The job's id, as `deliveries list` shows it.
        id: i64,
    },
    /// Queue a dead (or done) job again, due now with a fresh retry horizon.
    Retry(RetryArgs),
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct RetryArgs {
    /// The job's id, as `deliveries list` shows it.
    id: Option<i64>,
    /// Queue every dead job again.
    #[arg(long)]
    dead: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StatusArg {
    Pending,
    Dead,
    Done,
}

/// Runs the command line's command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = Settings::load()?;
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
            tokio::task::spawn_blocking(move || deliveries(&db, &settings, action))
                .await
                .context("the database task panicked")?
        }
        Command::Check => check(&settings).await,
        Command::Sparkloop {
            action: SparkLoopCommand::Webhooks { action },
        } => webhooks(&settings, action).await,
        Command::Esp {
            action: EspCommand::ProvisionFields,
        } => provision_fields(&settings).await,
        Command::Import {
            file,
            dry_run,
            no_push,
        } => {
            let db = open_database(&settings).await?;
            let options = crate::import::Options {
                dry_run,
                push: !no_push,
                forwarding: settings.forwarding(),
            };
            tokio::task::spawn_blocking(move || import(&db, &settings, &file, options))
                .await
                .context("the import task panicked")?
        }
    }
}

/// `esp provision-fields`: one line per field, non-zero when one could not be created.
/// `sparkloop webhooks ...`: one call (two for `ensure`), its outcome printed.
async fn webhooks(settings: &Settings, action: WebhooksCommand) -> anyhow::Result<ExitCode> {
    use crate::registration::{parse_events, Ensured, WebhookApi};
    let api = WebhookApi::new(settings)?;
    match action {
        WebhooksCommand::List => {
            let webhooks = api.list().await?;
            if webhooks.is_empty() {
                println!("the campaign has no webhooks");
            }
            for webhook in webhooks {
                println!("{webhook}");
            }
        }
        WebhooksCommand::Create { url, events } => {
            let webhook = api.create(&url, &parse_events(&events)?).await?;
            println!("created {webhook}");
        }
        WebhooksCommand::Update { uuid, url, events } => {
            let webhook = api
                .update(&uuid, url.as_deref(), &parse_events(&events)?)
                .await?;
            println!("updated {webhook}");
        }
        WebhooksCommand::Delete { uuid } => println!("{}", api.delete(&uuid).await?),
        WebhooksCommand::Ensure { url, events } => {
            match api.ensure(&url, &parse_events(&events)?).await? {
                Ensured::Unchanged(webhook) => println!("already registered: {webhook}"),
                Ensured::Updated(webhook) => println!("updated the events of {webhook}"),
                Ensured::Created(webhook) => println!("created {webhook}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn provision_fields(settings: &Settings) -> anyhow::Result<ExitCode> {
    let esp =
        referral_bridge_adapters::esp_adapter(&settings.esp.adapter, settings.esp.adapter_config())
            .context("ESP_ADAPTER names no known adapter")?;
    if let Some(problem) = esp.outbound_problem() {
        anyhow::bail!("{problem}");
    }
    let client = reqwest::Client::builder()
        .timeout(settings.worker.request_timeout)
        .build()?;
    let report = crate::provision::provision(settings, esp.as_ref(), &client, true)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let Some(report) = report else {
        println!(
            "the {} ESP has no field definitions: nothing to create (README: \"ESP adapters\")",
            settings.esp.adapter
        );
        return Ok(ExitCode::SUCCESS);
    };
    for key in &report.required_elsewhere {
        println!(
            "warning: the ESP requires `{key}` on every contact; the bridge does not write it, \
             so writes to contacts without it may fail"
        );
    }
    let mut failed = 0;
    for (key, state) in report.fields {
        use crate::provision::FieldState;
        let state = match state {
            FieldState::Exists => "already there".to_string(),
            FieldState::Created => "created".to_string(),
            FieldState::Missing => "missing: this ESP cannot create it".to_string(),
            FieldState::Failed(reason) => {
                failed += 1;
                format!("FAILED: {reason}")
            }
        };
        println!("{key:<20} {state}");
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

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

fn import(
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

/// Reaches a platform's API with a GET of `url` (reads one record, writes nothing) and says
/// whether its key, `{prefix}_API_KEY`, is accepted.
async fn check_platform_api(
    client: &reqwest::Client,
    name: &str,
    prefix: &str,
    url: &str,
    key: &Option<crate::config::Secret>,
) -> (bool, String) {
    let Some(key) = key else {
        return (
            false,
            format!("{prefix}_API_KEY is not set: ESP events wait in the queue"),
        );
    };
    match client.get(url).bearer_auth(key.expose()).send().await {
        Ok(r) if r.status().is_success() => (
            true,
            format!("{name} API reachable, {prefix}_API_KEY accepted"),
        ),
        Ok(r) if matches!(r.status().as_u16(), 401 | 403) => (
            false,
            format!(
                "{prefix}_API_KEY was refused (HTTP {})",
                r.status().as_u16()
            ),
        ),
        Ok(r) => (
            false,
            format!("{name} API answered HTTP {}", r.status().as_u16()),
        ),
        Err(e) => (
            false,
            format!("{prefix}_API_URL cannot be reached: {}", e.without_url()),
        ),
    }
}

/// One line per destination with open jobs: how many, and how long they take at its limit.
fn backlog(db: &Db, settings: &Settings) -> anyhow::Result<()> {
    let depths = db.read(jobs::depth_by_destination)?;
    for (destination, open) in depths.iter().filter(|(_, open)| *open > 0) {
        let estimate = match settings.pace_of(destination) {
            Some(limit) => format!(
                "about {} at {}/{}",
                humantime::format_duration(limit.time_for(*open as u64)),
                limit.requests,
                humantime::format_duration(limit.per)
            ),
            None => "not rate-limited".into(),
        };
        println!("backlog to {destination}: {open} open jobs, {estimate}");
    }
    Ok(())
}

fn deliveries(db: &Db, settings: &Settings, action: Deliveries) -> anyhow::Result<ExitCode> {
    match action {
        Deliveries::List { status, limit } => {
            backlog(db, settings)?;
            let filter = match status {
                None => ListFilter::All,
                Some(StatusArg::Pending) => ListFilter::Open,
                Some(StatusArg::Dead) => ListFilter::Dead,
                Some(StatusArg::Done) => ListFilter::Done,
            };
            let rows = db.read(|conn| jobs::list(conn, filter, limit.max(1)))?;
            if rows.is_empty() {
                println!("no jobs");
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:>8}  {:<8}  {:<10}  {:<12}  {:>8}  {:<20}  {:<20}  {:<30}  LAST ERROR",
                "ID", "STATUS", "TO", "KIND", "ATTEMPTS", "CREATED", "NEXT/FINISHED", "SUBSCRIBER"
            );
            for job in rows {
                let when = job.finished_at.unwrap_or(job.run_at);
                println!(
                    "{:>8}  {:<8}  {:<10}  {:<12}  {:>8}  {:<20}  {:<20}  {:<30}  {}",
                    job.id,
                    job.status,
                    job.destination,
                    job.kind,
                    job.attempts,
                    time(job.created_at),
                    time(when),
                    job.email,
                    job.last_error.unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Deliveries::Show { id } => {
            let found = db.read(|conn| {
                Ok(match jobs::get(conn, id)? {
                    Some(job) => Some((job, jobs::attempts_of(conn, id)?)),
                    None => None,
                })
            })?;
            let Some((job, attempts)) = found else {
                anyhow::bail!("there is no job {id}");
            };
            println!(
                "job {}: {} to {}, {}",
                job.id, job.kind, job.destination, job.status
            );
            println!("subscriber: {}", job.email);
            println!("created:    {}", time(job.created_at));
            match job.finished_at {
                Some(at) => println!("finished:   {}", time(at)),
                None => println!("next run:   {}", time(job.run_at)),
            }
            if let Some(error) = &job.last_error {
                println!("last error: {error}");
            }
            if job.destination == crate::fields::DESTINATION {
                println!("body:       the subscriber's referral fields, as they are when sent");
            } else {
                println!("body:       {}", job.payload);
            }
            println!("attempts:   {}", attempts.len());
            for (n, attempt) in attempts.iter().enumerate() {
                let status = attempt
                    .status_code
                    .map_or_else(|| "no answer".to_string(), |s| format!("HTTP {s}"));
                println!(
                    "  #{} {} {} in {} ms{}",
                    n + 1,
                    time(attempt.started_at),
                    status,
                    attempt.duration_ms,
                    attempt
                        .error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                );
                if let Some(body) = attempt.response_body.as_deref().filter(|b| !b.is_empty()) {
                    println!("     answer: {body}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Deliveries::Retry(RetryArgs { dead: true, .. }) => {
            let count = db.write(|conn| jobs::retry_dead(conn, now_ms()))?;
            println!(
                "{count} dead jobs queued again; a running `referral-bridge serve` sends them now"
            );
            Ok(ExitCode::SUCCESS)
        }
        Deliveries::Retry(RetryArgs { id: Some(id), .. }) => {
            match db.write(|conn| jobs::retry(conn, id, now_ms()))? {
                RetryResult::Queued => {
                    println!(
                        "job {id} queued again; a running `referral-bridge serve` sends it now"
                    );
                    Ok(ExitCode::SUCCESS)
                }
                RetryResult::NotFound => anyhow::bail!("there is no job {id}"),
                RetryResult::AlreadyOpen(status) => {
                    anyhow::bail!("job {id} is {status} already: it will be sent without a retry")
                }
            }
        }
        Deliveries::Retry(RetryArgs {
            id: None,
            dead: false,
        }) => {
            unreachable!("clap requires an id or --dead")
        }
    }
}

fn time(ms: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
        .to_string()
}

/// Checks everything that can be checked without sending an event; prints one line per check.
async fn check(settings: &Settings) -> anyhow::Result<ExitCode> {
    let mut problems = 0;
    let mut report = |ok: bool, line: String| {
        println!("{} {line}", if ok { "ok     " } else { "PROBLEM" });
        if !ok {
            problems += 1;
        }
    };
    report(true, "configuration is valid".into());

    let url = settings.database_url.clone();
    let db = tokio::task::spawn_blocking(move || crate::db::establish(&url).map(|_| ()))
        .await
        .context("the database task panicked")?;
    match db {
        Ok(()) => report(
            true,
            format!(
                "database answers: {} {}",
                settings.database_url.backend(),
                settings.database_url.redacted()
            ),
        ),
        Err(e) => report(false, format!("DATABASE_URL: {e}")),
    }

    report(
        settings.esp.webhook_secret.is_some(),
        if settings.esp.webhook_secret.is_some() {
            format!(
                "ESP webhooks ({}) accepted with ESP_WEBHOOK_SECRET",
                settings.esp.adapter
            )
        } else {
            "ESP_WEBHOOK_SECRET is not set: ESP webhooks are refused with 401".into()
        },
    );

    report(
        settings.sparkloop.webhook_token.is_some(),
        if settings.sparkloop.webhook_token.is_some() {
            "SparkLoop callbacks accepted with SPARKLOOP_WEBHOOK_TOKEN".into()
        } else {
            "SPARKLOOP_WEBHOOK_TOKEN is not set: SparkLoop's callbacks are refused with 401".into()
        },
    );

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let esp =
        referral_bridge_adapters::esp_adapter(&settings.esp.adapter, settings.esp.adapter_config())
            .context("ESP_ADAPTER names no known adapter")?;
    if esp.outbound_problem().is_none() {
        match crate::provision::provision(settings, esp.as_ref(), &client, false).await {
            Ok(None) => {}
            Ok(Some(found)) => {
                for key in &found.required_elsewhere {
                    report(
                        false,
                        format!(
                            "the ESP requires `{key}` on every contact, which the bridge does \
                             not write: writes to contacts without it may fail"
                        ),
                    );
                }
                let missing: Vec<String> = found
                    .fields
                    .into_iter()
                    .filter(|(_, state)| *state != crate::provision::FieldState::Exists)
                    .map(|(key, _)| key)
                    .collect();
                report(
                    missing.is_empty(),
                    if missing.is_empty() {
                        "every configured field exists in the ESP".into()
                    } else {
                        format!(
                            "fields missing in the ESP: {} (referral-bridge esp provision-fields creates them)",
                            missing.join(", ")
                        )
                    },
                );
            }
            Err(e) => report(false, e),
        }
    }
    match (esp.outbound_problem(), &settings.esp.api_url) {
        (Some(problem), _) => report(false, problem),
        (None, Some(url)) => {
            // As for SparkLoop below: a GET reaches the server without writing anything.
            match client.get(url).send().await {
                Ok(response) => report(
                    true,
                    format!(
                        "ESP API reachable (answered HTTP {} to a GET)",
                        response.status().as_u16()
                    ),
                ),
                Err(e) => report(
                    false,
                    format!("ESP_API_URL cannot be reached: {}", e.without_url()),
                ),
            }
        }
        (None, None) => report(true, "ESP API: the adapter's own default".into()),
    }

    match &settings.platform {
        Platform::SparkLoop => {
            match &settings.sparkloop.upstream {
                Upstream::Webhook { url } => {
                    // The incoming webhook takes POSTs only; any HTTP answer proves it can be reached,
                    // and nothing is posted that SparkLoop would count as an event.
                    match client.get(url).send().await {
                        Ok(response) => report(
                            true,
                            format!(
                                "SparkLoop incoming webhook reachable (answered HTTP {} to a GET)",
                                response.status().as_u16()
                            ),
                        ),
                        Err(e) => report(
                            false,
                            format!(
                                "SPARKLOOP_INCOMING_WEBHOOK_URL cannot be reached: {}",
                                e.without_url()
                            ),
                        ),
                    }
                }
                Upstream::Api => match &settings.sparkloop.api_key {
                    None => report(
                        false,
                        "neither SPARKLOOP_INCOMING_WEBHOOK_URL (webhook mode) nor SPARKLOOP_API_KEY (API \
                         mode) is set: ESP events wait in the queue"
                            .into(),
                    ),
                    Some(key) => {
                        // Listing one subscriber reads nothing it should not and writes nothing.
                        let url = format!(
                            "{}/v2/subscribers?per_page=1",
                            settings.sparkloop.api_url.trim_end_matches('/')
                        );
                        match client
                            .get(url)
                            .header("X-Api-Key", key.expose())
                            .send()
                            .await
                        {
                            Ok(r) if r.status().is_success() => report(
                                true,
                                "SparkLoop API reachable, SPARKLOOP_API_KEY accepted".into(),
                            ),
                            Ok(r) if matches!(r.status().as_u16(), 401 | 403) => report(
                                false,
                                format!(
                                    "SPARKLOOP_API_KEY was refused (HTTP {})",
                                    r.status().as_u16()
                                ),
                            ),
                            Ok(r) => report(
                                false,
                                format!("SparkLoop API answered HTTP {}", r.status().as_u16()),
                            ),
                            Err(e) => report(
                                false,
                                format!("SPARKLOOP_API_URL cannot be reached: {}", e.without_url()),
                            ),
                        }
                    }
                },
            }
        }
        Platform::LoyaltySurf(api) => {
            let url = format!(
                "{}/campaign/{}",
                api.api_url.trim_end_matches('/'),
                referral_bridge_adapters::encode_component(&api.campaign_id)
            );
            let (ok, line) =
                check_platform_api(&client, "LoyaltySurf", "LOYALTYSURF", &url, &api.api_key).await;
            report(ok, line);
        }
        Platform::ReferralLoop(api) => {
            let url = format!(
                "{}/waitlists/{}/signups?limit=1",
                api.api_url.trim_end_matches('/'),
                referral_bridge_adapters::encode_component(&api.waitlist_id)
            );
            let (ok, line) =
                check_platform_api(&client, "ReferralLoop", "REFERRALLOOP", &url, &api.api_key)
                    .await;
            report(ok, line);
        }
    }

    if problems == 0 {
        println!("all checks passed");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{problems} problem(s) found");
        Ok(ExitCode::FAILURE)
    }
}
