//! `GET /api/sites/{site_id}/export?from=&to=`: a site's raw events, streamed page by
//! page as they are read, so that memory stays flat however many there are. NDJSON by
//! default, CSV with `Accept: text/csv`. Admin only: raw events are personal data.

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use beacon_protocol::DateBound;
use beacon_store::{Context, EventsPage, QueuedEvent};
use chrono::SecondsFormat;
use futures::{StreamExt, TryStreamExt};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::access::Admin;
use crate::error::{ApiError, PathParams};

/// Events read per page.
const PAGE: usize = 1000;
/// The CSV columns before the context's (`Context::FIELDS`), in order.
const CSV_HEADER: &[&str] = &[
    "event_id",
    "site_id",
    "event_type",
    "path",
    "user_id",
    "timestamp",
    "ingested_at",
    "props",
];

/// The query string.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// First day (or instant) exported: `YYYY-MM-DD` or RFC 3339.
    #[serde(default)]
    #[param(value_type = Option<String>)]
    from: Option<DateBound>,
    /// Last day exported (a day includes the whole day, an instant is exclusive).
    #[serde(default)]
    #[param(value_type = Option<String>)]
    to: Option<DateBound>,
}

/// One exported event: the wire event's fields, when it arrived, and what ingest worked
/// out about it (its [`Context`], whose fields follow `props` when they are known).
#[derive(Debug)]
struct Exported<'a> {
    event_id: String,
    site_id: &'a str,
    event_type: &'a str,
    path: Option<&'a str>,
    user_id: Option<&'a str>,
    timestamp: String,
    ingested_at: String,
    props: Option<&'a serde_json::Map<String, serde_json::Value>>,
    context: &'a Context,
}

impl Serialize for Exported<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("event_id", &self.event_id)?;
        map.serialize_entry("site_id", self.site_id)?;
        map.serialize_entry("event_type", self.event_type)?;
        map.serialize_entry("path", &self.path)?;
        map.serialize_entry("user_id", &self.user_id)?;
        map.serialize_entry("timestamp", &self.timestamp)?;
        map.serialize_entry("ingested_at", &self.ingested_at)?;
        map.serialize_entry("props", &self.props)?;
        for (name, value) in Context::FIELDS.iter().zip(self.context.values()) {
            if let Some(value) = value {
                map.serialize_entry(name, value)?;
            }
        }
        map.end()
    }
}

impl<'a> From<&'a QueuedEvent> for Exported<'a> {
    fn from(e: &'a QueuedEvent) -> Self {
        Self {
            event_id: e.event_id.to_string(),
            site_id: &e.site_id,
            event_type: &e.event_type,
            path: e.path.as_deref(),
            user_id: e.user_id.as_deref(),
            timestamp: e.timestamp.to_rfc3339_opts(SecondsFormat::Millis, true),
            ingested_at: e.ingested_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            props: e.props.as_ref(),
            context: &e.context,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Ndjson,
    Csv,
}

#[utoipa::path(get, path = "/api/sites/{site_id}/export", tag = "admin",
    params(("site_id" = String, Path), ExportQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every stored event of the site, streamed: NDJSON, or CSV with `Accept: text/csv`.", content_type = "application/x-ndjson", body = String),
        crate::openapi::AdminErrors,
    ))]
pub async fn export(
    _: Admin,
    State(state): State<AppState>,
    PathParams(site_id): PathParams<String>,
    headers: HeaderMap,
    query: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let format = if headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"))
    {
        Format::Csv
    } else {
        Format::Ndjson
    };
    let first = EventsPage {
        site_id,
        from: query.from.map(|b| b.as_start()),
        to: query.to.map(|b| b.as_end()),
        after: None,
        limit: PAGE,
    };
    // The CSV header goes first, also when there are no events.
    let header = encode(&[], format, format == Format::Csv)?;
    let pages = futures::stream::once(futures::future::ready(Ok(header))).chain(
        state
            .store
            .events(first)
            .and_then(move |events| futures::future::ready(encode(&events, format, false))),
    );
    let content_type = match format {
        Format::Ndjson => "application/x-ndjson",
        Format::Csv => "text/csv; charset=utf-8",
    };
    let mut response = Body::from_stream(pages).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}

/// One page's events as NDJSON lines or CSV rows (with the header before the first).
fn encode(
    events: &[QueuedEvent],
    format: Format,
    header: bool,
) -> Result<Bytes, beacon_store::StoreError> {
    let failed = |e: String| beacon_store::StoreError::Corrupt(format!("cannot export: {e}"));
    let mut out = Vec::with_capacity(events.len() * 200);
    match format {
        Format::Ndjson => {
            for e in events {
                serde_json::to_writer(&mut out, &Exported::from(e))
                    .map_err(|e| failed(e.to_string()))?;
                out.push(b'\n');
            }
        }
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(&mut out);
            if header {
                writer
                    .write_record(CSV_HEADER.iter().chain(&Context::FIELDS))
                    .map_err(|e| failed(e.to_string()))?;
            }
            for e in events {
                let x = Exported::from(e);
                let props = x
                    .props
                    .map(|p| serde_json::to_string(p).unwrap_or_default())
                    .unwrap_or_default();
                let fixed = [
                    x.event_id.as_str(),
                    x.site_id,
                    x.event_type,
                    x.path.unwrap_or_default(),
                    x.user_id.unwrap_or_default(),
                    &x.timestamp,
                    &x.ingested_at,
                    &props,
                ];
                let context = x.context.values().map(Option::unwrap_or_default);
                writer
                    .write_record(fixed.into_iter().chain(context))
                    .map_err(|e| failed(e.to_string()))?;
            }
            writer.flush().map_err(|e| failed(e.to_string()))?;
        }
    }
    Ok(Bytes::from(out))
}
