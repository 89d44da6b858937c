//! `referral-bridge esp provision-fields`: the configured fields, created in the ESP where they
//! are missing; and the same comparison, without creating anything, for `check`.

use referral_bridge_adapters::outbound::{self, OutboundRequest};
use referral_bridge_adapters::EspAdapter;

use crate::config::Settings;
use crate::fields::Field;
use crate::send::{http_request, SendError};

/// What became of one configured field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldState {
    /// The ESP has it.
    Exists,
    /// It was missing and has been created.
    Created,
    /// It is missing (and was not to be created).
    Missing,
    /// Creating it failed: the ESP's reason.
    Failed(String),
}

/// Why the ESP's fields could not be compared.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The request could not be made or no answer came.
    #[error("the ESP cannot be reached: {0}")]
    Unreachable(#[from] SendError),
    /// The ESP refused to list its fields.
    #[error("listing the ESP's fields: HTTP {status}: {reason}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The ESP's error text.
        reason: String,
    },
    /// The list of fields could not be read.
    #[error("reading the ESP's fields: {0}")]
    Unreadable(String),
}

/// What the comparison found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    /// Each configured field's name in the ESP, with its state.
    pub fields: Vec<(String, FieldState)>,
    /// Fields the ESP requires on every contact that the bridge does not write: a write may
    /// fail while one is empty.
    pub required_elsewhere: Vec<String>,
}

/// Compares the configured fields with the ESP's, creating the missing ones when `create`.
/// `Ok(None)` for an ESP without a field schema; `Err` when the ESP's fields cannot be listed.
pub async fn provision(
    settings: &Settings,
    esp: &dyn EspAdapter,
    client: &reqwest::Client,
    create: bool,
) -> Result<Option<Provisioned>, ProvisionError> {
    let Some(list) = esp.list_fields() else {
        return Ok(None);
    };
    let (status, body) = send(client, list).await?;
    let answer = outbound::Answer {
        status,
        retry_after: None,
        body: &body,
    };
    if !(200..300).contains(&status) {
        return Err(ProvisionError::Refused {
            status,
            reason: outbound::error_text(&body),
        });
    }
    let existing = esp
        .read_fields(&answer)
        .map_err(ProvisionError::Unreadable)?;
    let ours: Vec<String> = settings
        .esp
        .fields
        .0
        .iter()
        .map(|(_, name)| esp.field_key(name))
        .collect();
    // EMAIL is the address itself, which every write carries.
    let required_elsewhere = esp
        .required_fields(&answer)
        .into_iter()
        .filter(|key| !key.eq_ignore_ascii_case("EMAIL") && !ours.contains(key))
        .collect();
    let mut report = Vec::new();
    for (field, name) in &settings.esp.fields.0 {
        let key = esp.field_key(name);
        let state = if existing.iter().any(|e| e.eq_ignore_ascii_case(&key)) {
            FieldState::Exists
        } else if !create {
            FieldState::Missing
        } else {
            let numeric = matches!(field, Field::ReferralCount | Field::NextReward);
            match esp.create_field(name, numeric) {
                None => FieldState::Missing,
                Some(request) => match send(client, request).await {
                    Ok((status, _)) if (200..300).contains(&status) => FieldState::Created,
                    Ok((status, body)) => FieldState::Failed(format!(
                        "HTTP {status}: {}",
                        outbound::error_text(&body)
                    )),
                    Err(e) => FieldState::Failed(ProvisionError::from(e).to_string()),
                },
            }
        };
        report.push((key, state));
    }
    Ok(Some(Provisioned {
        fields: report,
        required_elsewhere,
    }))
}

/// Sends an adapter's request; the status and body, or the network error.
async fn send(
    client: &reqwest::Client,
    request: OutboundRequest,
) -> Result<(u16, String), SendError> {
    let response = http_request(client, request)?.send().await?;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    Ok((status, body))
}
