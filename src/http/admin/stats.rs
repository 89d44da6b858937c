//! `/admin/api/stats`: the bridge at a glance.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::{AdminAuth, AdminError};
use crate::db::admin as store;
use crate::db::now_ms;
use crate::state::AppState;

/// Counts over one period.
#[derive(Debug, Serialize, ToSchema)]
pub struct Period {
    /// Webhooks received.
    pub received: i64,
    /// Deliveries done.
    pub delivered: i64,
    /// Deliveries that died.
    pub dead: i64,
    /// Calls made.
    pub attempts: i64,
    /// Share of calls answered 2xx (0 to 1); absent without calls.
    pub success_rate: Option<f64>,
    /// Calls per second over the period.
    pub attempts_per_second: f64,
}

/// One destination's queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct Queue {
    /// The destination.
    pub destination: String,
    /// Open (waiting, pending, running) deliveries.
    pub open: i64,
    /// How long they take at the destination's rate limit, if it is paced.
    pub drain_estimate_seconds: Option<f64>,
}

/// The bridge at a glance.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    /// The last hour.
    pub last_hour: Period,
    /// The last 24 hours.
    pub last_day: Period,
    /// Open deliveries per destination.
    pub queues: Vec<Queue>,
    /// How late the most overdue delivery is.
    pub oldest_due_seconds: f64,
}

/// Reads the stats.
pub async fn stats(state: &AppState) -> Result<Stats, AdminError> {
    let now = now_ms();
    let (hour, day, depths, oldest) = state
        .db
        .read_async(move |conn| {
            Ok((
                store::counts_since(conn, now - 3_600_000)?,
                store::counts_since(conn, now - 86_400_000)?,
                store::depth_by_destination(conn)?,
                store::oldest_due(conn, now)?,
            ))
        })
        .await?;
    let period = |c: store::Counts, seconds: f64| Period {
        received: c.received,
        delivered: c.delivered,
        dead: c.dead,
        attempts: c.attempts,
        success_rate: (c.attempts > 0).then(|| c.attempts_ok as f64 / c.attempts as f64),
        attempts_per_second: c.attempts as f64 / seconds,
    };
    let mut queues: Vec<Queue> = depths
        .into_iter()
        .map(|(destination, open)| Queue {
            drain_estimate_seconds: state.peers.drain_seconds(&destination, open),
            destination,
            open,
        })
        .collect();
    for destination in [
        state.peers.platform.destination(),
        crate::fields::DESTINATION,
    ] {
        if !queues.iter().any(|q| q.destination == destination) {
            queues.push(Queue {
                destination: destination.into(),
                open: 0,
                drain_estimate_seconds: None,
            });
        }
    }
    queues.sort_by(|a, b| a.destination.cmp(&b.destination));
    Ok(Stats {
        last_hour: period(hour, 3600.0),
        last_day: period(day, 86400.0),
        queues,
        oldest_due_seconds: oldest.map_or(0.0, |run_at| (now - run_at).max(0) as f64 / 1000.0),
    })
}

/// `GET /admin/api/stats`.
#[utoipa::path(get, path = "/admin/api/stats", tag = "admin",
    responses((status = 200, body = Stats, description = "counts of the last hour and day, and the queues"), (status = 401), (status = 404)),
    security(("admin_token" = [])))]
pub async fn get_stats(
    _admin: AdminAuth,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    Ok(HttpResponse::Ok().json(stats(&state).await?))
}
