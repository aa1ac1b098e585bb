//! `/sdk/`: the browser SDK's files (`scripts/build-wasm` output), for the one-line
//! snippet. Any origin may load them: the snippet fetches its wasm module, which
//! browsers do with CORS.

use std::path::Path;

use axum::Router;
use axum::extract::Request;
use axum::handler::HandlerWithoutStateExt;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use tower_http::cors::{Any, CorsLayer};
use tower_http::services::ServeDir;

use crate::error::ApiError;

/// The snippet's own URL never changes, so browsers re-check it every few minutes.
const SNIPPET_CACHE: &str = "public, max-age=300";
/// The snippet asks for the module with `?v=<content hash>`: such a URL
/// always means the same bytes.
const VERSIONED_CACHE: &str = "public, max-age=31536000, immutable";

/// The `/sdk` router, serving files from `dir`.
pub fn routes<S: Clone + Send + Sync + 'static>(dir: &Path) -> Router<S> {
    let files = ServeDir::new(dir).not_found_service(missing.into_service());
    Router::new()
        .nest_service("/sdk", files)
        .layer(middleware::from_fn(cache_headers))
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods([Method::GET, Method::HEAD]),
        )
}

async fn missing(uri: Uri) -> ApiError {
    ApiError::SdkFileMissing(uri.path().to_owned())
}

async fn cache_headers(request: Request, next: Next) -> Response {
    let versioned = request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("v=")));
    let mut response = next.run(request).await;
    if response.status() == StatusCode::OK || response.status() == StatusCode::NOT_MODIFIED {
        let cache = if versioned {
            VERSIONED_CACHE
        } else {
            SNIPPET_CACHE
        };
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    response
}
