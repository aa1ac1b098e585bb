//! Visits, followed as the worker moves batches: each visitor's visit so far is kept
//! in a small state (per site and user), and each batch adds to the visit buckets what
//! it changed. A visit is one user's events on one site with no gap over 30 minutes
//! (Plausible's definition), and at most a day long. It belongs to the hour and day
//! of its first event, and its attributes (entry page, source, device, country…) are
//! that event's.
//!
//! What each event adds, to the buckets of its visit's start:
//! - one that starts a visit: a visit; a bounce if it is a page view (a visit with one
//!   page view and nothing else is a bounce); itself and its page view;
//! - one that continues a visit: the time it adds; a bounce less if the visit was one
//!   until then; itself and its page view. Only side counters change, never the visit count, so
//!   rollups stay a sum of what batches added.
//!
//! Events are followed per visitor in timestamp order within a batch, and batches in
//! the order they are moved, as a client sends them. An event older than its visitor's
//! current visit (a late one from a retried send, say) is counted as a visit of its own
//! and changes nothing else; the query API's raw scans, which see every event in order,
//! are the reference.
//!
//! Visitors by value (by page, by source…) are counted once per UTC day: the state
//! remembers which (bucket, dimension, value) it counted today, up to [`SEEN_CAP`].
//! Over several days a breakdown's visitors are the sum of its days' (the same as
//! Plausible's for cookieless visitors, whose ids change daily).
//!
//! Cookieless visitors' ids change at midnight (UTC), with the salt. An event sent in
//! the first half hour of a day carries the visitor's id of the day before
//! (`continues`); when that id has a visit going and the new one has none, the event
//! takes the old id, so the visit goes on ([`continuations`]).

mod state;
#[cfg(test)]
mod tests;

use ahash::{AHashMap as HashMap, AHashSet as HashSet};

use uuid::Uuid;

use super::hash::Keys;
use super::topk::{Counters, EXTRAS};
use super::{
    BOUNCES, BucketKey, Contribution, DAY_MS, DURATION_MS, EVENT_DIMS, EVENTS, HOUR_MS, PAGEVIEWS,
    VISIT_BUCKET, VISIT_DIMS, VISITORS, bucket_keys, hour_of,
};
use crate::millis;
use crate::record::QueuedEvent;

pub use state::VisitState;

/// The longest gap within a visit.
pub const GAP_MS: i64 = 30 * 60 * 1000;
/// The longest visit: a visitor active for longer starts a new one.
pub const MAX_VISIT_MS: i64 = 24 * HOUR_MS;
/// Most (bucket, dimension, value) a state remembers as counted today; beyond, a
/// visitor's further values are counted without being remembered.
pub const SEEN_CAP: usize = 1024;

/// Whose state: site and user.
pub type Visitor = (String, String);
/// Visitors' states, as a move reads and updates them.
pub type States = HashMap<Visitor, VisitState>;

/// The visitors whose states a batch needs: those of its events, and the ids of the
/// day before that cookieless events may continue.
pub fn visitors_of<'a>(events: impl IntoIterator<Item = &'a QueuedEvent>) -> Vec<Visitor> {
    // Deduplicated as borrowed strings, then sorted: a batch has many events per
    // visitor, and only the distinct ones are copied and sorted.
    let distinct: HashSet<(&str, &str)> = events
        .into_iter()
        .flat_map(|e| {
            let user = e.user_id.iter().chain(&e.continues);
            user.map(|u| (e.site_id.as_str(), u.as_str()))
        })
        .collect();
    let mut out: Vec<Visitor> = distinct
        .into_iter()
        .map(|(site, user)| (site.to_owned(), user.to_owned()))
        .collect();
    out.sort_unstable();
    out
}

/// The events that continue a visit of the day before under its id: those whose
/// `continues` id has a visit going at their time while their own id has none. Answers
/// each such event's id and the user it takes.
pub fn continuations(events: &[QueuedEvent], states: &States) -> Vec<(Uuid, String)> {
    let mut taken: HashMap<(&str, &str), &str> = HashMap::new();
    let mut out = Vec::new();
    let mut order: Vec<&QueuedEvent> = events.iter().filter(|e| e.continues.is_some()).collect();
    order.sort_by_key(|e| (millis(e.timestamp), e.event_id));
    for e in order {
        let (Some(user), Some(previous)) = (&e.user_id, &e.continues) else {
            continue;
        };
        let t = millis(e.timestamp);
        let key = (e.site_id.as_str(), user.as_str());
        if let Some(prev) = taken.get(&key) {
            out.push((e.event_id, (*prev).to_owned()));
            continue;
        }
        let own = states.get(&(e.site_id.clone(), user.clone()));
        let old = states.get(&(e.site_id.clone(), previous.clone()));
        if own.is_none_or(|s| !s.alive_at(t)) && old.is_some_and(|s| s.alive_at(t)) {
            taken.insert(key, previous);
            out.push((e.event_id, previous.clone()));
        }
    }
    out
}

/// Follows the visits of `events` (a batch's counted events, continuations applied)
/// from `states` (updated in place; a visitor without one has no visit going) and adds
/// what they change to `out`: the visit buckets, and the visitors of event dimensions'
/// values. Events without a user are in no visit.
pub fn add_visits(
    keys: &Keys,
    events: &[&QueuedEvent],
    states: &mut States,
    out: &mut Contribution,
) {
    let mut by_visitor: HashMap<(&str, &str), Vec<&QueuedEvent>> = HashMap::new();
    for e in events {
        if let Some(user) = &e.user_id {
            by_visitor.entry((&e.site_id, user)).or_default().push(e);
        }
    }
    for ((site, user), mut events) in by_visitor {
        events.sort_by_key(|e| (millis(e.timestamp), e.event_id));
        let state = states.entry((site.to_owned(), user.to_owned()));
        let state = state.or_default();
        let mut follower = Follower {
            keys,
            site,
            state,
            out,
            gained: None,
        };
        for e in events {
            follower.follow(e);
        }
        follower.add_gained();
    }
}

/// One visitor's events through their state.
struct Follower<'a, 'k> {
    keys: &'k Keys,
    site: &'a str,
    /// `events == 0`: no visit going.
    state: &'a mut VisitState,
    out: &'a mut Contribution,
    /// What the visit going gained and its buckets have not yet: added once for all
    /// of a visitor's events that continue it, rather than event by event.
    gained: Option<Counters>,
}

impl Follower<'_, '_> {
    fn follow(&mut self, e: &QueuedEvent) {
        let t = millis(e.timestamp);
        let day = t - t.rem_euclid(DAY_MS);
        if self.state.day < day {
            self.state.day = day;
            self.state.seen.clear();
        }
        let today = self.state.day == day;
        let pageview = i64::from(e.event_type == "page_view");
        let s = &mut *self.state;
        if s.events > 0 && s.continued_by(t) {
            let (bounce, last) = (s.bounce(), s.last);
            s.events += 1;
            s.pageviews += u32::from(pageview == 1);
            s.last = t;
            let delta = side(s.bounce() - bounce, t - last, pageview);
            self.add_to_visit(delta);
        } else if s.events > 0 && t < s.last && t >= s.start {
            // Late, within the visit: it adds no time.
            let bounce = s.bounce();
            s.events += 1;
            s.pageviews += u32::from(pageview == 1);
            let delta = side(s.bounce() - bounce, 0, pageview);
            self.add_to_visit(delta);
        } else if s.events > 0 && t < s.start {
            // Older than the visit going: a visit of its own, which changes no state.
            let attrs = self.attrs_of(e);
            self.start_visit(e, &attrs, pageview, today);
        } else {
            self.add_gained();
            let attrs = self.attrs_of(e);
            let s = &mut *self.state;
            s.start = t;
            s.last = t;
            s.events = 1;
            s.pageviews = u32::from(pageview == 1);
            s.attrs.clone_from(&attrs);
            self.start_visit(e, &attrs, pageview, today);
        }
        self.count_event_visitors(e, today);
    }

    /// The value ids of a visit's attributes, recording their texts.
    fn attrs_of(&mut self, e: &QueuedEvent) -> Vec<u64> {
        VISIT_DIMS
            .iter()
            .map(|dim| match (dim.value)(e) {
                Some(text) => {
                    let id = self.keys.value(text);
                    self.out.values.entry(id).or_insert_with(|| text.to_owned());
                    id
                }
                None => 0,
            })
            .collect()
    }

    /// A visit that starts with `e`: its buckets gain a visit, by each attribute too.
    fn start_visit(&mut self, e: &QueuedEvent, attrs: &[u64], pageview: i64, today: bool) {
        let t = millis(e.timestamp);
        let mut totals = Counters::count(1);
        totals.extra = side(pageview, 0, pageview).extra;
        for key in self.visit_buckets(t) {
            let bucket = self.out.buckets.entry(key).or_default();
            bucket.count += 1;
            add_extra(&mut bucket.extra, &totals.extra);
        }
        for (dim, id) in VISIT_DIMS.iter().zip(attrs) {
            if *id == 0 {
                continue;
            }
            let mut counters = totals;
            counters.extra[VISITORS] =
                i64::from(self.first_today(VISIT_BUCKET, dim.name, *id, today));
            for key in self.visit_buckets(t) {
                self.out
                    .buckets
                    .entry(key)
                    .or_default()
                    .add_to_value(dim.name, *id, &counters);
            }
        }
    }

    /// Adds a change to the visit going (see `gained`).
    fn add_to_visit(&mut self, delta: Counters) {
        match &mut self.gained {
            Some(gained) => gained.add(&delta),
            None => self.gained = Some(delta),
        }
    }

    /// Adds what the visit going gained to its buckets, in all and by its attributes:
    /// before the state moves to another visit, and after a visitor's last event.
    fn add_gained(&mut self) {
        let Some(delta) = self.gained.take() else {
            return;
        };
        let start = self.state.start;
        let attrs = self.state.attrs.clone();
        for key in self.visit_buckets(start) {
            let bucket = self.out.buckets.entry(key).or_default();
            add_extra(&mut bucket.extra, &delta.extra);
            for (dim, id) in VISIT_DIMS.iter().zip(&attrs) {
                if *id != 0 {
                    bucket.add_to_value(dim.name, *id, &delta);
                }
            }
        }
    }

    /// Counts the visitor for each event dimension's value of `e`, once a day per
    /// bucket type.
    fn count_event_visitors(&mut self, e: &QueuedEvent, today: bool) {
        let t = millis(e.timestamp);
        for dim in EVENT_DIMS {
            let Some(text) = (dim.value)(e) else {
                continue;
            };
            let id = self.keys.value(text);
            for event_type in [e.event_type.as_str(), ""] {
                if !self.first_today(event_type, dim.name, id, today) {
                    continue;
                }
                let mut visitor = Counters::default();
                visitor.extra[VISITORS] = 1;
                let types = [event_type];
                let keys: Vec<BucketKey> = bucket_keys(self.site, &types, hour_of(t)).collect();
                for key in keys {
                    self.out
                        .buckets
                        .entry(key)
                        .or_default()
                        .add_to_value(dim.name, id, &visitor);
                }
            }
        }
    }

    /// Whether the visitor is counted for this value now: the first time today, or
    /// always for an event of an earlier day (which the state no longer remembers).
    fn first_today(&mut self, bucket: &str, dim: &str, id: u64, today: bool) -> bool {
        if !today {
            return true;
        }
        let key = seen_key(self.keys, bucket, dim, id);
        if self.state.seen.contains(&key) {
            return false;
        }
        if self.state.seen.len() < SEEN_CAP {
            self.state.seen.insert(key);
        }
        true
    }

    /// The hour and day visit buckets of a visit that started at `start`.
    fn visit_buckets(&self, start: i64) -> Vec<BucketKey> {
        bucket_keys(self.site, &[VISIT_BUCKET], hour_of(start)).collect()
    }
}

/// Side counters for a change of a visit by one event: bounces, milliseconds, page views
/// (and the event).
fn side(bounces: i64, duration_ms: i64, pageviews: i64) -> Counters {
    let mut c = Counters::default();
    c.extra[BOUNCES] = bounces;
    c.extra[DURATION_MS] = duration_ms;
    c.extra[PAGEVIEWS] = pageviews;
    c.extra[EVENTS] = 1;
    c
}

fn add_extra(to: &mut [i64; EXTRAS], delta: &[i64; EXTRAS]) {
    for (t, d) in to.iter_mut().zip(delta) {
        *t += d;
    }
}

/// The key under which a (bucket type, dimension, value) is remembered as counted.
fn seen_key(keys: &Keys, bucket: &str, dim: &str, id: u64) -> u64 {
    keys.value(bucket) ^ keys.value(dim).rotate_left(17) ^ id.rotate_left(31)
}
