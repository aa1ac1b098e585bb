//! `POST /api/v2/query`: the query API, in the shape of Plausible's Stats API v2 (see
//! `beacon_protocol::query` for the request and answer, and `beacon_store`'s query
//! engine for how each is answered). Protected like `/stats`.
//!
//! Days are counted in the query's `timezone`, else the site's registered one, else UTC.
//! The answer must come within the request timeout (`REQUEST_TIMEOUT_MS`), else `408`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use beacon_protocol::query::{Query, QueryResponse};
use beacon_store::Engine;
use chrono::Utc;
use chrono_tz::Tz;

use crate::AppState;
use crate::access::Reader;
use crate::error::ApiError;
use crate::openapi::ReadErrors;

/// Largest query body.
const MAX_QUERY_BYTES: usize = 64 * 1024;

/// Answers a query.
#[utoipa::path(post, path = "/api/v2/query", tag = "read",
    request_body(content = Query, description = "A query in Plausible's Stats API v2 shape."),
    security(("bearer" = []), ()),
    responses((status = 200, description = "One row per combination of dimension values.", body = QueryResponse), ReadErrors))]
pub async fn post_query(
    Reader(access): Reader,
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<QueryResponse>, ApiError> {
    let body = body?;
    if body.len() > MAX_QUERY_BYTES {
        return Err(ApiError::InvalidQuery(format!(
            "the query is over {MAX_QUERY_BYTES} bytes"
        )));
    }
    let query: Query =
        serde_json::from_slice(&body).map_err(|e| ApiError::InvalidQuery(e.to_string()))?;
    access.may_read(&query.site_id)?;
    let zone = query
        .timezone
        .clone()
        .or_else(|| state.sites.timezone(&query.site_id))
        .unwrap_or_else(|| "UTC".to_owned());
    let tz: Tz = zone
        .parse()
        .map_err(|_| ApiError::InvalidQuery(format!("unknown time zone `{zone}`")))?;
    // Under the request timeout only: a query of raw events may take seconds, and a
    // read cut short loses nothing.
    let answer = state
        .store
        .query(&query, tz, Utc::now(), Engine::Auto)
        .await?;
    Ok(Json(answer))
}
