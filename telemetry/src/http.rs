//! The middleware behind `beacon_http_requests_total` and
//! `beacon_http_request_duration_seconds`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

/// Times and counts each request by the route the router matched (`/api/sites/{site_id}`,
/// not the site asked for) and its status. Requests no route matched count under
/// `unmatched`, so that scanning for paths adds no series.
pub async fn track_http(request: Request, next: Next) -> Response {
    let started = Instant::now();
    // A clone of the matched path is a reference count, not a copy.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    crate::http_request(route, response.status().as_u16(), started.elapsed());
    response
}
