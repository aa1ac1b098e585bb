use beacon_protocol::Event;
use beacon_protocol::time::truncate_to_millis;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

/// An accepted event as it waits in the queue: the client's event plus what the server
/// decided for it (its id, its time, when it arrived).
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedEvent {
    /// Unique across the queue and `events`; the key of exactly-once.
    pub event_id: Uuid,
    /// The site.
    pub site_id: String,
    /// The event type.
    pub event_type: String,
    /// The path, if any.
    pub path: Option<String>,
    /// The user, if any.
    pub user_id: Option<String>,
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// When the server accepted it.
    pub ingested_at: DateTime<Utc>,
    /// Free-form properties.
    pub props: Option<Map<String, Value>>,
}

impl QueuedEvent {
    /// Turns a validated client event into a queue record, filling in the id and time.
    pub fn from_event(event: Event, now: DateTime<Utc>) -> Self {
        let now = truncate_to_millis(now);
        Self {
            event_id: event.event_id.unwrap_or_else(Uuid::now_v7),
            site_id: event.site_id,
            event_type: event.event_type,
            path: event.path,
            user_id: event.user_id.filter(|u| !u.is_empty()),
            timestamp: event.timestamp.map(truncate_to_millis).unwrap_or(now),
            ingested_at: now,
            props: event.props.filter(|p| !p.is_empty()),
        }
    }
}

/// A batch the worker has claimed. Holding it does not stop another worker from taking
/// the same events once the claim's lease runs out; moving them is idempotent regardless.
#[derive(Debug)]
pub struct ClaimedBatch {
    pub(crate) token: String,
    /// MongoDB: batches joined into this one, whose queued events still carry their own
    /// ids. Always empty on the embedded store.
    pub(crate) members: Vec<String>,
    /// This worker's claim on the batch (MongoDB: the batch's `owner`).
    pub(crate) owner: String,
    /// When this worker's lease on the batch ends.
    pub(crate) lease_ends: std::time::Instant,
    /// The events, oldest first.
    pub events: Vec<QueuedEvent>,
    /// Whether ready events were left behind: claim again at once rather than wait.
    pub(crate) more_waiting: bool,
}

impl ClaimedBatch {
    /// Whether there was nothing to claim.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// How many events were claimed.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the claim left ready events behind, so the worker should claim again at
    /// once instead of waiting for its next poll. A batch that did not fill up says
    /// nothing by itself: on MongoDB, joined batches stop short of `max`.
    pub fn more_waiting(&self) -> bool {
        self.more_waiting
    }
}

/// What moving a batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MoveOutcome {
    /// Events newly written to `events`.
    pub inserted: usize,
    /// Events that were already in `events` (a retry or a crashed worker's batch), dropped
    /// from the queue without counting them again.
    pub duplicates: usize,
}
