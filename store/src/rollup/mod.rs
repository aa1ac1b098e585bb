//! Rollups: per site, per hour and per day, per event type and for all types together,
//! the event count, the count of each path, and a sketch of the users. The worker adds
//! each batch to its buckets as it moves it; `/stats` merges the buckets that tile the
//! asked range and scans raw events only for the parts of it that are not whole hours.
//!
//! This module is the backend-independent half: which buckets an event lands in and
//! what a bucket holds. `plan` splits a range into buckets and raw scans; `sketch`
//! counts unique users.

pub(crate) mod plan;
pub(crate) mod sketch;

use std::collections::{BTreeMap, HashMap};

use beacon_protocol::{PathCount, Stats};

use crate::millis;
use crate::record::QueuedEvent;
use sketch::{Sketch, user_hash};

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

/// What a bucket (or a whole range) holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rollup {
    /// Events.
    pub count: u64,
    /// Events per path, for those with a path.
    pub paths: HashMap<String, u64>,
    /// Users, for those with a user.
    pub users: Sketch,
}

impl Rollup {
    /// Counts one event.
    pub fn add(&mut self, path: Option<&str>, user_id: Option<&str>) {
        self.count += 1;
        if let Some(path) = path {
            self.add_path(path, 1);
        }
        if let Some(user) = user_id {
            self.users.insert(user_hash(user));
        }
    }

    /// Adds another bucket's contents.
    pub fn merge(&mut self, other: &Rollup) {
        if *self == Rollup::default() {
            other.clone_into(self);
            return;
        }
        self.count += other.count;
        for (path, n) in &other.paths {
            self.add_path(path, *n);
        }
        self.users.merge(&other.users);
    }

    /// Copies the path only the first time it is seen.
    fn add_path(&mut self, path: &str, n: u64) {
        match self.paths.get_mut(path) {
            Some(count) => *count += n,
            None => {
                self.paths.insert(path.to_owned(), n);
            }
        }
    }

    /// The answer to `/stats`: top paths by count, ties by path.
    pub fn into_stats(self, limit: u32) -> Stats {
        let mut top: Vec<PathCount> = self
            .paths
            .into_iter()
            .map(|(path, count)| PathCount { path, count })
            .collect();
        top.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.path.cmp(&b.path)));
        top.truncate(limit as usize);
        Stats {
            total_events: self.count,
            unique_users: self.users.count(),
            top_paths: top,
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

/// The buckets a batch's events add to: four per event (its hour and day, each for its
/// type and for all types). Each event is tallied once, into its hour and type, under
/// borrowed keys; the four buckets are then merged from those tallies, so the cost per
/// event is one lookup and no copies.
pub fn rollups_of<'a>(
    events: impl IntoIterator<Item = Counted<'a>>,
) -> BTreeMap<BucketKey, Rollup> {
    let mut tallies: HashMap<(&'a str, &'a str, i64), Tally<'a>> = HashMap::new();
    for e in events {
        let hour_start = e.timestamp - e.timestamp.rem_euclid(HOUR_MS);
        let tally = tallies
            .entry((e.site_id, e.event_type, hour_start))
            .or_default();
        tally.count += 1;
        if let Some(path) = e.path {
            *tally.paths.entry(path).or_default() += 1;
        }
        if let Some(user) = e.user_id {
            tally.users.push(user_hash(user));
        }
    }
    let mut buckets: BTreeMap<BucketKey, Rollup> = BTreeMap::new();
    for ((site_id, event_type, hour_start), tally) in tallies {
        let hour = Rollup {
            count: tally.count,
            paths: tally
                .paths
                .into_iter()
                .map(|(path, n)| (path.to_owned(), n))
                .collect(),
            users: Sketch::from_hashes(tally.users),
        };
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
                buckets.entry(key).or_default().merge(&hour);
            }
        }
    }
    buckets
}

/// One hour and type of a batch, before it becomes a [`Rollup`].
#[derive(Default)]
struct Tally<'a> {
    count: u64,
    paths: HashMap<&'a str, u64>,
    users: Vec<u64>,
}
