//! The HTTP handlers. They validate, hand events to the store, and answer; they never
//! process events themselves.
//!
//! An ingest handler reads its body within what the request timeout leaves for it, is
//! refused above the queue's high-water mark, and gives the store a deadline: an answer
//! of `503` (or `408`) always means that nothing of the request was stored, so a client
//! may resend, even events without an `event_id`.

use std::time::Instant;

use axum::Extension;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use beacon_protocol::batch::parse_batch;
use beacon_protocol::limits::{MAX_BATCH_BODY_BYTES, MAX_EVENT_BODY_BYTES};
use beacon_protocol::{BatchResponse, Event, EventResult, EventStatus, Queued, Stats, StatsQuery};
use beacon_store::{QueuedEvent, Refusal};
use chrono::Utc;
use std::net::SocketAddr;

use crate::AppState;
use crate::access::Reader;
use crate::client_ip::client_ip;
use crate::enrich::Verdict;
use crate::error::{ApiError, with_timeout};
use crate::openapi::{IngestErrors, ReadErrors};
use crate::sites::Sites;
use beacon_telemetry::{self as telemetry, Ingest};

/// `POST /event`: one event, answered `202 {"status":"queued"}` once durably queued. A
/// bot's event is answered the same, and dropped.
#[utoipa::path(post, path = "/event", tag = "ingest",
    request_body(content = Event, description = "One event. Sent as text/plain too (navigator.sendBeacon); gzip with Content-Encoding."),
    responses(
        (status = 202, description = "Durably queued (or a bot's, dropped).", body = Queued),
        IngestErrors,
    ))]
pub async fn post_event(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let outcome = take_event(&state, &headers, peer, body).await;
    telemetry::ingest(
        outcome
            .as_ref()
            .map_or_else(ApiError::ingest_outcome, |o| *o),
        1,
    );
    outcome.map(|_| (StatusCode::ACCEPTED, Json(Queued::new())))
}

/// Queues one event (or drops a bot's), saying which.
async fn take_event(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Body,
) -> Result<Ingest, ApiError> {
    let body = read_body(state, body, MAX_EVENT_BODY_BYTES).await?;
    let now = Utc::now();
    let event = Event::from_json(&body)?;
    event.validate(now)?;
    let sender = Sender::of(state, headers, peer);
    if let Err(why) = state
        .sites
        .check(&event.site_id, sender.page_host.as_deref())
    {
        return Err(ApiError::Forbidden(why.reason(&event.site_id)));
    }
    let Verdict::Keep(context) = sender.enrich(state, &event) else {
        return Ok(Ingest::Bot);
    };
    let queued = QueuedEvent::from_event(event, now, *context);
    if let Some(refusal) = enqueue(state, vec![queued]).await?.into_iter().next() {
        return Err(ApiError::InvalidEvent(
            beacon_protocol::ValidationError::Malformed(format!(
                "the database refused the event: {}",
                refusal.reason
            )),
        ));
    }
    Ok(Ingest::Accepted)
}

/// `POST /events`: up to 1,000 events, each accepted or rejected on its own. A
/// cookieless batch's events without a `user_id` get the client's anonymous daily id.
#[utoipa::path(post, path = "/events", tag = "ingest",
    request_body(content = Vec<Event>, description = "Up to 1,000 events: an array, or `{\"events\": [...], \"cookieless\": true}` for senders that keep no id on the visitor's device."),
    responses(
        (status = 200, description = "Each event accepted or rejected on its own, in request order.", body = BatchResponse),
        IngestErrors,
    ))]
pub async fn post_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Body,
) -> Result<Json<BatchResponse>, ApiError> {
    let mut tally = Tally::default();
    let answer = take_events(&state, &headers, peer, body, &mut tally).await;
    // What was decided before a failure counts too; the events left undecided count
    // once. A batch refused because every event was refused is counted by the tally.
    tally.record();
    match &answer {
        Err(ApiError::Forbidden(_)) | Ok(_) => {}
        Err(e) => telemetry::ingest(e.ingest_outcome(), 1),
    }
    answer.map(Json)
}

/// What became of a batch's events, for `beacon_ingest_events_total`.
#[derive(Debug, Default)]
struct Tally {
    accepted: usize,
    bots: usize,
    invalid: usize,
    site_refused: usize,
    database_refused: usize,
}

impl Tally {
    fn record(&self) {
        telemetry::ingest(Ingest::Accepted, self.accepted);
        telemetry::ingest(Ingest::Bot, self.bots);
        telemetry::ingest(Ingest::Rejected("invalid"), self.invalid);
        telemetry::ingest(Ingest::Rejected("site_refused"), self.site_refused);
        telemetry::ingest(Ingest::Rejected("database_refused"), self.database_refused);
    }
}

/// Queues a batch's events, each accepted or rejected on its own, and tallies them.
async fn take_events(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Body,
    tally: &mut Tally,
) -> Result<BatchResponse, ApiError> {
    let body = read_body(state, body, MAX_BATCH_BODY_BYTES).await?;
    let now = Utc::now();
    let batch = parse_batch(&body)?;
    let peer_addr = peer.as_ref().map(|Extension(ConnectInfo(addr))| *addr);
    let client = batch
        .cookieless
        .then(|| state.anonymizer.client(headers, peer_addr));
    let sender = Sender::of(state, headers, peer);
    let page_host = sender.page_host.clone();
    let mut results = Vec::new();
    let mut queued = Vec::new();
    // Which result each queued event answers.
    let mut slots = Vec::new();
    let mut refused = 0;
    for parsed in batch.events {
        let checked = parsed.and_then(|e| e.validate(now).map(|()| e)).map(|e| {
            let allowed = state.sites.check(&e.site_id, page_host.as_deref());
            (e, allowed)
        });
        match checked {
            Ok((event, Err(why))) => {
                refused += 1;
                tally.site_refused += 1;
                results.push(EventResult {
                    status: EventStatus::Rejected,
                    error: Some(why.reason(&event.site_id)),
                });
            }
            Ok((mut event, Ok(()))) => {
                let Verdict::Keep(context) = sender.enrich(state, &event) else {
                    // A bot's: answered as accepted, dropped.
                    tally.bots += 1;
                    results.push(EventResult {
                        status: EventStatus::Accepted,
                        error: None,
                    });
                    continue;
                };
                let mut continues = None;
                if let (Some(client), None) = (&client, &event.user_id) {
                    let ids = state.anonymizer.user_id(&event.site_id, client, now);
                    let (id, before) = with_timeout(state.limits.store_timeout, ids).await?;
                    event.user_id = Some(id);
                    continues = before;
                }
                let mut record = QueuedEvent::from_event(event, now, *context);
                record.continues = continues;
                queued.push(record);
                slots.push(results.len());
                results.push(EventResult {
                    status: EventStatus::Accepted,
                    error: None,
                });
            }
            Err(e) => {
                tally.invalid += 1;
                results.push(EventResult {
                    status: EventStatus::Rejected,
                    error: Some(e.to_string()),
                });
            }
        }
    }
    if refused > 0 && refused == results.len() {
        return Err(ApiError::Forbidden(
            "no event of this batch may be sent from here".to_owned(),
        ));
    }
    let queued_count = queued.len();
    let refusals = enqueue(state, queued).await?;
    tally.database_refused = refusals.len();
    tally.accepted = queued_count - refusals.len();
    for Refusal { index, reason } in refusals {
        if let Some(result) = slots.get(index).and_then(|slot| results.get_mut(*slot)) {
            result.status = EventStatus::Rejected;
            result.error = Some(format!("the database refused the event: {reason}"));
        }
    }
    let accepted = results
        .iter()
        .filter(|r| r.status == EventStatus::Accepted)
        .count();
    Ok(BatchResponse {
        accepted,
        rejected: results.len() - accepted,
        results,
    })
}

/// What a request says about who sent it: its page, user agent and address.
struct Sender {
    page_host: Option<String>,
    agent: Option<String>,
    ip: Option<std::net::IpAddr>,
}

impl Sender {
    fn of(
        state: &AppState,
        headers: &HeaderMap,
        peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    ) -> Self {
        let peer = peer.map(|Extension(ConnectInfo(addr))| addr);
        Self {
            page_host: Sites::page_host(headers),
            agent: headers
                .get(axum::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            ip: client_ip(headers, peer, state.trust_proxy),
        }
    }

    fn enrich(&self, state: &AppState, event: &Event) -> Verdict {
        state.enricher.enrich(
            event,
            self.agent.as_deref(),
            self.ip,
            self.page_host.as_deref(),
        )
    }
}

/// Reads a request body of at most `limit` bytes (after decompression) within the time
/// the request timeout leaves for it.
async fn read_body(state: &AppState, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    if state.pressure.over() {
        return Err(ApiError::Overloaded {
            depth: state.pressure.max(),
        });
    }
    let timeout = state.limits.body_timeout();
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(body_error(&e, limit)),
        Err(_) => Err(ApiError::RequestTimeout(format!(
            "the body did not arrive within {} ms",
            timeout.as_millis()
        ))),
    }
}

/// A body that could not be read: too large (`413`), or broken (`400`).
fn body_error(e: &axum::Error, limit: usize) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = source {
        if error.is::<http_body_util::LengthLimitError>() {
            return ApiError::Rejected {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!("the body exceeds the length limit of {limit} bytes"),
            };
        }
        source = error.source();
    }
    ApiError::Rejected {
        status: StatusCode::BAD_REQUEST,
        message: format!("the body could not be read: {e}"),
    }
}

/// Queues events with the request's deadline (see the module doc).
async fn enqueue(state: &AppState, events: Vec<QueuedEvent>) -> Result<Vec<Refusal>, ApiError> {
    let count = events.len();
    let deadline = Instant::now() + state.limits.store_timeout;
    let refused = state.store.enqueue(events, deadline).await?;
    state.pressure.queued(count - refused.len());
    Ok(refused)
}

/// `GET /stats?site_id=…[&from=…][&to=…][&event_type=…][&limit=…]`.
#[utoipa::path(get, path = "/stats", tag = "read",
    params(StatsQuery),
    security(("bearer" = []), ()),
    responses((status = 200, description = "Totals, unique users and top paths: the original contract.", body = Stats), ReadErrors))]
pub async fn get_stats(
    Reader(access): Reader,
    State(state): State<AppState>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Json<Stats>, ApiError> {
    let Query(query) = query?;
    access.may_read(&query.site_id)?;
    let range = query
        .resolve()
        .map_err(|e| ApiError::InvalidQuery(e.to_string()))?;
    let stats = state.store.stats(&range);
    Ok(Json(with_timeout(state.limits.store_timeout, stats).await?))
}

/// Any other route.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

/// A route asked with a method it does not take: the API's JSON error rather than
/// axum's empty `405`.
pub async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}
