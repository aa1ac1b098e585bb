//! Health, three ways: `/health` (the original, with the queue's figures), and for
//! orchestrators `/health/live` (the process answers) and `/health/ready` (send it
//! traffic: the store is reachable and ready, and the queue under its high-water mark).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use beacon_protocol::ErrorBody;
use beacon_store::Store;
use chrono::Utc;
use serde_json::json;

use crate::AppState;
use crate::error::{ApiError, with_timeout};

/// `GET /health`: 200 once the store is ready (reachable, indexes created), 503
/// otherwise. `"degraded"` rather than `"ok"` while the queue is above its high-water
/// mark (ingest answers 503), or events sit in `dead_letters` (the database refused
/// them for good, and someone should look).
#[utoipa::path(get, path = "/health", tag = "ops",
    responses(
        (status = 200, description = "`ok`, or `degraded` (queue above its mark, dead letters).", body = Object),
        (status = 503, description = "The store cannot be reached.", body = ErrorBody),
    ))]
pub async fn health(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let timeout = state.limits.store_timeout;
    let store: &Store = &state.store;
    let queue = with_timeout(timeout, store.queue_status()).await?;
    let dead = with_timeout(timeout, store.dead_letters()).await?;
    let full = queue.depth >= state.pressure.max();
    let status = if dead > 0 || full { "degraded" } else { "ok" };
    let (other_hosts, unregistered) = state.sites.refused();
    let oldest_age = queue
        .oldest_age(Utc::now())
        .map(|age| age.as_millis() as f64 / 1000.0);
    Ok(Json(json!({
        "status": status,
        "queue_depth": queue.depth,
        "queue_max_events": state.pressure.max(),
        "oldest_queued_age_seconds": oldest_age,
        "dead_letters": dead,
        "refused_events": { "other_hosts": other_hosts, "unregistered_sites": unregistered },
        "bots_dropped": state.enricher.bots_dropped(),
        "auth": if state.auth.is_open() { "open" } else { "keys" },
    })))
}

/// `GET /health/live`: 200 while the process can answer at all. It asks nothing of the
/// store, so that an orchestrator restarts a wedged process, not one whose database is
/// away.
#[utoipa::path(get, path = "/health/live", tag = "ops",
    responses((status = 200, description = "`{\"status\": \"live\"}`.", body = Object)))]
pub async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "live" }))
}

/// `GET /health/ready`: 200 when this server can take events (the store is reachable,
/// its collections and indexes exist, and the queue is under `QUEUE_MAX_EVENTS`), else
/// 503 with the reason, so that a load balancer sends traffic elsewhere meanwhile.
#[utoipa::path(get, path = "/health/ready", tag = "ops",
    responses(
        (status = 200, description = "Ready: `{\"status\": \"ready\", ...}`.", body = Object),
        (status = 503, description = "Not ready, with the reason.", body = Object),
    ))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let timeout = state.limits.store_timeout;
    let store: &Store = &state.store;
    let checked = with_timeout(timeout, async {
        store.ensure_ready().await?;
        store.queue_status().await
    })
    .await;
    let max = state.pressure.max();
    let (ready, reason, depth) = match checked {
        Err(_) => (false, Some("the store is unreachable or not ready"), None),
        Ok(queue) if queue.depth >= max => (
            false,
            Some("the queue is above QUEUE_MAX_EVENTS"),
            Some(queue.depth),
        ),
        Ok(queue) => (true, None, Some(queue.depth)),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "reason": reason,
        "queue_depth": depth,
        "queue_max_events": max,
    });
    (status, Json(body))
}
