//! `referral-bridge esp ...`: the ESP's own configuration.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use crate::config::Settings;

#[derive(Debug, Subcommand)]
pub enum EspCommand {
    /// Create the configured referral fields in the ESP where they are missing (Mailchimp
    /// merge fields, Kit custom fields, MailerLite fields, Brevo attributes); reports what it
    /// created and what was already there.
    ProvisionFields,
}

/// `esp provision-fields`: one line per field, non-zero when one could not be created.
pub async fn provision_fields(settings: &Settings) -> anyhow::Result<ExitCode> {
    let esp =
        referral_bridge_adapters::esp_adapter(&settings.esp.adapter, settings.esp.adapter_config())
            .context("ESP_ADAPTER names no known adapter")?;
    if let Some(problem) = esp.outbound_problem() {
        anyhow::bail!("{problem}");
    }
    let client = crate::send::client(settings.worker.request_timeout)?;
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
