//! Rollups: per site, per hour and per day, per event type and for all types together,
//! the event count, a sketch of the users, and for each dimension (the path, for now) a
//! bounded summary of its most frequent values. The worker adds each batch to its
//! buckets as it moves it; `/stats` merges the buckets that tile the asked range and
//! scans raw events only for the parts of it that are not whole hours.
//!
//! Nothing in a bucket grows with the number of distinct values clients send: the
//! sketch stops at 16 KB and each summary at `topk::CAPACITY` counters of 16 bytes, kept
//! by value id. The texts of values live once each in a values dictionary, which the
//! backends store beside the rollups.
//!
//! This module is the backend-independent half: which buckets an event lands in and
//! what a bucket holds. `plan` splits a range into buckets and raw scans; `sketch`
//! counts unique users; `topk` keeps a dimension's top values; `hash` gives users and
//! values their keyed ids.

pub(crate) mod hash;
pub(crate) mod plan;
pub(crate) mod sketch;
pub(crate) mod topk;

use std::collections::{BTreeMap, HashMap};

use crate::millis;
use crate::record::QueuedEvent;
use hash::Keys;
use sketch::Sketch;
use topk::TopK;

/// An hour in milliseconds.
pub(crate) const HOUR_MS: i64 = 3_600_000;
/// A day in milliseconds.
pub(crate) const DAY_MS: i64 = 24 * HOUR_MS;

/// A bucket's width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Granularity {
    /// One UTC hour.
    Hour,
    /// One UTC day.
    Day,
}

impl Granularity {
    /// The stored code.
    pub fn code(self) -> &'static str {
        match self {
            Self::Hour => "h",
            Self::Day => "d",
        }
    }
}

/// Which bucket. `event_type` is empty for the all-types bucket: real types never are.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BucketKey {
    /// The site.
    pub site_id: String,
    /// Hour or day.
    pub granularity: Granularity,
    /// The bucket's first millisecond since the epoch (UTC).
    pub start: i64,
    /// The event type, or `""` for all of them.
    pub event_type: String,
}

impl BucketKey {
    /// A unique string for the bucket, unambiguous whatever the site and type contain.
    pub fn id(&self) -> String {
        format!(
            "{}|{}|{}:{}|{}",
            self.granularity.code(),
            self.start,
            self.event_type.len(),
            self.event_type,
            self.site_id
        )
    }
}

/// A dimension that events are broken down by: its stored name and how to read it off
/// an event. Adding a dimension is adding an entry here.
#[derive(Debug, Clone, Copy)]
pub struct Dimension {
    /// The stored name.
    pub name: &'static str,
    /// The event's value, if it has one.
    pub value: for<'a> fn(&Counted<'a>) -> Option<&'a str>,
}

/// Every dimension rollups keep.
pub const DIMENSIONS: &[Dimension] = &[PATH];

/// The path, for `/stats`'s top paths.
pub const PATH: Dimension = Dimension {
    name: "path",
    value: |e| e.path,
};

/// What a bucket (or a whole range) holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rollup {
    /// Events.
    pub count: u64,
    /// Users, for those with a user.
    pub users: Sketch,
    /// Each dimension's top values, by dimension name.
    pub dims: BTreeMap<&'static str, TopK>,
}

impl Rollup {
    /// Adds another bucket's or batch's contents, keeping every summary bounded: what a
    /// stored bucket does.
    pub fn merge(&mut self, other: &Rollup) {
        self.count += other.count;
        self.users.merge(&other.users);
        for (name, top) in &other.dims {
            self.dims.entry(name).or_default().merge(top);
        }
    }

    /// Adds another bucket's contents, keeping every counter: what a query does.
    pub fn merge_unbounded(&mut self, other: &Rollup) {
        self.count += other.count;
        self.users.merge(&other.users);
        for (name, top) in &other.dims {
            self.dims.entry(name).or_default().merge_unbounded(top);
        }
    }
}

/// What a rollup needs of an event, borrowed from wherever the event is.
#[derive(Debug, Clone, Copy)]
pub struct Counted<'a> {
    /// The site.
    pub site_id: &'a str,
    /// The event type.
    pub event_type: &'a str,
    /// The path, if any.
    pub path: Option<&'a str>,
    /// The user, if any.
    pub user_id: Option<&'a str>,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
}

impl<'a> From<&'a QueuedEvent> for Counted<'a> {
    fn from(e: &'a QueuedEvent) -> Self {
        Self {
            site_id: &e.site_id,
            event_type: &e.event_type,
            path: e.path.as_deref(),
            user_id: e.user_id.as_deref(),
            timestamp: millis(e.timestamp),
        }
    }
}

/// What a batch adds: to each of its buckets, and to the values dictionary.
#[derive(Debug, Default)]
pub struct Contribution {
    /// The buckets and what each gains.
    pub buckets: BTreeMap<BucketKey, Rollup>,
    /// The texts of the values the batch counted, by id.
    pub values: HashMap<u64, String>,
}

/// The buckets a batch's events add to: four per event (its hour and day, each for its
/// type and for all types). Each event is tallied once, into its hour and type, under
/// borrowed keys; the four buckets are then merged from those tallies, so the cost per
/// event is one lookup and no copies.
pub fn rollups_of<'a>(keys: &Keys, events: impl IntoIterator<Item = Counted<'a>>) -> Contribution {
    let mut tallies: HashMap<(&'a str, &'a str, i64), Tally<'a>> = HashMap::new();
    for e in events {
        let hour_start = e.timestamp - e.timestamp.rem_euclid(HOUR_MS);
        let tally = tallies
            .entry((e.site_id, e.event_type, hour_start))
            .or_insert_with(|| Tally {
                count: 0,
                users: Vec::new(),
                dims: DIMENSIONS.iter().map(|_| HashMap::new()).collect(),
            });
        tally.count += 1;
        if let Some(user) = e.user_id {
            tally.users.push(keys.user(user));
        }
        for (dim, counts) in DIMENSIONS.iter().zip(&mut tally.dims) {
            if let Some(value) = (dim.value)(&e) {
                *counts.entry(value).or_default() += 1;
            }
        }
    }
    let mut out = Contribution::default();
    for ((site_id, event_type, hour_start), tally) in tallies {
        let mut hour = Rollup {
            count: tally.count,
            users: Sketch::from_hashes(tally.users),
            dims: BTreeMap::new(),
        };
        for (dim, counts) in DIMENSIONS.iter().zip(tally.dims) {
            if counts.is_empty() {
                continue;
            }
            let mut ids = HashMap::with_capacity(counts.len());
            for (value, n) in counts {
                let id = keys.value(value);
                ids.insert(id, n);
                out.values.entry(id).or_insert_with(|| value.to_owned());
            }
            hour.dims.insert(dim.name, TopK::from_counts(ids));
        }
        let day_start = hour_start - hour_start.rem_euclid(DAY_MS);
        for (granularity, start) in [
            (Granularity::Hour, hour_start),
            (Granularity::Day, day_start),
        ] {
            for event_type in [event_type, ""] {
                let key = BucketKey {
                    site_id: site_id.to_owned(),
                    granularity,
                    start,
                    event_type: event_type.to_owned(),
                };
                out.buckets.entry(key).or_default().merge(&hour);
            }
        }
    }
    out
}

/// One hour and type of a batch, before it becomes a [`Rollup`].
struct Tally<'a> {
    count: u64,
    users: Vec<u64>,
    /// Per dimension, in [`DIMENSIONS`]' order: each value's count.
    dims: Vec<HashMap<&'a str, u64>>,
}
