//! The records that cross the store's API: events as queued and stored, claimed
//! batches, what a move did, and pages of stored events.

use beacon_protocol::Event;
use beacon_protocol::time::truncate_to_millis;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{embedded, mongo};

/// An accepted event as it waits in the queue (and, once moved, as it is stored): the
/// client's event plus what the server decided for it (its id, its time, when it
/// arrived).
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
    /// Where the visitor came from and with what, worked out at ingest.
    pub context: Context,
    /// Queue only, never stored with the event: for a cookieless visitor in the first
    /// half hour of a UTC day, their id of the day before, under which a visit still
    /// going continues (see `rollup::visits`).
    pub continues: Option<String>,
}

impl QueuedEvent {
    /// Turns a validated client event into a queue record, filling in the id and time,
    /// with `context` as the server worked it out.
    pub fn from_event(event: Event, now: DateTime<Utc>, context: Context) -> Self {
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
            context,
            continues: None,
        }
    }
}

/// What the server worked out at ingest about where an event came from and with what:
/// the raw user agent and IP address are never stored, only these. A visit's
/// attributes (source, device, country…) are those of its first event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// The host the page is on.
    pub hostname: Option<String>,
    /// The page the visitor came from: host and path, no query string.
    pub referrer: Option<String>,
    /// Where from, by name: `Google`, `Hacker News`, a host, or `Direct / None`.
    pub source: Option<String>,
    /// The kind of source: `Direct`, `Organic Search`, `Paid`, `Organic Social`,
    /// `Email`, `Referral`.
    pub channel: Option<String>,
    /// `utm_source`.
    pub utm_source: Option<String>,
    /// `utm_medium`.
    pub utm_medium: Option<String>,
    /// `utm_campaign`.
    pub utm_campaign: Option<String>,
    /// `utm_content`.
    pub utm_content: Option<String>,
    /// `utm_term`.
    pub utm_term: Option<String>,
    /// `Chrome`, `Safari`…
    pub browser: Option<String>,
    /// Its major version.
    pub browser_version: Option<String>,
    /// `Windows`, `iOS`…
    pub os: Option<String>,
    /// Its version.
    pub os_version: Option<String>,
    /// `Desktop`, `Mobile` or `Tablet`.
    pub device: Option<String>,
    /// An ISO 3166-1 alpha-2 code.
    pub country: Option<String>,
}

impl Context {
    /// The fields' stored names, in the order of [`Context::values`].
    pub const FIELDS: [&'static str; 15] = [
        "hostname",
        "referrer",
        "source",
        "channel",
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "utm_content",
        "utm_term",
        "browser",
        "browser_version",
        "os",
        "os_version",
        "device",
        "country",
    ];

    /// The fields' values, in the order of [`Context::FIELDS`].
    pub fn values(&self) -> [Option<&str>; 15] {
        [
            self.hostname.as_deref(),
            self.referrer.as_deref(),
            self.source.as_deref(),
            self.channel.as_deref(),
            self.utm_source.as_deref(),
            self.utm_medium.as_deref(),
            self.utm_campaign.as_deref(),
            self.utm_content.as_deref(),
            self.utm_term.as_deref(),
            self.browser.as_deref(),
            self.browser_version.as_deref(),
            self.os.as_deref(),
            self.os_version.as_deref(),
            self.device.as_deref(),
            self.country.as_deref(),
        ]
    }

    /// The value of the field named `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        let at = Self::FIELDS.iter().position(|f| *f == name)?;
        self.values()[at]
    }

    /// Builds a context from values in the order of [`Context::FIELDS`].
    pub fn from_values(mut values: impl FnMut(usize) -> Option<String>) -> Self {
        Self {
            hostname: values(0),
            referrer: values(1),
            source: values(2),
            channel: values(3),
            utm_source: values(4),
            utm_medium: values(5),
            utm_campaign: values(6),
            utm_content: values(7),
            utm_term: values(8),
            browser: values(9),
            browser_version: values(10),
            os: values(11),
            os_version: values(12),
            device: values(13),
            country: values(14),
        }
    }
}

/// An event the database refused for good when it was queued (MongoDB reports these
/// per document): nothing of it is stored, and sending it again will not help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The event's index in what was enqueued.
    pub index: usize,
    /// The database's reason.
    pub reason: String,
}

/// A batch the worker has claimed. Holding it does not stop another worker from taking
/// the same events once the claim's lease runs out; moving them is idempotent regardless.
#[derive(Debug)]
pub struct ClaimedBatch {
    /// The events, oldest first. Shared, so that a move can hand them to a writer
    /// thread without copying.
    pub events: std::sync::Arc<[QueuedEvent]>,
    /// Whether ready events were left behind: claim again at once rather than wait.
    pub(crate) more_waiting: bool,
    /// The backend's hold on the events.
    pub(crate) claim: Claim,
    /// When the claim's lease, as first taken, runs out: until then no other worker
    /// takes the events over.
    pub(crate) lease_ends: std::time::Instant,
}

/// What a backend needs to move a batch it handed out.
#[derive(Debug)]
pub(crate) enum Claim {
    /// Nothing was claimed.
    Nothing,
    Mongo(mongo::MongoClaim),
    Embedded(embedded::EmbeddedClaim),
}

impl ClaimedBatch {
    /// A claim that found nothing.
    pub(crate) fn nothing() -> Self {
        Self {
            events: Vec::new().into(),
            more_waiting: false,
            claim: Claim::Nothing,
            lease_ends: std::time::Instant::now(),
        }
    }

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

    /// Whether the lease taken with the claim still runs, so that a move that failed is
    /// worth trying again: after it, another worker may take the batch over (moving it
    /// anyway would be safe, as the store checks the lease, but pointless).
    pub fn lease_running(&self) -> bool {
        std::time::Instant::now() < self.lease_ends
    }
}

/// What moving a batch did. Each event is reported once, by the move that counts it: a
/// move that finds its batch taken over or moved already reports nothing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MoveOutcome {
    /// Events this move stored and counted, with any that an earlier attempt of the same
    /// batch stored before it failed (on MongoDB, a move is several steps).
    pub inserted: usize,
    /// Events that another batch had stored already (resent after they were moved),
    /// dropped from the queue without counting them again.
    pub duplicates: usize,
    /// Events the database refused for good, moved to `dead_letters` with the error.
    pub dead_lettered: usize,
}

/// How full the queue is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStatus {
    /// Events waiting, claimed or not. On MongoDB an estimate from the collection's
    /// metadata, exact once writes settle.
    pub depth: u64,
    /// When the oldest waiting event was accepted, if any waits.
    pub oldest: Option<DateTime<Utc>>,
}

impl QueueStatus {
    /// How long the oldest waiting event has waited by `now`, if any waits (zero if its
    /// clock ran ahead of this one).
    pub fn oldest_age(&self, now: DateTime<Utc>) -> Option<std::time::Duration> {
        self.oldest.map(|t| (now - t).to_std().unwrap_or_default())
    }
}

/// Which stored events to read: a site's, in `[from, to)`, ordered by timestamp then
/// id, after a given one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsPage {
    /// The site.
    pub site_id: String,
    /// Inclusive start, if any.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive end, if any.
    pub to: Option<DateTime<Utc>>,
    /// Continue after this event (the last of the previous page): its time and id.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    /// Most events in the page.
    pub limit: usize,
}

impl EventsPage {
    /// The first page of all of a site's events.
    pub fn first(site_id: impl Into<String>, limit: usize) -> Self {
        Self {
            site_id: site_id.into(),
            from: None,
            to: None,
            after: None,
            limit,
        }
    }

    /// The page after `page`, whose last event was `last`.
    pub fn next(&self, last: &QueuedEvent) -> Self {
        Self {
            after: Some((last.timestamp, last.event_id)),
            ..self.clone()
        }
    }
}
