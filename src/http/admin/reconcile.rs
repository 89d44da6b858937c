//! `/admin/api/reconcile`: the last reconciliation that mended (DESIGN 3.9), whether run by
//! `referral-bridge reconcile --fix` or by `serve` on `BRIDGE_RECONCILE_EVERY`.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::{rfc3339, AdminAuth, AdminError};
use crate::db::reconcile::Run;
use crate::state::AppState;

/// The differences a run found, by kind.
#[derive(Debug, Serialize, ToSchema)]
pub struct Differences {
    /// Subscribed here, unknown at the platform.
    pub missing_at_platform: i64,
    /// Unsubscribed here, listed at the platform (reported only).
    pub unsubscribed_here: i64,
    /// Listed at the platform, never seen here.
    pub unknown_here: i64,
    /// `RH_SUBID`, `RH_CODE` or `RH_ISREF` differing (one per field and person).
    pub fields_differ: i64,
}

/// One finished run.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReconcileRun {
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it finished (RFC 3339).
    pub finished_at: String,
    /// Distinct subscribers the platform listed.
    pub platform_subscribers: i64,
    /// Subscribers here, unsubscribed ones included.
    pub here: i64,
    /// All differences.
    pub total_differences: i64,
    /// By kind.
    pub differences: Differences,
    /// Jobs queued to mend them.
    pub queued: i64,
}

/// The last run, if any.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReconcileStatus {
    /// How often `serve` runs it (`24h`); absent when `BRIDGE_RECONCILE_EVERY` is unset.
    pub every: Option<String>,
    /// The last run that mended; absent before the first.
    pub last_run: Option<ReconcileRun>,
}

impl From<Run> for ReconcileRun {
    fn from(run: Run) -> Self {
        ReconcileRun {
            started_at: rfc3339(run.started_at),
            finished_at: rfc3339(run.finished_at),
            platform_subscribers: run.platform_subscribers,
            here: run.here,
            total_differences: run.missing_at_platform
                + run.unsubscribed_here
                + run.unknown_here
                + run.fields_differ,
            differences: Differences {
                missing_at_platform: run.missing_at_platform,
                unsubscribed_here: run.unsubscribed_here,
                unknown_here: run.unknown_here,
                fields_differ: run.fields_differ,
            },
            queued: run.queued,
        }
    }
}

/// Reads the status.
pub async fn status(state: &AppState) -> Result<ReconcileStatus, AdminError> {
    let last = state.db.read_async(crate::db::reconcile::last_run).await?;
    Ok(ReconcileStatus {
        every: state
            .settings
            .reconcile_every
            .map(|every| humantime::format_duration(every).to_string()),
        last_run: last.map(ReconcileRun::from),
    })
}

/// `GET /admin/api/reconcile`.
#[utoipa::path(get, path = "/admin/api/reconcile", tag = "admin",
    responses((status = 200, body = ReconcileStatus, description = "the last reconciliation that mended: its time and counts"), (status = 401), (status = 404)),
    security(("admin_token" = [])))]
pub async fn get_reconcile(
    _admin: AdminAuth,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    Ok(HttpResponse::Ok().json(status(&state).await?))
}
