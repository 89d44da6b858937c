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
        .map(|state_now| {
            crate::fields::values(
                &state.settings.esp.fields,
                &state_now,
                state.settings.sparkloop.reflink_template.as_deref(),
            )
        })
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

/// How a subscriber is erased.
#[derive(Debug, Default, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseRequest {
    /// Ask the platform to delete them first; the erasure here follows once it has.
    #[serde(default)]
    pub platform: bool,
}

/// What an erasure did.
#[derive(Debug, Serialize, ToSchema)]
pub struct EraseResult {
    /// `erased` (done here, now) or `queued` (the platform's deletion is queued; the erasure
    /// here follows it).
    pub status: String,
    /// The platform's deletion, when queued.
    pub delivery: Option<i64>,
}

/// `DELETE /admin/api/subscribers/{email}`: everything stored about them erased (DESIGN 3.10).
#[utoipa::path(delete, path = "/admin/api/subscribers/{email}", tag = "admin",
    params(("email" = String, Path, description = "the subscriber's address")),
    request_body(content = EraseRequest, description = "optional; `{\"platform\": true}` deletes them at the platform first"),
    responses((status = 200, body = EraseResult, description = "erased: the subscriber, their stored bodies, jobs, attempts and redemptions are gone"),
        (status = 202, body = EraseResult, description = "the platform's deletion is queued; the erasure here follows once it is done"),
        (status = 400), (status = 401),
        (status = 404, description = "no subscriber has that address (or it is not an address), or the admin API is off"),
        (status = 409, description = "the platform cannot delete them (SparkLoop's webhook mode; ReferralLoop before its webhook told their signup id): erase here only")),
    security(("admin_token" = [])))]
pub async fn erase_subscriber(
    _admin: AdminAuth,
    state: web::Data<AppState>,
    email: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    use crate::lifecycle::{forget, ForgetError, Forgotten};
    let request: EraseRequest = super::deliveries::json_object(&body)?;
    let email = referral_bridge_adapters::Email::parse(&email).map_err(|e| {
        AdminError::NotFound(format!(
            "no subscriber `{}`: {e}",
            referral_bridge_adapters::excerpt(&email)
        ))
    })?;
    let st = state.clone();
    let done = tokio::task::spawn_blocking(move || {
        forget(
            &st.db,
            st.peers.platform.as_ref(),
            &st.metrics,
            &email,
            request.platform,
        )
    })
    .await
    .expect("the erasure task panicked");
    match done {
        Ok(Forgotten::Erased(_)) => Ok(HttpResponse::Ok().json(EraseResult {
            status: "erased".into(),
            delivery: None,
        })),
        Ok(Forgotten::Queued { job_id, .. }) => {
            state.wake_workers.notify_one();
            Ok(HttpResponse::Accepted().json(EraseResult {
                status: "queued".into(),
                delivery: Some(job_id),
            }))
        }
        Err(ForgetError::NotFound) => Err(AdminError::NotFound(
            "no subscriber has that address".into(),
        )),
        Err(ForgetError::PlatformCannot(why)) => Err(AdminError::Conflict(why)),
        Err(ForgetError::Store(e)) => Err(AdminError::Unavailable(e)),
    }
}
