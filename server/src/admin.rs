//! The admin API: sites, their read keys, and erasing a user. Every route needs the
//! admin token (see `access`).

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use beacon_protocol::event::validate_fields;
use beacon_store::{ApiKey, Site};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::access::{Admin, new_key};
use crate::error::{ApiError, PathParams, with_timeout};
use crate::openapi::AdminErrors;

/// Most domains a site may list.
const MAX_DOMAINS: usize = 50;

/// `POST /api/sites`.
#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSite {
    #[schema(min_length = 1, max_length = 128)]
    site_id: String,
    #[serde(default)]
    domains: Vec<String>,
    #[serde(default)]
    timezone: Option<String>,
}

/// `PATCH /api/sites/{site_id}`: what is given changes.
#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SitePatch {
    #[serde(default)]
    domains: Option<Vec<String>>,
    #[serde(default)]
    timezone: Option<String>,
}

/// A site as the API shows it.
#[derive(utoipa::ToSchema, Debug, Serialize)]
pub struct SiteView {
    site_id: String,
    domains: Vec<String>,
    timezone: String,
    created_at: String,
}

/// A key as listed: never the key itself.
#[derive(utoipa::ToSchema, Debug, Serialize)]
pub struct KeyView {
    key_id: String,
    site_id: String,
    created_at: String,
    last_used_at: Option<String>,
}

/// A key just made: the only time its secret is shown.
#[derive(utoipa::ToSchema, Debug, Serialize)]
pub struct NewKey {
    key_id: String,
    /// The key, for `Authorization: Bearer`. Stored only as a hash: keep it now.
    key: String,
    site_id: String,
    created_at: String,
}

/// What an erasure removed.
#[derive(utoipa::ToSchema, Debug, Serialize)]
pub struct Erased {
    site_id: String,
    user_id: String,
    /// Events deleted, queued and stored.
    erased: u64,
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl From<Site> for SiteView {
    fn from(s: Site) -> Self {
        Self {
            site_id: s.site_id,
            domains: s.domains,
            timezone: s.timezone,
            created_at: time(s.created_at),
        }
    }
}

impl From<ApiKey> for KeyView {
    fn from(k: ApiKey) -> Self {
        Self {
            key_id: k.key_id,
            site_id: k.site_id,
            created_at: time(k.created_at),
            last_used_at: k.last_used_at.map(time),
        }
    }
}

#[utoipa::path(post, path = "/api/sites", tag = "admin", request_body = NewSite, security(("bearer" = [])),
    responses((status = 201, description = "Registered.", body = SiteView), AdminErrors))]
pub async fn create_site(
    _: Admin,
    State(state): State<AppState>,
    body: Result<Json<NewSite>, JsonRejection>,
) -> Result<(StatusCode, Json<SiteView>), ApiError> {
    let Json(new) = body?;
    validate_fields(&new.site_id, "site", None, None)
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    let site = Site {
        site_id: new.site_id,
        domains: domains(new.domains)?,
        timezone: timezone(new.timezone.as_deref().unwrap_or("UTC"))?,
        created_at: Utc::now(),
    };
    let timeout = state.limits.store_timeout;
    if !with_timeout(timeout, state.store.create_site(&site)).await? {
        return Err(ApiError::Conflict(format!(
            "site `{}` is registered already",
            site.site_id
        )));
    }
    state.sites.changed();
    Ok((StatusCode::CREATED, Json(site.into())))
}

#[utoipa::path(get, path = "/api/sites", tag = "admin", security(("bearer" = [])),
    responses((status = 200, description = "Every registered site.", body = Vec<SiteView>), AdminErrors))]
pub async fn list_sites(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<Vec<SiteView>>, ApiError> {
    let sites = with_timeout(state.limits.store_timeout, state.store.sites()).await?;
    Ok(Json(sites.into_iter().map(SiteView::from).collect()))
}

#[utoipa::path(get, path = "/api/sites/{site_id}", tag = "admin", params(("site_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, description = "The site.", body = SiteView), AdminErrors))]
pub async fn get_site(
    _: Admin,
    State(state): State<AppState>,
    PathParams(site_id): PathParams<String>,
) -> Result<Json<SiteView>, ApiError> {
    Ok(Json(registered(&state, &site_id).await?.into()))
}

#[utoipa::path(patch, path = "/api/sites/{site_id}", tag = "admin", params(("site_id" = String, Path)), request_body = SitePatch, security(("bearer" = [])),
    responses((status = 200, description = "The site as changed.", body = SiteView), AdminErrors))]
pub async fn update_site(
    _: Admin,
    State(state): State<AppState>,
    PathParams(site_id): PathParams<String>,
    body: Result<Json<SitePatch>, JsonRejection>,
) -> Result<Json<SiteView>, ApiError> {
    let Json(patch) = body?;
    let mut site = registered(&state, &site_id).await?;
    if let Some(list) = patch.domains {
        site.domains = domains(list)?;
    }
    if let Some(zone) = patch.timezone {
        site.timezone = timezone(&zone)?;
    }
    if !with_timeout(state.limits.store_timeout, state.store.update_site(&site)).await? {
        return Err(not_registered(&site_id));
    }
    state.sites.changed();
    Ok(Json(site.into()))
}

#[utoipa::path(delete, path = "/api/sites/{site_id}", tag = "admin", params(("site_id" = String, Path)), security(("bearer" = [])),
    responses((status = 204, description = "No longer registered (its events stay until erased or expired)."), AdminErrors))]
pub async fn delete_site(
    _: Admin,
    State(state): State<AppState>,
    PathParams(site_id): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    if !with_timeout(
        state.limits.store_timeout,
        state.store.delete_site(&site_id),
    )
    .await?
    {
        return Err(not_registered(&site_id));
    }
    state.sites.changed();
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/sites/{site_id}/keys", tag = "admin", params(("site_id" = String, Path)), security(("bearer" = [])),
    responses((status = 201, description = "A new read key: `key` is shown this once.", body = NewKey), AdminErrors))]
pub async fn create_key(
    _: Admin,
    State(state): State<AppState>,
    PathParams(site_id): PathParams<String>,
) -> Result<(StatusCode, Json<NewKey>), ApiError> {
    registered(&state, &site_id).await?;
    let (record, key) = new_key(&site_id);
    with_timeout(state.limits.store_timeout, state.store.create_key(&record)).await?;
    Ok((
        StatusCode::CREATED,
        Json(NewKey {
            key_id: record.key_id,
            key,
            site_id: record.site_id,
            created_at: time(record.created_at),
        }),
    ))
}

#[utoipa::path(get, path = "/api/sites/{site_id}/keys", tag = "admin", params(("site_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, description = "The site's keys, without their secrets.", body = Vec<KeyView>), AdminErrors))]
pub async fn list_keys(
    _: Admin,
    State(state): State<AppState>,
    PathParams(site_id): PathParams<String>,
) -> Result<Json<Vec<KeyView>>, ApiError> {
    registered(&state, &site_id).await?;
    let keys = with_timeout(state.limits.store_timeout, state.store.keys(&site_id)).await?;
    Ok(Json(keys.into_iter().map(KeyView::from).collect()))
}

#[utoipa::path(delete, path = "/api/sites/{site_id}/keys/{key_id}", tag = "admin", params(("site_id" = String, Path), ("key_id" = String, Path)), security(("bearer" = [])),
    responses((status = 204, description = "Revoked."), AdminErrors))]
pub async fn revoke_key(
    _: Admin,
    State(state): State<AppState>,
    PathParams((site_id, key_id)): PathParams<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let revoke = state.store.revoke_key(&site_id, &key_id);
    if !with_timeout(state.limits.store_timeout, revoke).await? {
        return Err(ApiError::Missing(format!(
            "site `{site_id}` has no key `{key_id}`"
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/sites/{site_id}/users/{user_id}`: a user's events, queued and stored.
/// The site need not be registered: events of any site id may have been sent.
#[utoipa::path(delete, path = "/api/sites/{site_id}/users/{user_id}", tag = "admin", params(("site_id" = String, Path), ("user_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, description = "The user's events, queued and stored, are gone.", body = Erased), AdminErrors))]
pub async fn erase_user(
    _: Admin,
    State(state): State<AppState>,
    PathParams((site_id, user_id)): PathParams<(String, String)>,
) -> Result<Json<Erased>, ApiError> {
    // Ids ingest would refuse were never stored: saying so beats erasing nothing.
    validate_fields(&site_id, "erase", None, Some(&user_id))
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    // Generous: on a big site this deletes among millions of rows.
    let timeout = state.limits.request_timeout / 2;
    let erased = with_timeout(timeout, state.store.erase_user(&site_id, &user_id)).await?;
    tracing::info!(%site_id, erased, "erased a user's events");
    Ok(Json(Erased {
        site_id,
        user_id,
        erased,
    }))
}

async fn registered(state: &AppState, site_id: &str) -> Result<Site, ApiError> {
    with_timeout(state.limits.store_timeout, state.store.site(site_id))
        .await?
        .ok_or_else(|| not_registered(site_id))
}

fn not_registered(site_id: &str) -> ApiError {
    ApiError::Missing(format!("site `{site_id}` is not registered"))
}

/// Host names, lowercased: letters, digits, dots and dashes, no scheme, port or path.
fn domains(list: Vec<String>) -> Result<Vec<String>, ApiError> {
    if list.len() > MAX_DOMAINS {
        return Err(invalid(format!("at most {MAX_DOMAINS} domains")));
    }
    list.into_iter()
        .map(|d| {
            let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
            let ok = !d.is_empty()
                && d.len() <= 253
                && d.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
            if ok {
                Ok(d)
            } else {
                Err(invalid(format!(
                    "`{d}` is not a host name (like example.com, without https:// or a path)"
                )))
            }
        })
        .collect()
}

/// An IANA time zone name, such as `Europe/Berlin`.
fn timezone(name: &str) -> Result<String, ApiError> {
    name.parse::<chrono_tz::Tz>()
        .map(|tz| tz.name().to_owned())
        .map_err(|_| {
            invalid(format!(
                "`{name}` is not an IANA time zone (like Europe/Berlin)"
            ))
        })
}

fn invalid(message: String) -> ApiError {
    ApiError::Invalid(message)
}
