//! Rollups: per site, per hour and per day, per event type and for all types together,
//! the event count, a sketch of the users, and for each event dimension (path, host) a
//! bounded summary of its most frequent values with their visitors. Beside them, visit
//! buckets ([`VISIT_BUCKET`]) count the visits that started in the hour or day: their
//! bounces, time and page views, in all and by each of the visit's attributes (entry
//! page, source, device, country…; see `visits`). The worker adds each batch to its
//! buckets as it moves it; `/stats` and the query API merge the buckets that tile the
//! asked range and scan raw events only for what buckets cannot answer.
//!
//! Nothing in a bucket grows with the number of distinct values clients send: the
//! sketch stops at 16 KB and each summary at `topk::CAPACITY` counters of 16 bytes, kept
//! by value id. The texts of values live once each in a values dictionary, which the
//! backends store beside the rollups.
//!
//! This module is the backend-independent half: which buckets an event lands in and
//! what a bucket holds. `plan` splits a range into buckets and raw scans; `sketch`
//! counts unique users; `topk` keeps a dimension's top values; `hash` gives users and
//! values their keyed ids; `visits` follows each visitor's visit.

pub(crate) mod bytes;
pub(crate) mod hash;
pub(crate) mod plan;
pub(crate) mod sketch;
pub(crate) mod topk;
pub(crate) mod visits;

use std::collections::BTreeMap;

use ahash::AHashMap as HashMap;

use crate::millis;
use crate::record::QueuedEvent;
use hash::Keys;
use sketch::Sketch;
use topk::{Counters, EXTRAS, TopK};

/// A [`Dimension`] from its name and reader.
macro_rules! dim {
    ($name:literal, $value:expr) => {
        Dimension {
            name: $name,
            value: $value,
        }
    };
}

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

/// The `event_type` of visit buckets. Real types cannot hold control characters.
pub const VISIT_BUCKET: &str = "\u{1}visits";

/// Which bucket. `event_type` is empty for the all-types bucket (real types never are),
/// and [`VISIT_BUCKET`] for visits.
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

/// A dimension that events or visits are broken down by: its stored name and how to
/// read it off an event (a visit's, off its first event). Adding a dimension is adding
/// an entry here.
#[derive(Debug, Clone, Copy)]
pub struct Dimension {
    /// The stored name.
    pub name: &'static str,
    /// The event's value, if it has one.
    pub value: fn(&QueuedEvent) -> Option<&str>,
}

/// The side counters of summaries and buckets (see `topk::Counters`): distinct visitors
/// (each counted once a UTC day), and for visits, bounces, milliseconds, page views and
/// events.
pub const VISITORS: usize = 0;
/// Visits with one page view and nothing else.
pub const BOUNCES: usize = 1;
/// Milliseconds from each visit's first event to its last.
pub const DURATION_MS: usize = 2;
/// Page views within the visits.
pub const PAGEVIEWS: usize = 3;
/// Events within the visits.
pub const EVENTS: usize = 4;

/// The side counters' stored names, by index.
pub const EXTRA_NAMES: [&str; EXTRAS] =
    ["visitors", "bounces", "duration_ms", "pageviews", "events"];

/// The path, for `/stats`'s top paths.
pub const PATH: Dimension = dim!("path", |e| e.path.as_deref());

/// The dimensions of events, in every event bucket.
pub const EVENT_DIMS: &[Dimension] = &[PATH, dim!("hostname", |e| e.context.hostname.as_deref())];

/// The dimensions of visits, in visit buckets: the attributes of each visit's first
/// event.
pub const VISIT_DIMS: &[Dimension] = &[
    dim!("entry_page", |e| e.path.as_deref()),
    dim!("source", |e| e.context.source.as_deref()),
    dim!("referrer", |e| e.context.referrer.as_deref()),
    dim!("channel", |e| e.context.channel.as_deref()),
    dim!("utm_source", |e| e.context.utm_source.as_deref()),
    dim!("utm_medium", |e| e.context.utm_medium.as_deref()),
    dim!("utm_campaign", |e| e.context.utm_campaign.as_deref()),
    dim!("utm_content", |e| e.context.utm_content.as_deref()),
    dim!("utm_term", |e| e.context.utm_term.as_deref()),
    dim!("device", |e| e.context.device.as_deref()),
    dim!("browser", |e| e.context.browser.as_deref()),
    dim!("browser_version", |e| e.context.browser_version.as_deref()),
    dim!("os", |e| e.context.os.as_deref()),
    dim!("os_version", |e| e.context.os_version.as_deref()),
    dim!("country", |e| e.context.country.as_deref()),
];

/// What a bucket (or a whole range) holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rollup {
    /// Events; in a visit bucket, visits.
    pub count: u64,
    /// Users, for those with a user.
    pub users: Sketch,
    /// Side counters of the whole bucket (in visit buckets: bounces, time, page views,
    /// events).
    pub extra: [i64; EXTRAS],
    /// Each dimension's top values, by dimension name.
    pub dims: BTreeMap<&'static str, TopK>,
}

impl Rollup {
    /// Adds another bucket's or batch's contents, keeping every summary bounded: what a
    /// stored bucket does.
    pub fn merge(&mut self, other: &Rollup) {
        self.add_totals(other);
        for (name, top) in &other.dims {
            self.dims.entry(name).or_default().merge(top);
        }
    }

    /// Adds another bucket's contents, keeping every counter: what a query does.
    pub fn merge_unbounded(&mut self, other: &Rollup) {
        self.add_totals(other);
        for (name, top) in &other.dims {
            self.dims.entry(name).or_default().merge_unbounded(top);
        }
    }

    fn add_totals(&mut self, other: &Rollup) {
        self.count += other.count;
        self.users.merge(&other.users);
        for (mine, theirs) in self.extra.iter_mut().zip(other.extra) {
            *mine += theirs;
        }
    }

    /// Adds counters to one value of a dimension, unbounded: for building a batch's
    /// contribution.
    pub fn add_to_value(&mut self, dim: &'static str, id: u64, counters: &Counters) {
        self.dims.entry(dim).or_default().add(id, counters);
    }
}

/// Which stored buckets to read: of one site and granularity, starting in `[from, to)`
/// (unbounded where `None`), of some types, with or without their users' sketches and
/// one dimension's summaries.
#[derive(Debug, Clone)]
pub(crate) struct BucketRead {
    pub(crate) site_id: String,
    pub(crate) granularity: Granularity,
    pub(crate) from: Option<i64>,
    pub(crate) to: Option<i64>,
    pub(crate) types: BucketTypes,
    /// Read the users' sketches (up to 16 KB a bucket): only when visitors are counted.
    pub(crate) users: bool,
    /// The dimension whose summaries to read, if any.
    pub(crate) dim: Option<&'static str>,
}

impl BucketRead {
    /// What `/stats` reads: one event type's totals, users and top paths.
    pub(crate) fn for_stats(
        site_id: &str,
        granularity: Granularity,
        from: Option<i64>,
        to: Option<i64>,
        event_type: &str,
    ) -> Self {
        Self {
            site_id: site_id.to_owned(),
            granularity,
            from,
            to,
            types: BucketTypes::These(vec![event_type.to_owned()]),
            users: true,
            dim: Some(PATH.name),
        }
    }
}

/// Bucket types to read.
#[derive(Debug, Clone)]
pub(crate) enum BucketTypes {
    /// These (`""` for all types, [`VISIT_BUCKET`] for visits).
    These(Vec<String>),
    /// Every event type's own buckets: neither all types nor visits.
    EventTypes,
}

impl BucketTypes {
    /// Whether buckets of `event_type` are wanted.
    pub(crate) fn wants(&self, event_type: &str) -> bool {
        match self {
            Self::These(types) => types.iter().any(|t| t == event_type),
            Self::EventTypes => !event_type.is_empty() && event_type != VISIT_BUCKET,
        }
    }
}

/// A bucket as read.
#[derive(Debug, Clone)]
pub(crate) struct StoredBucket {
    pub(crate) event_type: String,
    pub(crate) start: i64,
    pub(crate) rollup: Rollup,
}

/// What a batch adds: to each of its buckets, and to the values dictionary.
#[derive(Debug, Default)]
pub struct Contribution {
    /// The buckets and what each gains.
    pub buckets: BTreeMap<BucketKey, Rollup>,
    /// The texts of the values the batch counted, by id.
    pub values: HashMap<u64, String>,
}

/// The event buckets a batch's events add to: four per event (its hour and day, each for its
/// type and for all types). Each event is tallied once, into its hour and type, under
/// borrowed keys; the four buckets are then merged from those tallies, so the cost per
/// event is one lookup and no copies.
pub fn rollups_of<'a>(
    keys: &Keys,
    events: impl IntoIterator<Item = &'a QueuedEvent>,
) -> Contribution {
    let mut tallies: HashMap<(&'a str, &'a str, i64), Tally<'a>> = HashMap::new();
    for e in events {
        let hour_start = hour_of(millis(e.timestamp));
        let tally = tallies
            .entry((&e.site_id, &e.event_type, hour_start))
            .or_insert_with(|| Tally {
                count: 0,
                users: Vec::new(),
                dims: EVENT_DIMS.iter().map(|_| HashMap::new()).collect(),
            });
        tally.count += 1;
        if let Some(user) = &e.user_id {
            tally.users.push(keys.user(user));
        }
        for (dim, counts) in EVENT_DIMS.iter().zip(&mut tally.dims) {
            if let Some(value) = (dim.value)(e) {
                *counts.entry(value).or_default() += 1;
            }
        }
    }
    let mut out = Contribution::default();
    for ((site_id, event_type, hour_start), tally) in tallies {
        let mut hour = Rollup {
            count: tally.count,
            users: Sketch::from_hashes(tally.users),
            ..Rollup::default()
        };
        for (dim, counts) in EVENT_DIMS.iter().zip(tally.dims) {
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
        for key in bucket_keys(site_id, &[event_type, ""], hour_start) {
            out.buckets.entry(key).or_default().merge(&hour);
        }
    }
    out
}

/// The start of the UTC hour of a moment, in epoch milliseconds.
pub(crate) fn hour_of(t: i64) -> i64 {
    t - t.rem_euclid(HOUR_MS)
}

/// The hour and day buckets, of each of `event_types`, that a moment in the hour
/// starting at `hour_start` falls in.
pub(crate) fn bucket_keys<'k>(
    site_id: &'k str,
    event_types: &'k [&'k str],
    hour_start: i64,
) -> impl Iterator<Item = BucketKey> + 'k {
    let day_start = hour_start - hour_start.rem_euclid(DAY_MS);
    [
        (Granularity::Hour, hour_start),
        (Granularity::Day, day_start),
    ]
    .into_iter()
    .flat_map(move |(granularity, start)| {
        event_types.iter().map(move |event_type| BucketKey {
            site_id: site_id.to_owned(),
            granularity,
            start,
            event_type: (*event_type).to_owned(),
        })
    })
}

/// One hour and type of a batch, before it becomes a [`Rollup`].
struct Tally<'a> {
    count: u64,
    users: Vec<u64>,
    /// Per dimension, in [`EVENT_DIMS`]' order: each value's count.
    dims: Vec<HashMap<&'a str, u64>>,
}
