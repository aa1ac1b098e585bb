//! The background sender: one task that owns all network I/O, so `track()` never waits.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use beacon_protocol::{BatchResponse, Event, EventStatus};
use rand::Rng;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::Error;
use crate::client::Shared;

/// What the client handles ask of the sender.
#[derive(Debug)]
pub(crate) enum Command {
    /// Send the first `upto` buffered events now and report back.
    Flush {
        done: oneshot::Sender<()>,
        upto: usize,
    },
    /// Stop accepting events, send what is left within the shutdown timeout, and exit.
    Close(Option<oneshot::Sender<()>>),
}

/// Runs the sender on the current runtime, or on a runtime of its own thread.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    inbox: mpsc::UnboundedReceiver<Command>,
) -> Result<(), Error> {
    let task = run(shared, inbox);
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(task);
        }
        Err(_) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Config(format!("cannot start the sender's runtime: {e}")))?;
            std::thread::Builder::new()
                .name("beacon-sender".to_owned())
                .spawn(move || runtime.block_on(task))
                .map_err(|e| Error::Config(format!("cannot start the sender's thread: {e}")))?;
        }
    }
    Ok(())
}

async fn run(shared: Arc<Shared>, mut inbox: mpsc::UnboundedReceiver<Command>) {
    let mut ticker = tokio::time::interval(shared.settings.flush_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => send_buffered(&shared, usize::MAX).await,
            () = shared.batch_ready.notified() => send_buffered(&shared, usize::MAX).await,
            command = inbox.recv() => match command {
                Some(Command::Flush { done, upto }) => {
                    send_buffered(&shared, upto).await;
                    let _ = done.send(());
                }
                Some(Command::Close(done)) => {
                    close(&shared).await;
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
                None => {
                    close(&shared).await;
                    return;
                }
            },
        }
    }
}

async fn close(shared: &Shared) {
    shared.begin_close();
    send_buffered(shared, usize::MAX).await;
    let left = shared.take_batch().len() + shared.buffered();
    if left > 0 {
        shared
            .counters
            .dropped_undeliverable
            .fetch_add(left as u64, Ordering::Relaxed);
        tracing::warn!(
            events = left,
            "beacon: shutdown timeout reached, events dropped"
        );
    }
}

/// Sends up to `upto` events from the buffer, batch by batch, until it is empty or
/// the shutdown deadline passes. A limit, so that a flush ends even while events keep
/// being tracked.
async fn send_buffered(shared: &Shared, upto: usize) {
    let mut sent = 0;
    while sent < upto {
        if shared.deadline().is_some_and(|d| Instant::now() >= d) {
            return;
        }
        let batch = shared.take_batch();
        if batch.is_empty() {
            return;
        }
        sent += batch.len();
        for chunk in split_by_bytes(&batch, shared.settings.max_batch_bytes) {
            send_with_retries(shared, &chunk).await;
        }
    }
}

/// Serializes each event once and groups them into request bodies under `max_bytes`.
fn split_by_bytes(events: &[Event], max_bytes: usize) -> Vec<Vec<Vec<u8>>> {
    let mut chunks = Vec::new();
    let mut current: Vec<Vec<u8>> = Vec::new();
    let mut size = 2; // the brackets
    for event in events {
        let Ok(json) = serde_json::to_vec(event) else {
            continue; // an Event always serializes; nothing to send otherwise
        };
        if !current.is_empty() && size + json.len() + 1 > max_bytes {
            chunks.push(std::mem::take(&mut current));
            size = 2;
        }
        size += json.len() + 1;
        current.push(json);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

fn body_of(events: &[Vec<u8>], gzip: bool) -> Vec<u8> {
    let mut json = Vec::with_capacity(events.iter().map(|e| e.len() + 1).sum::<usize>() + 2);
    json.push(b'[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        json.extend_from_slice(e);
    }
    json.push(b']');
    if !gzip {
        return json;
    }
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    match encoder.write_all(&json).and_then(|()| encoder.finish()) {
        Ok(compressed) => compressed,
        Err(_) => json, // writing to a Vec cannot fail
    }
}

/// Largest answer read: the per-event results of a full batch are far smaller.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Reads a response body, refusing one larger than [`MAX_RESPONSE_BYTES`].
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err("the answer is too large".to_owned());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

enum Attempt {
    Delivered(BatchResponse),
    TooLarge,
    Refused(String),
    Retry(String, Option<Duration>),
}

async fn post(shared: &Shared, body: Vec<u8>) -> Attempt {
    let s = &shared.settings;
    let mut timeout = s.request_timeout;
    if let Some(d) = shared.deadline() {
        timeout = timeout.min(d.saturating_duration_since(Instant::now()));
    }
    let mut request = shared
        .http
        .post(shared.events_url.clone())
        .header(CONTENT_TYPE, "application/json")
        .timeout(timeout)
        .body(body);
    if s.gzip {
        request = request.header(CONTENT_ENCODING, "gzip");
    }
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => return Attempt::Retry(e.to_string(), None),
    };
    let status = response.status();
    if status.is_success() {
        // A 2xx whose per-event results cannot be read is not a delivery: the events
        // carry ids, so sending them again is safe.
        return match read_capped(response)
            .await
            .map(|b| serde_json::from_slice(&b))
        {
            Ok(Ok(results)) => Attempt::Delivered(results),
            _ => Attempt::Retry(format!("{status} with an unreadable answer"), None),
        };
    }
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let reason = read_capped(response)
        .await
        .ok()
        .and_then(|b| serde_json::from_slice::<beacon_protocol::ErrorBody>(&b).ok())
        .map_or_else(|| status.to_string(), |b| b.message);
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => Attempt::TooLarge,
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => {
            Attempt::Retry(format!("{status}: {reason}"), retry_after)
        }
        s if s.is_server_error() => Attempt::Retry(format!("{status}: {reason}"), retry_after),
        _ => Attempt::Refused(format!("{status}: {reason}")),
    }
}

/// Full-jitter exponential backoff: a random wait below `base * 2^(attempt-1)`, capped.
fn backoff(shared: &Shared, attempt: u32) -> Duration {
    let s = &shared.settings;
    let bound = s
        .backoff_base
        .saturating_mul(
            1u32.checked_shl(attempt.saturating_sub(1))
                .unwrap_or(u32::MAX),
        )
        .min(s.backoff_max);
    let millis = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=millis))
}

fn drop_events(shared: &Shared, count: usize, why: &str) {
    shared
        .counters
        .dropped_undeliverable
        .fetch_add(count as u64, Ordering::Relaxed);
    tracing::warn!(events = count, reason = why, "beacon: events dropped");
}

/// Sends one request's events, retrying as the server allows, until they are
/// delivered, refused, out of retries, or the shutdown deadline passes, which cuts a
/// request or a wait short.
async fn send_with_retries(shared: &Shared, events: &[Vec<u8>]) {
    let body = body_of(events, shared.settings.gzip);
    let mut attempt = 0;
    loop {
        let sent = tokio::select! {
            sent = post(shared, body.clone()) => sent,
            () = shared.deadline_reached() => {
                return drop_events(shared, events.len(), "shutdown: the deadline passed");
            }
        };
        match sent {
            Attempt::Delivered(response) => {
                record_delivery(shared, response);
                return;
            }
            Attempt::TooLarge if events.len() > 1 => {
                let (left, right) = events.split_at(events.len() / 2);
                Box::pin(send_with_retries(shared, left)).await;
                Box::pin(send_with_retries(shared, right)).await;
                return;
            }
            Attempt::TooLarge => return drop_events(shared, 1, "event too large for the server"),
            Attempt::Refused(reason) => return drop_events(shared, events.len(), &reason),
            Attempt::Retry(reason, retry_after) => {
                attempt += 1;
                if attempt > shared.settings.max_retries {
                    return drop_events(shared, events.len(), &format!("gave up: {reason}"));
                }
                let wait = match retry_after {
                    Some(wait) => wait.min(shared.settings.max_retry_after),
                    None => backoff(shared, attempt),
                };
                if shared
                    .deadline()
                    .is_some_and(|d| Instant::now() + wait >= d)
                {
                    return drop_events(shared, events.len(), &format!("shutdown: {reason}"));
                }
                tracing::debug!(
                    attempt,
                    wait_ms = wait.as_millis() as u64,
                    reason,
                    "beacon: retrying batch"
                );
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = shared.deadline_reached() => {
                        return drop_events(shared, events.len(), &format!("shutdown: {reason}"));
                    }
                }
            }
        }
    }
}

fn record_delivery(shared: &Shared, response: BatchResponse) {
    let c = &shared.counters;
    c.delivered
        .fetch_add(response.accepted as u64, Ordering::Relaxed);
    if response.rejected > 0 {
        c.rejected
            .fetch_add(response.rejected as u64, Ordering::Relaxed);
        let first = response
            .results
            .iter()
            .find(|r| r.status == EventStatus::Rejected)
            .and_then(|r| r.error.clone())
            .unwrap_or_default();
        tracing::warn!(
            events = response.rejected,
            first_reason = first,
            "beacon: server rejected events"
        );
    }
}
