//! The API's description, OpenAPI 3.1, generated from the handlers' annotations and the
//! wire types (`utoipa`), served at `/openapi.json` and as a reference page at `/docs`.
//!
//! The router is built from the same route lists ([`crate::routes_documented`]) that
//! produce the description, so a route cannot be served without being described.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse};
use beacon_protocol::ErrorBody;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, Modify};

/// The description's parts that no handler carries: title, tags, security, the errors'
/// body, and the routes served by other crates (`/metrics`) or by files (`/sdk/`).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Beacon",
        description = "Web and product analytics: ingest events, read stats and run queries in Plausible's shape, manage sites and keys. Every error answers with the same JSON body (ErrorBody). With ADMIN_TOKEN set, reads need a key (Authorization: Bearer) and the admin API needs the token; without it, reads are open and the admin API is off.",
        license(name = "MIT OR Apache-2.0")
    ),
    paths(metrics, sdk_file),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
    tags(
        (name = "ingest", description = "Events in: public, from browsers and servers."),
        (name = "read", description = "Stats and queries: a site's read key or the admin token (open without ADMIN_TOKEN)."),
        (name = "admin", description = "Sites, keys, exports and erasure: the admin token."),
        (name = "ops", description = "Health, metrics and this description."),
        (name = "dashboard", description = "The dashboard's page and files."),
    )
)]
struct Base;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The whole description: [`Base`] and every documented route.
pub fn description() -> OpenApi {
    use utoipa::OpenApi as _;
    let mut api = Base::openapi();
    api.merge(crate::routes_documented().into_openapi());
    api.info.version = env!("CARGO_PKG_VERSION").to_owned();
    api
}

static JSON: LazyLock<String> = LazyLock::new(|| {
    // Serializing a value built from static types: it cannot fail.
    serde_json::to_string_pretty(&description()).unwrap_or_else(|e| unreachable!("{e}"))
});

static PAGE: LazyLock<String> = LazyLock::new(|| crate::docs::render(&description()));

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "This description, OpenAPI 3.1.", content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        JSON.as_str(),
    )
}

/// `GET /docs`.
#[utoipa::path(get, path = "/docs", tag = "ops",
    responses((status = 200, description = "The API reference, as a page.", content_type = "text/html", body = String)))]
pub async fn docs() -> Html<&'static str> {
    Html(PAGE.as_str())
}

/// Prometheus metrics, in the text format. On the API's port, or on `METRICS_PORT`
/// when set; with `METRICS_TOKEN`, it asks for that token.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    security(("bearer" = []), ()),
    responses(
        (status = 200, description = "The metrics.", content_type = "text/plain", body = String),
        (status = 401, description = "METRICS_TOKEN is set and was not given.", body = ErrorBody),
    ))]
#[expect(dead_code, reason = "described here, served by beacon-telemetry")]
fn metrics() {}

/// The browser SDK's files (`beacon.js` and the module it loads), for the one-line snippet.
#[utoipa::path(get, path = "/sdk/{file}", tag = "ingest",
    params(("file" = String, Path, description = "beacon.js, or a file it loads")),
    responses(
        (status = 200, description = "The file.", content_type = "text/javascript", body = String),
        (status = 404, description = "No such file, or the SDK is not built.", body = ErrorBody),
    ))]
#[expect(dead_code, reason = "described here, served from SDK_DIR")]
fn sdk_file() {}

/// An error answer of each status in `statuses`, with the API's error body.
fn errors(statuses: &[u16]) -> BTreeMap<String, RefOr<Response>> {
    statuses
        .iter()
        .map(|status| {
            let why = match status {
                400 => "Malformed: the message says what to fix.",
                401 => "No key, or an unknown one, where one is needed.",
                403 => "The key may not do this, or the site does not take events from here.",
                404 => "No such site or key.",
                408 => "The request (or its body) took too long.",
                409 => "It exists already.",
                413 => "The body is over its limit.",
                415 => "The body's Content-Encoding is not gzip (or none).",
                429 => "Over the rate limit: see Retry-After.",
                503 => "The store is unavailable or the queue is full: nothing was stored; retry after Retry-After.",
                _ => "An error.",
            };
            let content = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build();
            let response = ResponseBuilder::new()
                .description(why)
                .content("application/json", content)
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

/// The errors ingest answers with.
pub struct IngestErrors;

impl IntoResponses for IngestErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[400, 403, 408, 413, 415, 429, 503])
    }
}

/// The errors reads answer with.
pub struct ReadErrors;

impl IntoResponses for ReadErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[400, 401, 403, 408, 429, 503])
    }
}

/// The errors the admin API answers with.
pub struct AdminErrors;

impl IntoResponses for AdminErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[400, 401, 403, 404, 408, 409, 429, 503])
    }
}
