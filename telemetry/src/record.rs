//! Every metric's name, help text and labels, and the functions that record them.

use std::collections::HashMap;
use std::sync::{LazyLock, RwLock};
use std::time::Duration;

use metrics::{
    Counter, Histogram, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};

/// Requests answered, by route and status.
pub const HTTP_REQUESTS: &str = "beacon_http_requests_total";
/// Time to answer, by route and status.
pub const HTTP_DURATION: &str = "beacon_http_request_duration_seconds";
/// Events sent to ingest, by outcome (and reason, when rejected).
pub const INGEST_EVENTS: &str = "beacon_ingest_events_total";
/// Events waiting in the queue, read at scrape time.
pub const QUEUE_DEPTH: &str = "beacon_queue_depth";
/// Age of the oldest queued event, read at scrape time.
pub const QUEUE_OLDEST_AGE: &str = "beacon_queue_oldest_age_seconds";
/// Events in `dead_letters` now, read at scrape time.
pub const DEAD_LETTERS_STORED: &str = "beacon_dead_letters";
/// Batches the worker claimed, by result.
pub const WORKER_BATCHES: &str = "beacon_worker_batches_total";
/// Events the worker moved, by result.
pub const WORKER_EVENTS: &str = "beacon_worker_events_moved_total";
/// Time one batch takes to move.
pub const WORKER_MOVE_DURATION: &str = "beacon_worker_move_duration_seconds";
/// Events this process put into `dead_letters`.
pub const DEAD_LETTERS: &str = "beacon_dead_letters_total";
/// Store calls that failed, by kind.
pub const STORE_ERRORS: &str = "beacon_store_errors_total";

pub(crate) fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route and status."
    );
    describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "Time to answer an HTTP request, by route and status."
    );
    describe_counter!(
        INGEST_EVENTS,
        "Events sent to ingest, by outcome: accepted, bot (dropped), rejected (with a reason), rate_limited or over_high_water_mark. A request refused before its body is read counts once."
    );
    describe_gauge!(QUEUE_DEPTH, "Events waiting in the queue.");
    describe_gauge!(
        QUEUE_OLDEST_AGE,
        metrics::Unit::Seconds,
        "Age of the oldest event waiting in the queue (0 when empty)."
    );
    describe_gauge!(
        DEAD_LETTERS_STORED,
        "Events in dead_letters: the database refused them for good."
    );
    describe_counter!(
        WORKER_BATCHES,
        "Batches the worker claimed, by result (moved or failed)."
    );
    describe_counter!(
        WORKER_EVENTS,
        "Events the worker handled, by result: inserted, duplicate (stored before) or dead_lettered."
    );
    describe_histogram!(
        WORKER_MOVE_DURATION,
        metrics::Unit::Seconds,
        "Time to move one batch into the events store and rollups."
    );
    describe_counter!(DEAD_LETTERS, "Events this process put into dead_letters.");
    describe_counter!(
        STORE_ERRORS,
        "Store calls that failed, by kind (unavailable, timeout, mongo, sqlite, ...)."
    );
}

/// What became of events sent to ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingest {
    /// Queued.
    Accepted,
    /// A bot's: answered as accepted, dropped.
    Bot,
    /// Refused, for the reason given.
    Rejected(&'static str),
    /// Refused by the rate limit.
    RateLimited,
    /// Refused above the queue's high-water mark.
    OverHighWaterMark,
}

/// Counts `events` sent to ingest with `outcome`. `Rejected`'s reason must come from a
/// fixed set (see the callers), never from the request.
pub fn ingest(outcome: Ingest, events: usize) {
    if events == 0 {
        return;
    }
    let events = events as u64;
    match outcome {
        Ingest::Accepted => counter!(INGEST_EVENTS, "outcome" => "accepted").increment(events),
        Ingest::Bot => counter!(INGEST_EVENTS, "outcome" => "bot").increment(events),
        Ingest::Rejected(reason) => {
            counter!(INGEST_EVENTS, "outcome" => "rejected", "reason" => reason).increment(events);
        }
        Ingest::RateLimited => {
            counter!(INGEST_EVENTS, "outcome" => "rate_limited").increment(events);
        }
        Ingest::OverHighWaterMark => {
            counter!(INGEST_EVENTS, "outcome" => "over_high_water_mark").increment(events);
        }
    }
}

/// Counts one answered request on `route` (as the router declares it).
pub(crate) fn http_request(route: &str, status: u16, took: Duration) {
    let seconds = took.as_secs_f64();
    let known = read(&HTTP_HANDLES);
    if let Some((count, time)) = known.get(route).and_then(|s| s.get(&status)) {
        count.increment(1);
        time.record(seconds);
        return;
    }
    drop(known);
    let labels = [("route", route.to_owned()), ("status", status.to_string())];
    let (count, time) = (
        counter!(HTTP_REQUESTS, &labels),
        histogram!(HTTP_DURATION, &labels),
    );
    count.increment(1);
    time.record(seconds);
    write(&HTTP_HANDLES)
        .entry(route.into())
        .or_default()
        .insert(status, (count, time));
}

/// The handles of [`HTTP_REQUESTS`] and [`HTTP_DURATION`] for each route and status
/// answered so far. The macros build, hash and look up their labels on every call,
/// which cost more than a request's other metrics together; a kept handle records
/// with no lookup. Bounded: routes are the router's (and `unmatched`), statuses
/// are HTTP's. The recorder is installed first, so that no handle here is one of the
/// no-op recorder's, and it has no idle timeout, so none is ever dropped from it.
static HTTP_HANDLES: LazyLock<RwLock<RouteHandles>> = LazyLock::new(|| {
    crate::install();
    RwLock::default()
});

type RouteHandles = HashMap<Box<str>, HashMap<u16, (Counter, Histogram)>>;

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counts one batch the worker moved: events newly stored, stored before, and put into
/// `dead_letters`.
pub fn batch_moved(inserted: usize, duplicates: usize, dead_lettered: usize, took: Duration) {
    counter!(WORKER_BATCHES, "result" => "moved").increment(1);
    counter!(WORKER_EVENTS, "result" => "inserted").increment(inserted as u64);
    counter!(WORKER_EVENTS, "result" => "duplicate").increment(duplicates as u64);
    counter!(WORKER_EVENTS, "result" => "dead_lettered").increment(dead_lettered as u64);
    counter!(DEAD_LETTERS).increment(dead_lettered as u64);
    histogram!(WORKER_MOVE_DURATION).record(took.as_secs_f64());
}

/// Counts one batch that failed to move (it stays queued and is retried).
pub fn batch_failed() {
    counter!(WORKER_BATCHES, "result" => "failed").increment(1);
}

/// Counts one failed store call, by [`beacon_store::StoreError::kind`] (or `timeout`).
pub fn store_error(kind: &'static str) {
    counter!(STORE_ERRORS, "kind" => kind).increment(1);
}

/// Sets the queue's figures, as read from the store.
pub(crate) fn queue(depth: u64, oldest_age: Option<Duration>, dead_letters: u64) {
    gauge!(QUEUE_DEPTH).set(depth as f64);
    gauge!(QUEUE_OLDEST_AGE).set(oldest_age.map_or(0.0, |a| a.as_secs_f64()));
    gauge!(DEAD_LETTERS_STORED).set(dead_letters as f64);
}
