//! The HTTP handlers. They validate, hand events to the store, and answer; they never
//! process events themselves.

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use beacon_protocol::batch::parse_batch;
use beacon_protocol::{BatchResponse, Event, EventResult, EventStatus, Queued, Stats, StatsQuery};
use beacon_store::QueuedEvent;
use chrono::Utc;
use serde_json::json;
use std::net::SocketAddr;

use crate::AppState;
use crate::error::{ApiError, with_timeout};

/// `POST /event`: one event, answered `202 {"status":"queued"}` once durably queued.
pub async fn post_event(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let body = body?;
    let now = Utc::now();
    let event = Event::from_json(&body)?;
    event.validate(now)?;
    let queued = QueuedEvent::from_event(event, now);
    with_timeout(state.store.enqueue(vec![queued])).await?;
    Ok((StatusCode::ACCEPTED, Json(Queued::new())))
}

/// `POST /events`: up to 1,000 events, each accepted or rejected on its own. A
/// cookieless batch's events without a `user_id` get the client's anonymous daily id.
pub async fn post_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BatchResponse>, ApiError> {
    let body = body?;
    let now = Utc::now();
    let batch = parse_batch(&body)?;
    let client = batch.cookieless.then(|| {
        state
            .anonymizer
            .client(&headers, peer.map(|Extension(ConnectInfo(addr))| addr))
    });
    let mut results = Vec::new();
    let mut queued = Vec::new();
    for parsed in batch.events {
        match parsed.and_then(|e| e.validate(now).map(|()| e)) {
            Ok(mut event) => {
                if let (Some(client), None) = (&client, &event.user_id) {
                    let id = with_timeout(state.anonymizer.user_id(&event.site_id, client, now));
                    event.user_id = Some(id.await?);
                }
                queued.push(QueuedEvent::from_event(event, now));
                results.push(EventResult {
                    status: EventStatus::Accepted,
                    error: None,
                });
            }
            Err(e) => results.push(EventResult {
                status: EventStatus::Rejected,
                error: Some(e.to_string()),
            }),
        }
    }
    let accepted = queued.len();
    with_timeout(state.store.enqueue(queued)).await?;
    Ok(Json(BatchResponse {
        accepted,
        rejected: results.len() - accepted,
        results,
    }))
}

/// `GET /stats?site_id=…[&from=…][&to=…][&event_type=…][&limit=…]`.
pub async fn get_stats(
    State(state): State<AppState>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Json<Stats>, ApiError> {
    let Query(query) = query?;
    let range = query
        .resolve()
        .map_err(|e| ApiError::InvalidQuery(e.to_string()))?;
    Ok(Json(with_timeout(state.store.stats(&range)).await?))
}

/// `GET /health`: 200 once the store is ready (reachable, indexes created), 503 otherwise.
/// `"degraded"` rather than `"ok"` while events sit in `dead_letters`: the database
/// refused them for good, and someone should look.
pub async fn health(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let depth = with_timeout(state.store.queue_depth()).await?;
    let dead = with_timeout(state.store.dead_letters()).await?;
    let status = if dead > 0 { "degraded" } else { "ok" };
    Ok(Json(
        json!({ "status": status, "queue_depth": depth, "dead_letters": dead }),
    ))
}

/// Any other route.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}
