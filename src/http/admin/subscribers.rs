//! `/admin/api/subscribers/{email}`: a subscriber's fields as the ESP gets them, and their
//! timeline.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{rfc3339, AdminAuth, AdminError};
use crate::db::admin::{self as store};
use crate::db::referral;
use crate::state::AppState;

/// One thing that happened to a subscriber.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineItem {
    /// When (RFC 3339).
    pub at: String,
    /// `inbound` (a webhook about them), `job` (a delivery queued) or `attempt` (a call made).
    pub kind: String,
    /// The webhook's or the delivery's id.
    pub id: i64,
    /// What happened.
    pub summary: String,
}

/// A subscriber, their referral fields as the ESP gets them, and their timeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriberView {
    /// Their address.
    pub email: String,
    /// `subscribed` or `unsubscribed`.
    pub status: String,
    /// The ESP's id, as it sent it.
    #[schema(value_type = Object)]
    pub esp_id: Option<Value>,
    /// First name.
    pub first_name: Option<String>,
    /// Full name.
    pub name: Option<String>,
    /// First heard of (RFC 3339).
    pub created_at: String,
    /// Last changed (RFC 3339).
    pub updated_at: String,
    /// Each configured ESP field and its current value.
    #[schema(value_type = Object)]
    pub fields: BTreeMap<String, Value>,
    /// Webhooks, deliveries and attempts, oldest first (the latest 200 of each).
    pub timeline: Vec<TimelineItem>,
}

/// Reads a subscriber's view.
pub async fn subscriber_view(
    state: &AppState,
    email: &str,
) -> Result<Option<SubscriberView>, AdminError> {
    let email = email.trim().to_lowercase();
    let found = state
        .db
        .read_async(move |conn| {
            let Some(subscriber) = store::subscriber_by_email(conn, &email)? else {
                return Ok(None);
            };
            let fields = referral::referral_state(conn, subscriber.id)?;
            let timeline = store::timeline(conn, subscriber.id, 200)?;
            Ok(Some((subscriber, fields, timeline)))
        })
        .await?;
    let Some((subscriber, referral, timeline)) = found else {
        return Ok(None);
    };
    let fields = referral
        .map(|state_now| crate::fields::values(&state.settings.esp.fields, &state_now))
        .unwrap_or_default()
        .into_iter()
        .collect();
    Ok(Some(SubscriberView {
        email: subscriber.email,
        status: subscriber.status,
        esp_id: referral::esp_id_value(subscriber.esp_id.as_deref()),
        first_name: subscriber.first_name,
        name: subscriber.name,
        created_at: rfc3339(subscriber.created_at),
        updated_at: rfc3339(subscriber.updated_at),
        fields,
        timeline: timeline
            .into_iter()
            .map(|e| TimelineItem {
                at: rfc3339(e.at),
                kind: e.kind.into(),
                id: e.id,
                summary: e.summary,
            })
            .collect(),
    }))
}

/// `GET /admin/api/subscribers/{email}`.
#[utoipa::path(get, path = "/admin/api/subscribers/{email}", tag = "admin",
    params(("email" = String, Path, description = "the subscriber's address")),
    responses((status = 200, body = SubscriberView, description = "the subscriber, their fields and timeline"), (status = 401),
        (status = 404, description = "no subscriber has that address (or it is not an address), or the admin API is off")),
    security(("admin_token" = [])))]
pub async fn get_subscriber(
    _admin: AdminAuth,
    state: web::Data<AppState>,
    email: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let email = referral_bridge_adapters::Email::parse(&email)
        // Not an address: no subscriber has it.
        .map_err(|e| {
            AdminError::NotFound(format!(
                "no subscriber `{}`: {e}",
                referral_bridge_adapters::excerpt(&email)
            ))
        })?;
    match subscriber_view(&state, email.as_str()).await? {
        Some(view) => Ok(HttpResponse::Ok().json(view)),
        None => Err(AdminError::NotFound(
            "no subscriber has that address".into(),
        )),
    }
}
