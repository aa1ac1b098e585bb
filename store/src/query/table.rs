//! A query's rows: what each adds up, the metrics worked out from that, their order and
//! the page of them that is answered.
//!
//! Metric definitions (the README's Analytics section says the same):
//! - `visitors`: distinct users. Broken down by a value (a page, a source…), a visitor
//!   counts once a UTC day per value, and days add up;
//! - `visits`: visits that started in the range; `bounce_rate`: the percentage of them
//!   with one page view and nothing else; `visit_duration`: their mean length in
//!   seconds (last event minus first; a bounce is 0); `views_per_visit`: their page
//!   views per visit;
//! - `pageviews`, `events`: page views and events in the range; broken down by a visit
//!   attribute, those of the visits counted;
//! - `percentage`: a row's visitors in percent of the range's.

use std::cmp::Ordering;
use std::collections::HashMap;

use beacon_protocol::query::{Dimension, Direction, Metric};
use serde_json::Value;

use crate::rollup::sketch::Sketch;

/// One dimension value of a row: text, or a value id whose text the dictionary holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Cell {
    Text(String),
    Id(u64),
}

/// What a row adds up.
#[derive(Debug, Clone, Default)]
pub(crate) struct Acc {
    /// Distinct visitors.
    pub(crate) users: Sketch,
    /// Visitors counted once a day per value.
    pub(crate) daily_visitors: i64,
    pub(crate) events: i64,
    pub(crate) pageviews: i64,
    pub(crate) visits: i64,
    pub(crate) bounces: i64,
    pub(crate) duration_ms: i64,
    /// Page views of the visits counted, for `views_per_visit`.
    pub(crate) visit_pageviews: i64,
}

impl Acc {
    /// Adds another's counts.
    pub(crate) fn add(&mut self, other: &Acc) {
        self.users.merge(&other.users);
        self.daily_visitors += other.daily_visitors;
        self.events += other.events;
        self.pageviews += other.pageviews;
        self.visits += other.visits;
        self.bounces += other.bounces;
        self.duration_ms += other.duration_ms;
        self.visit_pageviews += other.visit_pageviews;
    }
}

/// How a query counts visitors in its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Visitors {
    Distinct,
    Daily,
}

/// Rows keyed by their dimension values. A top-pages query adds up to a thousand values
/// per bucket read, so hashing is much of its time: aHash rather than SipHash, still keyed
/// at random per process, since raw rows are keyed by texts that clients send.
pub(crate) type Rows = HashMap<Vec<Cell>, Acc, ahash::RandomState>;

/// A row with its metrics worked out.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) cells: Vec<Cell>,
    pub(crate) values: Vec<f64>,
}

/// Works out `metrics` for each row; `all_visitors` is the range's, for `percentage`.
pub(crate) fn evaluate(
    rows: Rows,
    metrics: &[Metric],
    visitors: Visitors,
    all_visitors: u64,
) -> Vec<Row> {
    rows.into_iter()
        .map(|(cells, acc)| Row {
            values: metrics
                .iter()
                .map(|m| value(*m, &acc, visitors, all_visitors))
                .collect(),
            cells,
        })
        .collect()
}

fn value(metric: Metric, acc: &Acc, visitors: Visitors, all_visitors: u64) -> f64 {
    let visitor_count = match visitors {
        Visitors::Distinct => acc.users.count() as f64,
        Visitors::Daily => acc.daily_visitors as f64,
    };
    let per_visit = |n: i64| {
        if acc.visits > 0 {
            n as f64 / acc.visits as f64
        } else {
            0.0
        }
    };
    match metric {
        Metric::Visitors => visitor_count,
        Metric::Visits => acc.visits as f64,
        Metric::Pageviews => acc.pageviews as f64,
        Metric::Events => acc.events as f64,
        Metric::BounceRate => (per_visit(acc.bounces) * 100.0).round(),
        Metric::VisitDuration => (per_visit(acc.duration_ms) / 1000.0).round(),
        Metric::ViewsPerVisit => (per_visit(acc.visit_pageviews) * 100.0).round() / 100.0,
        Metric::Percentage if all_visitors > 0 => {
            (visitor_count * 1000.0 / all_visitors as f64).round() / 10.0
        }
        Metric::Percentage => 0.0,
    }
}

/// A metric's value as JSON: whole numbers as integers, ratios as decimals.
pub(crate) fn json(metric: Metric, v: f64) -> Value {
    match metric {
        Metric::ViewsPerVisit | Metric::Percentage => Value::from(v),
        _ => Value::from(v as i64),
    }
}

/// One key of the order.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Key {
    Metric(usize, Direction),
    Dimension(usize, Direction),
}

/// The order: `order_by` as asked (every name must be one of the query's metrics or
/// dimensions), else by time, else by the first metric, largest first. Dimensions
/// follow, ascending, so the order is total.
pub(crate) fn order(
    order_by: Option<&[(String, Direction)]>,
    metrics: &[Metric],
    dimensions: &[Dimension],
) -> Result<Vec<Key>, String> {
    let mut keys = Vec::new();
    match order_by {
        Some(asked) => {
            for (name, direction) in asked {
                if let Some(i) = metrics.iter().position(|m| m.name() == name) {
                    keys.push(Key::Metric(i, *direction));
                } else if let Some(i) = dimensions.iter().position(|d| d.to_string() == *name) {
                    keys.push(Key::Dimension(i, *direction));
                } else {
                    return Err(format!(
                        "cannot order by `{name}`: it is not one of the query's metrics or dimensions"
                    ));
                }
            }
        }
        None => {
            if let Some(i) = dimensions.iter().position(Dimension::is_time) {
                keys.push(Key::Dimension(i, Direction::Asc));
            }
            if !metrics.is_empty() {
                keys.push(Key::Metric(0, Direction::Desc));
            }
        }
    }
    keys.extend((0..dimensions.len()).map(|i| Key::Dimension(i, Direction::Asc)));
    Ok(keys)
}

/// Whether the order reads dimension values (so that value ids need their texts first).
pub(crate) fn reads_dimensions(keys: &[Key], explicit: bool) -> bool {
    explicit && keys.iter().any(|k| matches!(k, Key::Dimension(..)))
}

/// Sorts rows by `keys`. Ids sort after texts and among themselves by id, which only
/// matters when their texts are not known yet.
pub(crate) fn sort(rows: &mut [Row], keys: &[Key]) {
    rows.sort_by(|a, b| compare(a, b, keys));
}

/// Keeps only the first `k` rows in `keys`' order, sorted: a selection and then a sort
/// of what is kept, so that a page of a long table (a million paths) costs about a pass
/// over it rather than a sort of all of it. `keys` end with every dimension, so the
/// order is total and the rows kept are those a full sort would put first.
pub(crate) fn top(rows: &mut Vec<Row>, keys: &[Key], k: usize) {
    if k == 0 {
        rows.clear();
        return;
    }
    if k < rows.len() {
        rows.select_nth_unstable_by(k - 1, |a, b| compare(a, b, keys));
        rows.truncate(k);
    }
    sort(rows, keys);
}

fn compare(a: &Row, b: &Row, keys: &[Key]) -> Ordering {
    for key in keys {
        let (ord, direction) = match key {
            Key::Metric(i, d) => (a.values[*i].total_cmp(&b.values[*i]), *d),
            Key::Dimension(i, d) => (cmp_cells(&a.cells[*i], &b.cells[*i]), *d),
        };
        let ord = if direction == Direction::Desc {
            ord.reverse()
        } else {
            ord
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

fn cmp_cells(a: &Cell, b: &Cell) -> Ordering {
    match (a, b) {
        (Cell::Text(a), Cell::Text(b)) => a.cmp(b),
        (Cell::Id(a), Cell::Id(b)) => a.cmp(b),
        (Cell::Text(_), Cell::Id(_)) => Ordering::Less,
        (Cell::Id(_), Cell::Text(_)) => Ordering::Greater,
    }
}

/// The ids among `rows`' cells.
pub(crate) fn ids(rows: &[Row]) -> Vec<u64> {
    let mut ids: Vec<u64> = rows
        .iter()
        .flat_map(|r| &r.cells)
        .filter_map(|c| match c {
            Cell::Id(id) => Some(*id),
            Cell::Text(_) => None,
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Replaces ids by their texts. A row with an id the dictionary lacks (which only a
/// damaged dictionary could cause) is dropped.
pub(crate) fn name(rows: Vec<Row>, texts: &HashMap<u64, String>) -> Vec<Row> {
    rows.into_iter()
        .filter_map(|mut row| {
            for cell in &mut row.cells {
                if let Cell::Id(id) = cell {
                    let Some(text) = texts.get(id) else {
                        tracing::error!(id, "a counted value has no text in the values dictionary");
                        return None;
                    };
                    *cell = Cell::Text(text.clone());
                }
            }
            Some(row)
        })
        .collect()
}

/// A cell's text (ids should be named by now).
pub(crate) fn text(cell: Cell) -> String {
    match cell {
        Cell::Text(t) => t,
        Cell::Id(id) => format!("#{id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `top` keeps exactly what a full sort puts first, ties included, for every `k`.
    #[test]
    fn top_keeps_what_a_full_sort_puts_first() {
        // Few distinct values, so that the metric ties often and the cells decide.
        let rows: Vec<Row> = (0..200u64)
            .map(|i| Row {
                cells: vec![if i % 3 == 0 {
                    Cell::Text(format!("/p{}", (i * 7919) % 101))
                } else {
                    Cell::Id((i * 104_729) % 97)
                }],
                values: vec![((i * 31) % 5) as f64],
            })
            .collect();
        let keys = [
            Key::Metric(0, Direction::Desc),
            Key::Dimension(0, Direction::Asc),
        ];
        let mut sorted = rows.clone();
        sort(&mut sorted, &keys);
        for k in [0, 1, 2, 10, 199, 200, 500] {
            let mut kept = rows.clone();
            top(&mut kept, &keys, k);
            let expected = &sorted[..k.min(sorted.len())];
            assert_eq!(kept.len(), expected.len(), "k = {k}");
            for (a, b) in kept.iter().zip(expected) {
                assert_eq!(a.cells, b.cells, "k = {k}");
                assert_eq!(a.values, b.values, "k = {k}");
            }
        }
    }
}
