//! `referral-bridge forget EMAIL [--platform]`: a subscriber erased (DESIGN 3.10).

use std::process::ExitCode;

use anyhow::Context;
use referral_bridge_adapters::Email;

use crate::config::Settings;
use crate::lifecycle::{forget, ForgetError, Forgotten};
use crate::metrics::Metrics;
use crate::peers::Peers;
use crate::startup::open_database;

/// Erases `email` here, or queues the platform's deletion first (`platform`).
pub async fn run(settings: &Settings, email: &str, platform: bool) -> anyhow::Result<ExitCode> {
    let email = match Email::parse(email) {
        Ok(email) => email,
        Err(e) => {
            eprintln!("not an address: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let db = open_database(settings).await?;
    let peers = Peers::new(settings)?;
    let done = tokio::task::spawn_blocking(move || {
        forget(
            &db,
            peers.platform.as_ref(),
            &Metrics::default(),
            &email,
            platform,
        )
    })
    .await
    .context("the erasure task panicked")?;
    match done {
        Ok(Forgotten::Erased(erased)) => {
            println!(
                "subscriber {} erased: {} stored bodies, {} jobs, {} attempts, {} redemptions",
                erased.subscriber_id,
                erased.bodies,
                erased.jobs,
                erased.attempts,
                erased.redemptions
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(Forgotten::Queued {
            job_id,
            subscriber_id,
        }) => {
            println!(
                "subscriber {subscriber_id}: the platform's deletion is queued (delivery \
                 {job_id}); the erasure here follows once the platform has done it (while the \
                 bridge serves)"
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(ForgetError::NotFound) => {
            eprintln!("no subscriber has that address: nothing to erase");
            Ok(ExitCode::FAILURE)
        }
        Err(ForgetError::PlatformCannot(why)) => {
            eprintln!("{why}");
            Ok(ExitCode::from(2))
        }
        Err(ForgetError::Store(e)) => Err(e).context("the erasure failed; nothing was erased"),
    }
}
