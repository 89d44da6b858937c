//! `referral-bridge check`: everything that can be checked without sending an event.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};

use crate::config::{Platform, Settings, Upstream};
use crate::send::describe;
use crate::startup::ExistingDatabase;

/// Reaches a platform's API with a GET of `url` (reads one record, writes nothing) and says
/// whether its key, `{prefix}_API_KEY`, is accepted.
async fn check_platform_api(
    client: &reqwest::Client,
    name: &str,
    prefix: &str,
    url: &str,
    key: &Option<SecretString>,
) -> (bool, String) {
    let Some(key) = key else {
        return (
            false,
            format!("{prefix}_API_KEY is not set: ESP events wait in the queue"),
        );
    };
    match client
        .get(url)
        .bearer_auth(key.expose_secret())
        .send()
        .await
    {
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
            format!("{prefix}_API_URL cannot be reached: {}", describe(&e)),
        ),
    }
}

/// What an answer to a `check` probe says: reachable, unless the peer refuses the credentials
/// (401, 403) or fails (5xx).
fn judged(status: u16, what: &str, credentials: &str) -> (bool, String) {
    match status {
        401 | 403 => (
            false,
            format!("{what} refused the credentials (HTTP {status}): check {credentials}"),
        ),
        500.. => (false, format!("{what} is failing (HTTP {status})")),
        _ => (true, format!("{what} reachable (answered HTTP {status})")),
    }
}

/// Checks everything that can be checked without sending an event; prints one line per check.
pub async fn run(settings: &Settings) -> anyhow::Result<ExitCode> {
    let mut problems = 0;
    let mut report = |ok: bool, line: String| {
        println!("{} {line}", if ok { "ok     " } else { "PROBLEM" });
        if !ok {
            problems += 1;
        }
    };
    report(true, "configuration is valid".into());

    // Looked at, never created nor migrated: `check` runs before the first `serve`.
    let where_ = format!(
        "{} {}",
        settings.database_url.backend(),
        settings.database_url.redacted()
    );
    match crate::startup::existing_database(settings).await {
        Ok(ExistingDatabase::Missing) => report(
            true,
            format!("database {where_} does not exist yet: `serve` or `migrate` creates it"),
        ),
        Ok(ExistingDatabase::Found { pending: 0, .. }) => {
            report(true, format!("database answers: {where_}, up to date"))
        }
        Ok(ExistingDatabase::Found { pending, .. }) => report(
            true,
            format!(
                "database answers: {where_}, {pending} migration(s) pending: `serve` or \
                 `migrate` applies them"
            ),
        ),
        Err(e) => report(false, format!("DATABASE_URL: {e:#}")),
    }

    let client = crate::send::client(Duration::from_secs(10))?;
    let esp =
        referral_bridge_adapters::esp_adapter(&settings.esp.adapter, settings.esp.adapter_config())
            .context("ESP_ADAPTER names no known adapter")?;
    // The same sentences `serve` warns with at start-up.
    let closed = crate::startup::closed_endpoints(settings, esp.poll_request(None).is_some());
    if closed.is_empty() {
        report(true, "every webhook endpoint has its secret".into());
    }
    for endpoint in closed {
        report(false, endpoint);
    }
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
            Err(e) => report(false, e.to_string()),
        }
    }
    match (esp.outbound_problem(), esp.credentials_probe()) {
        (Some(problem), _) => report(false, problem),
        (None, Some(probe)) => {
            // A read with the credentials: it changes nothing at the ESP.
            let sent = match crate::send::http_request(&client, probe) {
                Ok(request) => request.send().await.map_err(|e| describe(&e)),
                Err(e) => Err(e.to_string()),
            };
            match sent {
                Ok(response) => {
                    let (ok, line) = judged(
                        response.status().as_u16(),
                        &format!("the ESP API ({})", settings.esp.adapter),
                        "ESP_API_KEY",
                    );
                    report(ok, line);
                }
                Err(e) => report(false, format!("the ESP API cannot be reached: {e}")),
            }
        }
        (None, None) => report(true, "ESP API: nothing to probe without writing".into()),
    }

    match &settings.platform {
        Platform::SparkLoop => {
            match &settings.sparkloop.upstream {
                Upstream::Webhook { url } => {
                    // The incoming webhook takes POSTs only; any HTTP answer proves it can be reached,
                    // and nothing is posted that SparkLoop would count as an event.
                    match client.get(url).send().await {
                        Ok(response) => {
                            let (ok, line) = judged(
                                response.status().as_u16(),
                                "the SparkLoop incoming webhook",
                                "SPARKLOOP_INCOMING_WEBHOOK_URL",
                            );
                            report(ok, line);
                        }
                        Err(e) => report(
                            false,
                            format!(
                                "SPARKLOOP_INCOMING_WEBHOOK_URL cannot be reached: {}",
                                describe(&e)
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
                            .header("X-Api-Key", key.expose_secret())
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
                                format!("SPARKLOOP_API_URL cannot be reached: {}", describe(&e)),
                            ),
                        }
                    }
                },
            }
        }
        Platform::LoyaltySurf { api, .. } => {
            let url = format!(
                "{}/campaign/{}",
                api.api_url.trim_end_matches('/'),
                referral_bridge_adapters::encode_component(&api.campaign_id)
            );
            let (ok, line) =
                check_platform_api(&client, "LoyaltySurf", "LOYALTYSURF", &url, &api.api_key).await;
            report(ok, line);
        }
        Platform::ReferralLoop { api, .. } => {
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
