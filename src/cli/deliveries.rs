//! `referral-bridge deliveries ...`: outgoing jobs listed, shown and queued again.

use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand, ValueEnum};

use crate::db::admin::{self as store, CancelResult, DeliveryFilter, RetryResult};
use crate::db::{now_ms, Db};
use crate::peers::Peers;

#[derive(Debug, Subcommand)]
pub enum Deliveries {
    /// List outgoing jobs, newest first.
    List {
        /// Only jobs in this state (`open`: waiting, pending or running).
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        /// Only jobs to this destination (`sparkloop`, `loyaltysurf`, `referralloop`, `esp`).
        #[arg(long)]
        destination: Option<String>,
        /// Only jobs of the subscriber with this address.
        #[arg(long)]
        email: Option<String>,
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
    /// Queue a `subscribe` for the platform for everyone `import --no-push` recorded without
    /// sending (subscribed ones; unsubscribed people are never pushed). Safe to run again: each
    /// person is queued once.
    PushUnpushed,
    /// Give up on a waiting or pending job (it becomes dead, and can be retried); the next job
    /// of the subscriber's line goes ahead.
    Cancel {
        /// The job's id, as `deliveries list` shows it.
        id: i64,
    },
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false, id = "which")]
pub struct RetryArgs {
    /// The job's id, as `deliveries list` shows it.
    #[arg(group = "which")]
    id: Option<i64>,
    /// Queue every dead job again, oldest first in each subscriber's line.
    #[arg(long, group = "which")]
    dead: bool,
    /// Retry the job even though earlier jobs of its subscriber to the same destination are
    /// dead (it then goes before them); without it such a retry is refused (exit 2).
    #[arg(long, requires = "id")]
    force: bool,
}

/// A job's state, as `--status` takes it.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StatusArg {
    /// Behind another job of the same subscriber and destination.
    Waiting,
    /// Due, or waiting for its next try.
    Pending,
    /// Being sent.
    Running,
    /// Waiting, pending or running.
    Open,
    /// Sent.
    Done,
    /// Not sent: a field write with nothing new.
    Skipped,
    /// Given up on (or cancelled).
    Dead,
}

impl StatusArg {
    fn as_filter(self) -> &'static str {
        match self {
            StatusArg::Waiting => "waiting",
            StatusArg::Pending => "pending",
            StatusArg::Running => "running",
            StatusArg::Open => "open",
            StatusArg::Done => "done",
            StatusArg::Skipped => "skipped",
            StatusArg::Dead => "dead",
        }
    }
}

/// One line per destination with open jobs: how many, and how long they take at its limit.
fn backlog(db: &Db, peers: &Peers) -> anyhow::Result<()> {
    let depths = db.read(store::depth_by_destination)?;
    for (destination, open) in depths.iter().filter(|(_, open)| *open > 0) {
        let estimate = match peers.pace_of(destination) {
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

/// Runs a `deliveries` command.
pub fn run(db: &Db, peers: &Peers, action: Deliveries) -> anyhow::Result<ExitCode> {
    match action {
        Deliveries::List {
            status,
            destination,
            email,
            limit,
        } => {
            backlog(db, peers)?;
            let email = email
                .map(|e| referral_bridge_adapters::Email::parse(&e))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--email: {e}"))?;
            let filter = DeliveryFilter {
                status: status.map(|s| s.as_filter().to_string()),
                destination,
                email: email.map(|e| e.as_str().to_string()),
                ..DeliveryFilter::default()
            };
            let rows = db.read(|conn| store::list_deliveries(conn, &filter, limit.max(1)))?;
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
                Ok(match store::get(conn, id)? {
                    Some(job) => Some((job, store::attempts_of(conn, id)?)),
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
            if job.destination != crate::fields::DESTINATION {
                println!("body:       {}", job.payload);
            } else if job.payload.is_empty() {
                println!("body:       the subscriber's referral fields, as they are when sent");
            } else {
                println!("body sent:  {}", job.payload);
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
            let count =
                db.write(|conn| store::retry_dead_matching(conn, None, None, None, now_ms()))?;
            println!(
                "{count} dead jobs queued again; a running `referral-bridge serve` sends them now"
            );
            Ok(ExitCode::SUCCESS)
        }
        Deliveries::PushUnpushed => {
            let forwarding = peers.forwarding();
            let (mut taken, mut queued) = (0, 0);
            loop {
                let (batch, jobs) = db
                    .write(|conn| crate::import::push_unpushed(conn, forwarding, 1000, now_ms()))?;
                if batch == 0 {
                    break;
                }
                taken += batch;
                queued += jobs;
                eprint!("\r{taken} subscribers queued so far");
            }
            if taken > 0 {
                eprintln!();
            }
            println!(
                "{queued} subscribe jobs queued for {} ({taken} subscribers recorded with \
                 --no-push); a running `referral-bridge serve` sends them now",
                forwarding.destination
            );
            Ok(ExitCode::SUCCESS)
        }
        Deliveries::Cancel { id } => {
            match db.write(|conn| store::cancel(conn, id, now_ms(), "cancelled by the operator"))? {
                CancelResult::Cancelled => {
                    println!("job {id} cancelled; `deliveries retry {id}` queues it again");
                    Ok(ExitCode::SUCCESS)
                }
                CancelResult::NotFound => anyhow::bail!("there is no job {id}"),
                CancelResult::NotOpen(status) => anyhow::bail!(
                    "job {id} is {status}: only waiting or pending jobs can be cancelled"
                ),
            }
        }
        Deliveries::Retry(RetryArgs {
            id: Some(id),
            force,
            ..
        }) => match db.write(|conn| store::retry(conn, id, now_ms(), force))? {
            RetryResult::EarlierDead(earlier) => {
                let ids: Vec<String> = earlier.iter().map(i64::to_string).collect();
                eprintln!(
                    "job {id} has earlier dead jobs to the same destination for the same \
                         subscriber: {}; retry those first (`deliveries retry --dead` retries \
                         every dead job in order), or `--force` this one, which sends it before \
                         them",
                    ids.join(", ")
                );
                Ok(ExitCode::from(2))
            }
            RetryResult::Queued => {
                println!("job {id} queued again; a running `referral-bridge serve` sends it now");
                Ok(ExitCode::SUCCESS)
            }
            RetryResult::NotFound => anyhow::bail!("there is no job {id}"),
            RetryResult::AlreadyOpen(status) => {
                anyhow::bail!("job {id} is {status} already: it will be sent without a retry")
            }
        },
        Deliveries::Retry(RetryArgs {
            id: None,
            dead: false,
            ..
        }) => {
            unreachable!("clap requires an id or --dead")
        }
    }
}

fn time(ms: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
        .to_string()
}
