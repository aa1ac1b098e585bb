//! Rollups: per site, per hour and per day, per event type and for all types together,
//! the event count, the count of each path, and a sketch of the users. The worker adds
//! each batch to its buckets as it moves it; `/stats` merges the buckets that tile the
//! asked range and scans raw events only for the parts of it that are not whole hours.
//!
//! This module is the backend-independent half: which buckets an event lands in, how
//! a range is split into buckets and raw scans, and how the pieces add up to [`Stats`].

use std::collections::{BTreeMap, HashMap};

use beacon_protocol::{PathCount, Stats, TimeRange};

use crate::millis;
use crate::record::QueuedEvent;
use crate::sketch::{Sketch, user_hash};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

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

/// A piece of a stats range, in epoch milliseconds, `to` exclusive; `None` is unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// Whole buckets starting in `[from, to)`.
    Buckets {
        /// Hour or day.
        granularity: Granularity,
        /// First bucket start, inclusive.
        from: Option<i64>,
        /// Last bucket end, exclusive.
        to: Option<i64>,
    },
    /// Raw events with timestamps in `[from, to)`: less than an hour at either end.
    Raw {
        /// Inclusive.
        from: i64,
        /// Exclusive.
        to: i64,
    },
}

/// Splits `[from, to)` into the fewest pieces: whole days in the middle, whole hours
/// next to them, raw events at the ragged ends.
pub fn plan(range: &TimeRange) -> Vec<Piece> {
    let from = range.from.map(millis);
    let to = range.to.map(millis);
    let ceil = |t: i64, w: i64| t + (w - t.rem_euclid(w)) % w;
    let floor = |t: i64, w: i64| t - t.rem_euclid(w);
    let mut pieces = Vec::new();
    // Days first: [first whole day, last whole day).
    let day_from = from.map(|f| ceil(f, DAY_MS));
    let day_to = to.map(|t| floor(t, DAY_MS));
    let days_exist = match (day_from, day_to) {
        (Some(a), Some(b)) => a < b,
        _ => true,
    };
    if !days_exist {
        // No whole day inside: hours and raw only, within [from, to).
        if let (Some(f), Some(t)) = (from, to) {
            hours_and_raw(f, t, &mut pieces);
        }
        return pieces;
    }
    if let (Some(f), Some(df)) = (from, day_from) {
        hours_and_raw(f, df, &mut pieces);
    }
    pieces.push(Piece::Buckets {
        granularity: Granularity::Day,
        from: day_from,
        to: day_to,
    });
    if let (Some(dt), Some(t)) = (day_to, to) {
        hours_and_raw(dt, t, &mut pieces);
    }
    pieces
}

/// `[from, to)` within at most a day and a bit: raw, whole hours, raw.
fn hours_and_raw(from: i64, to: i64, pieces: &mut Vec<Piece>) {
    if from >= to {
        return;
    }
    let hour_from = from + (HOUR_MS - from.rem_euclid(HOUR_MS)) % HOUR_MS;
    let hour_to = to - to.rem_euclid(HOUR_MS);
    if hour_from >= hour_to {
        pieces.push(Piece::Raw { from, to });
        return;
    }
    if from < hour_from {
        pieces.push(Piece::Raw {
            from,
            to: hour_from,
        });
    }
    pieces.push(Piece::Buckets {
        granularity: Granularity::Hour,
        from: Some(hour_from),
        to: Some(hour_to),
    });
    if hour_to < to {
        pieces.push(Piece::Raw { from: hour_to, to });
    }
}

/// The bucket type to read for a query: the event type, or all types.
pub fn bucket_type(range: &TimeRange) -> &str {
    range.event_type.as_deref().unwrap_or("")
}

/// Percent-encodes the characters MongoDB does not allow in field names (`.` and a
/// leading `$`), and `%` itself, so a path can be a key of the `paths` map.
pub fn path_key(path: &str) -> String {
    let mut key = String::with_capacity(path.len() + 1);
    key.push('p');
    for c in path.chars() {
        match c {
            '%' => key.push_str("%25"),
            '.' => key.push_str("%2E"),
            '$' => key.push_str("%24"),
            c => key.push(c),
        }
    }
    key
}

/// Reverses [`path_key`].
pub fn path_from_key(key: &str) -> Option<String> {
    let rest = key.strip_prefix('p')?;
    Some(
        rest.replace("%2E", ".")
            .replace("%24", "$")
            .replace("%25", "%"),
    )
}

/// Counts raw events into a rollup (the ragged ends of a range).
pub fn add_raw(
    rollup: &mut Rollup,
    rows: impl IntoIterator<Item = (Option<String>, Option<String>)>,
) {
    for (path, user) in rows {
        rollup.add(path.as_deref(), user.as_deref());
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    fn range(from: Option<i64>, to: Option<i64>) -> TimeRange {
        let at = |ms: i64| Utc.timestamp_millis_opt(ms).unwrap();
        TimeRange {
            site_id: "s".into(),
            from: from.map(at),
            to: to.map(at),
            event_type: None,
            limit: 10,
        }
    }

    #[test]
    fn whole_days_use_day_buckets_only() {
        assert_eq!(
            plan(&range(None, None)),
            [Piece::Buckets {
                granularity: Granularity::Day,
                from: None,
                to: None
            }]
        );
        assert_eq!(
            plan(&range(Some(DAY_MS), Some(8 * DAY_MS))),
            [Piece::Buckets {
                granularity: Granularity::Day,
                from: Some(DAY_MS),
                to: Some(8 * DAY_MS)
            }]
        );
    }

    #[test]
    fn ragged_ends_use_hours_then_raw() {
        let from = DAY_MS - 2 * HOUR_MS - 5;
        let to = 3 * DAY_MS + HOUR_MS + 7;
        assert_eq!(
            plan(&range(Some(from), Some(to))),
            [
                Piece::Raw {
                    from,
                    to: DAY_MS - 2 * HOUR_MS
                },
                Piece::Buckets {
                    granularity: Granularity::Hour,
                    from: Some(DAY_MS - 2 * HOUR_MS),
                    to: Some(DAY_MS)
                },
                Piece::Buckets {
                    granularity: Granularity::Day,
                    from: Some(DAY_MS),
                    to: Some(3 * DAY_MS)
                },
                Piece::Buckets {
                    granularity: Granularity::Hour,
                    from: Some(3 * DAY_MS),
                    to: Some(3 * DAY_MS + HOUR_MS)
                },
                Piece::Raw {
                    from: 3 * DAY_MS + HOUR_MS,
                    to
                },
            ]
        );
        // Inside one hour: raw only. Open ends keep their days.
        assert_eq!(
            plan(&range(Some(10), Some(20))),
            [Piece::Raw { from: 10, to: 20 }]
        );
        assert_eq!(
            plan(&range(None, Some(DAY_MS + 1))),
            [
                Piece::Buckets {
                    granularity: Granularity::Day,
                    from: None,
                    to: Some(DAY_MS)
                },
                Piece::Raw {
                    from: DAY_MS,
                    to: DAY_MS + 1
                },
            ]
        );
        // Before 1970 too.
        assert_eq!(
            plan(&range(Some(-DAY_MS - 1), Some(-DAY_MS + HOUR_MS))),
            [
                Piece::Raw {
                    from: -DAY_MS - 1,
                    to: -DAY_MS
                },
                Piece::Buckets {
                    granularity: Granularity::Hour,
                    from: Some(-DAY_MS),
                    to: Some(-DAY_MS + HOUR_MS)
                },
            ]
        );
    }

    #[test]
    fn path_keys_round_trip() {
        for p in ["/a.b/$c%2E", "", "/", "$x", "%"] {
            let key = path_key(p);
            assert!(!key.contains('.') && !key.starts_with('$'));
            assert_eq!(path_from_key(&key).unwrap(), p);
        }
    }
}
