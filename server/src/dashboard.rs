//! The dashboard: one page, its stylesheet and script, embedded in the binary, so that a
//! copied `beacon-server` serves it with no files beside it and nothing fetched from
//! other hosts. Everything it shows comes from the query API; this module serves the
//! files and `GET /api/v2/sites`, the list its site picker offers.
//!
//! `GET /` redirects to `/dashboard`. The page keeps its state in the URL
//! (`?site_id=…&period=30d&filters=…`), so that any view can be bookmarked and shared.

use std::sync::LazyLock;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::access::{Access, Reader};
use crate::error::{ApiError, with_timeout};
use crate::openapi::ReadErrors;

/// Most sites the picker lists: in open mode anyone may send events for any site id.
const MAX_SITES: usize = 1000;

/// Scripts and styles only from this server; no frames, no plugins.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// An embedded file with its content type and an ETag from its bytes.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: String,
}

impl Asset {
    fn new(body: &'static str, content_type: &'static str) -> Self {
        let hash = Sha256::digest(body.as_bytes());
        let etag = format!(
            "\"{}\"",
            hash.iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        Self {
            body,
            content_type,
            etag,
        }
    }

    /// The file, or `304` when the browser has it. Browsers re-check every time
    /// (`no-cache`), so a new binary's files are seen at once.
    fn respond(&self, headers: &HeaderMap) -> Response {
        let fresh = headers
            .get(header::IF_NONE_MATCH)
            .is_some_and(|v| v.as_bytes() == self.etag.as_bytes());
        let mut response = if fresh {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            ([(header::CONTENT_TYPE, self.content_type)], self.body).into_response()
        };
        let h = response.headers_mut();
        if let Ok(etag) = HeaderValue::from_str(&self.etag) {
            h.insert(header::ETAG, etag);
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        response
    }
}

static PAGE: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_str!("../dashboard/index.html"),
        "text/html; charset=utf-8",
    )
});
static STYLE: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_str!("../dashboard/dashboard.css"),
        "text/css; charset=utf-8",
    )
});
static SCRIPT: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_str!("../dashboard/dashboard.js"),
        "text/javascript; charset=utf-8",
    )
});

/// `GET /`: to the dashboard.
#[utoipa::path(get, path = "/", tag = "dashboard",
    responses((status = 303, description = "To `/dashboard`.")))]
pub async fn root() -> Redirect {
    Redirect::to("/dashboard")
}

/// `GET /dashboard`: the page.
#[utoipa::path(get, path = "/dashboard", tag = "dashboard",
    responses((status = 200, description = "The dashboard.", content_type = "text/html", body = String)))]
pub async fn page(headers: HeaderMap) -> Response {
    PAGE.respond(&headers)
}

/// `GET /dashboard/dashboard.css`.
#[utoipa::path(get, path = "/dashboard/dashboard.css", tag = "dashboard",
    responses((status = 200, description = "The dashboard's styles.", content_type = "text/css", body = String)))]
pub async fn style(headers: HeaderMap) -> Response {
    STYLE.respond(&headers)
}

/// `GET /dashboard/dashboard.js`.
#[utoipa::path(get, path = "/dashboard/dashboard.js", tag = "dashboard",
    responses((status = 200, description = "The dashboard's script.", content_type = "text/javascript", body = String)))]
pub async fn script(headers: HeaderMap) -> Response {
    SCRIPT.respond(&headers)
}

/// The sites a caller may read, and how it may.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SiteList {
    /// Site ids, in order: registered sites and sites with events (the admin token and
    /// open mode), or the key's own site.
    sites: Vec<String>,
    /// `open` (no `ADMIN_TOKEN`), `admin` (the admin token) or `site` (a read key).
    access: &'static str,
}

/// `GET /api/v2/sites`: what the dashboard's site picker offers.
#[utoipa::path(get, path = "/api/v2/sites", tag = "read",
    security(("bearer" = []), ()),
    responses((status = 200, description = "The sites this caller may read.", body = SiteList), ReadErrors))]
pub async fn sites(
    Reader(access): Reader,
    State(state): State<AppState>,
) -> Result<Json<SiteList>, ApiError> {
    let timeout = state.limits.store_timeout;
    let (sites, access) = match access {
        Access::Site(site) => (vec![site], "site"),
        Access::Open | Access::Admin => {
            let (mut sites, registered) = tokio::try_join!(
                with_timeout(timeout, state.store.sites_with_events(MAX_SITES)),
                with_timeout(timeout, state.store.sites()),
            )?;
            sites.extend(registered.into_iter().map(|s| s.site_id));
            sites.sort();
            sites.dedup();
            sites.truncate(MAX_SITES);
            let how = if access == Access::Open {
                "open"
            } else {
                "admin"
            };
            (sites, how)
        }
    };
    Ok(Json(SiteList { sites, access }))
}
