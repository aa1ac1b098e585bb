//! Answers from raw events: the range's events, read in time order through the
//! site-and-time index a page at a time, with a day and a half-hour before it (so that
//! a visit going on at its start is known) and a day after it (so that visits that
//! started in it are followed to their end). Visits are followed by the rules the
//! worker's rollups use (`rollup::visits`), from the first event read: a visitor active
//! without a half-hour break for over a day before the range is the one case where the
//! two can differ.
//!
//! Memory holds the visits still open (those with an event in the last half hour), the
//! rows, and for visitors counted once a day, which (day, visitor, row) were counted on
//! the days that can still be counted (those of the open visits and after): so a query
//! holds at most [`MAX_ROWS`] rows, and answers 400 beyond, asking for a filter or a
//! shorter range.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use beacon_protocol::query::Dimension;
use futures::TryStreamExt;

use super::Plan;
use super::filter::{Subject, VisitView, value_of};
use super::table::{Acc, Cell, Rows, Visitors};
use crate::rollup::DAY_MS;
use crate::rollup::hash::Keys;
use crate::rollup::sketch::Sketch;
use crate::rollup::visits::{GAP_MS, MAX_VISIT_MS};
use crate::{EventsPage, QueuedEvent, Result, Store, StoreError, millis};

/// Events read at a time: few, since each page is allocated and freed whole, and the
/// allocator keeps what was freed for a while (BENCHMARKS.md, (9)).
const PAGE: usize = 1000;
/// Most rows a raw query holds.
pub(super) const MAX_ROWS: usize = 200_000;

/// The rows of `plan`, and the range's distinct visitors (for `percentage`).
pub(super) async fn run(store: &Store, plan: &Plan) -> Result<(Rows, u64)> {
    let keys = store.hash_keys()?;
    let from = plan.span.from - MAX_VISIT_MS - GAP_MS;
    let to = plan.span.to.saturating_add(MAX_VISIT_MS);
    let first = EventsPage {
        site_id: plan.site_id.clone(),
        from: chrono::DateTime::from_timestamp_millis(from),
        to: chrono::DateTime::from_timestamp_millis(to),
        after: None,
        limit: PAGE,
    };
    let mut tally = Tally::new(plan, keys);
    let mut open: HashMap<String, Vec<QueuedEvent>> = HashMap::new();
    let mut pages = store.events(first);
    while let Some(events) = pages.try_next().await? {
        let now = events.last().map(|e| millis(e.timestamp));
        for e in events {
            let Some(user) = e.user_id.clone() else {
                tally.event(&e, None)?;
                continue;
            };
            let t = millis(e.timestamp);
            let visit = open.entry(user).or_default();
            let continues = match (visit.first(), visit.last()) {
                (Some(first), Some(last)) => {
                    t - millis(last.timestamp) <= GAP_MS
                        && t - millis(first.timestamp) < MAX_VISIT_MS
                }
                _ => true,
            };
            if !continues {
                tally.visit(&std::mem::take(visit))?;
            }
            visit.push(e);
        }
        // Visits without an event in the last half hour are over.
        if let Some(now) = now {
            let over: Vec<String> = open
                .iter()
                .filter(|(_, v)| v.last().is_some_and(|l| now - millis(l.timestamp) > GAP_MS))
                .map(|(u, _)| u.clone())
                .collect();
            for user in over {
                if let Some(visit) = open.remove(&user) {
                    tally.visit(&visit)?;
                }
            }
            // Later counts are at a visit still open, or at an event still to come.
            let oldest = open.values().filter_map(|v| v.first());
            let oldest = oldest.map(|e| millis(e.timestamp)).fold(now, i64::min);
            tally.forget_days_before(oldest);
        }
    }
    for visit in open.into_values() {
        tally.visit(&visit)?;
    }
    let all = tally.all_users.count();
    Ok((tally.rows, all))
}

/// The rows being added up.
struct Tally<'p> {
    plan: &'p Plan,
    keys: Keys,
    rows: Rows,
    /// (UTC day, visitor, row without time) counted already, for once-a-day visitors,
    /// from the day of `counted_from` on.
    counted: HashSet<(i64, u64, u64)>,
    /// The first UTC day `counted` still holds.
    counted_from: i64,
    /// Everyone with a counted event in the range.
    all_users: Sketch,
}

impl<'p> Tally<'p> {
    fn new(plan: &'p Plan, keys: Keys) -> Self {
        Self {
            plan,
            keys,
            rows: Rows::default(),
            counted: HashSet::new(),
            counted_from: i64::MIN,
            all_users: Sketch::default(),
        }
    }

    fn passes(&self, s: &Subject<'_>) -> bool {
        self.plan.filter.as_ref().is_none_or(|f| f.passes(s))
    }

    /// An event (in `visit`, if it has a user): counted among the range's visitors,
    /// and in rows of events.
    fn event(&mut self, e: &QueuedEvent, visit: Option<VisitView<'_>>) -> Result<()> {
        let subject = Subject { event: e, visit };
        let t = millis(e.timestamp);
        if t >= self.plan.span.to || !self.passes(&subject) {
            return Ok(());
        }
        let user = e.user_id.as_deref().map(|u| self.keys.user(u));
        if t < self.plan.span.from {
            // Before the range: counted already that UTC day, for once-a-day visitors.
            if let (Some(u), false) = (user, self.plan.by_visits) {
                if let Some(cells) = self.cells(&subject, t) {
                    self.first_today(t, u, &cells);
                }
            }
            return Ok(());
        }
        if let Some(u) = user {
            self.all_users.insert(u);
        }
        if self.plan.by_visits {
            return Ok(());
        }
        let Some(cells) = self.cells(&subject, t) else {
            return Ok(());
        };
        let first_today = user.is_some_and(|u| self.first_today(t, u, &cells));
        let acc = self.row(cells)?;
        acc.events += 1;
        acc.pageviews += i64::from(e.event_type == "page_view");
        if let Some(u) = user {
            acc.users.insert(u);
        }
        acc.daily_visitors += i64::from(first_today);
        Ok(())
    }

    /// A visit, whole: its events in the range, and itself if it started in the range.
    fn visit(&mut self, events: &[QueuedEvent]) -> Result<()> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(());
        };
        let exit_page = events
            .iter()
            .rev()
            .find(|e| e.event_type == "page_view")
            .and_then(|e| e.path.as_deref());
        let view = VisitView { first, exit_page };
        let matching: Vec<&QueuedEvent> = events
            .iter()
            .filter(|e| {
                self.passes(&Subject {
                    event: e,
                    visit: Some(view),
                })
            })
            .collect();
        for e in &matching {
            self.event(e, Some(view))?;
        }
        let start = millis(first.timestamp);
        if matching.is_empty() || start >= self.plan.span.to {
            return Ok(());
        }
        if start < self.plan.span.from {
            // Before the range: counted already that UTC day, for once-a-day visitors.
            let subject = Subject {
                event: first,
                visit: Some(view),
            };
            if let (true, Some(u), Some(cells)) = (
                self.plan.by_visits,
                first.user_id.as_deref().map(|u| self.keys.user(u)),
                self.cells(&subject, start),
            ) {
                self.first_today(start, u, &cells);
            }
            return Ok(());
        }
        let pageviews = events
            .iter()
            .filter(|e| e.event_type == "page_view")
            .count() as i64;
        let mut visit = Acc {
            visits: 1,
            bounces: i64::from(events.len() == 1 && pageviews == 1),
            duration_ms: millis(last.timestamp) - start,
            visit_pageviews: pageviews,
            ..Acc::default()
        };
        if self.plan.by_visits {
            let subject = Subject {
                event: first,
                visit: Some(view),
            };
            let Some(cells) = self.cells(&subject, start) else {
                return Ok(());
            };
            let user = first.user_id.as_deref().map(|u| self.keys.user(u));
            visit.pageviews = pageviews;
            visit.events = events.len() as i64;
            visit.daily_visitors =
                i64::from(user.is_some_and(|u| self.first_today(start, u, &cells)));
            self.row(cells)?.add(&visit);
            return Ok(());
        }
        // Rows of events: the visit counts once in each row that one of its matching
        // events is in (by time, in the row of its start).
        let mut rows: Vec<Vec<Cell>> = Vec::new();
        for e in &matching {
            let subject = Subject {
                event: e,
                visit: Some(view),
            };
            if let Some(cells) = self.cells(&subject, start) {
                if !rows.contains(&cells) {
                    rows.push(cells);
                }
            }
        }
        for cells in rows {
            self.row(cells)?.add(&visit);
        }
        Ok(())
    }

    /// The row of `s`, with time labelled by `t`; `None` if it lacks a dimension's value.
    fn cells(&self, s: &Subject<'_>, t: i64) -> Option<Vec<Cell>> {
        self.plan
            .dimensions
            .iter()
            .map(|d| match d {
                Dimension::Time(_) => self.plan.label(t).map(Cell::Text),
                other => value_of(other, s).map(|v| Cell::Text(v.into_owned())),
            })
            .collect()
    }

    fn row(&mut self, cells: Vec<Cell>) -> Result<&mut Acc> {
        if self.rows.len() >= MAX_ROWS && !self.rows.contains_key(&cells) {
            return Err(StoreError::BadQuery(format!(
                "the answer would have more than {MAX_ROWS} rows: add a filter or shorten the range"
            )));
        }
        Ok(self.rows.entry(cells).or_default())
    }

    /// Forgets what was counted on UTC days before that of `t`: events come in time
    /// order, so nothing before `t` is counted any more. This keeps `counted` to the
    /// visitors of a day or two, not of the whole range.
    fn forget_days_before(&mut self, t: i64) {
        let day = t - t.rem_euclid(DAY_MS);
        if day > self.counted_from {
            self.counted.retain(|(d, _, _)| *d >= day);
            self.counted_from = day;
        }
    }

    /// Whether the visitor `user` is counted now in the row `cells` (its time aside):
    /// the first time on the UTC day of `t`, as rollups count. Only for rows by value.
    /// So in a zone other than UTC, a visitor seen earlier in the UTC day, before the
    /// range, is not counted again in it.
    fn first_today(&mut self, t: i64, user: u64, cells: &[Cell]) -> bool {
        if self.plan.visitors == Visitors::Distinct {
            return false;
        }
        let mut hasher = DefaultHasher::new();
        for (d, c) in self.plan.dimensions.iter().zip(cells) {
            if !d.is_time() {
                c.hash(&mut hasher);
            }
        }
        let day = t - t.rem_euclid(DAY_MS);
        self.counted.insert((day, user, hasher.finish()))
    }
}
