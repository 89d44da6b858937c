//! Liveness, readiness and metrics.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::db::now_ms;
use crate::state::AppState;

/// `GET /healthz`: 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "the process runs")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when the database answers, else 503.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "the database answers"), (status = 503, description = "it does not")))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    use diesel::connection::SimpleConnection;
    match state
        .db
        .read_async(|conn| Ok(conn.batch_execute("SELECT 1")?))
        .await
    {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Err(e) => {
            log::warn!("not ready: {e}");
            HttpResponse::ServiceUnavailable()
                .insert_header(("Retry-After", "5"))
                .json(json!({"error": "the database does not answer"}))
        }
    }
}

/// `GET /metrics`: OpenMetrics text (`application/openmetrics-text`), which Prometheus reads.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "the metrics as OpenMetrics text (version 1.0.0), which Prometheus scrapes")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let now = now_ms();
    let queue = state
        .db
        .read_async(move |conn| {
            Ok((
                crate::db::admin::depth_by_destination(conn)?,
                crate::db::admin::oldest_due(conn, now)?,
                crate::db::reconcile::last_run(conn)?,
            ))
        })
        .await;
    let (depths, oldest, last_reconcile) = match queue {
        Ok(found) => found,
        Err(e) => {
            log::warn!("metrics: cannot read the queue: {e}");
            (Vec::new(), None, None)
        }
    };
    let oldest_due_seconds = oldest.map_or(0.0, |run_at| (now - run_at).max(0) as f64 / 1000.0);
    let depths: Vec<(String, i64, Option<f64>)> = depths
        .into_iter()
        .map(|(destination, open)| {
            let drain = state.peers.drain_seconds(&destination, open);
            (destination, open, drain)
        })
        .collect();
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.render(
            state.peers.platform.destination(),
            &depths,
            oldest_due_seconds,
            last_reconcile.as_ref(),
        ))
}
