//! Answers from rollups: queries without filters, with at most one dimension besides
//! time, over whole UTC hours. Such a range is read as day buckets where days are whole
//! (in UTC, when the zone is UTC throughout) and hour buckets elsewhere.
//!
//! Which buckets give what:
//! - all-types buckets: events, visitors (their sketches), and by page or host, events
//!   and visitors (counted once a day);
//! - page-view buckets: page views, in all and by page or host;
//! - each type's buckets: events, page views and visitors by `event:name`;
//! - visit buckets: visits, bounces, time and the visits' page views, in all and by
//!   each visit attribute (with visitors once a day, and the visits' events).

use beacon_protocol::TimeRange;
use beacon_protocol::query::{Dimension, Metric, TimeGrain};
use chrono::{DateTime, Utc};
use futures::future::try_join_all;

use super::Plan;
use super::calendar;
use super::table::{Acc, Cell, Rows};
use crate::rollup::plan::{self as pieces, Piece};
use crate::rollup::sketch::Sketch;
use crate::rollup::topk::Counters;
use crate::rollup::{
    BOUNCES, BucketRead, BucketTypes, DURATION_MS, EVENTS, Granularity, PAGEVIEWS, PATH,
    StoredBucket, VISIT_BUCKET, VISIT_DIMS, VISITORS,
};
use crate::{Result, Store};

/// The one dimension besides time, as rollups keep it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ByValue {
    None,
    /// A dimension of event buckets (its stored name).
    Event(&'static str),
    /// The event type: each type's own buckets.
    Name,
    /// A dimension of visit buckets (its stored name).
    Visit(&'static str),
}

/// Whether rollups can answer the plan.
pub(super) fn can_answer(plan: &Plan) -> bool {
    if plan.filter.is_some() || !plan.span.on_hours() {
        return false;
    }
    let values: Vec<&Dimension> = plan.dimensions.iter().filter(|d| !d.is_time()).collect();
    let by = match values.as_slice() {
        [] => Some(ByValue::None),
        [one] => by_value(one),
        _ => None,
    };
    match by {
        Some(ByValue::Event(_) | ByValue::Name) => plan.metrics.iter().all(|m| {
            matches!(
                m,
                Metric::Visitors | Metric::Pageviews | Metric::Events | Metric::Percentage
            )
        }),
        Some(_) => true,
        None => false,
    }
}

fn by_value(d: &Dimension) -> Option<ByValue> {
    match d {
        Dimension::Page => Some(ByValue::Event(PATH.name)),
        Dimension::Hostname => Some(ByValue::Event("hostname")),
        Dimension::Name => Some(ByValue::Name),
        Dimension::Visit(name) => VISIT_DIMS
            .iter()
            .find(|v| v.name == *name)
            .map(|v| ByValue::Visit(v.name)),
        Dimension::Prop(_) | Dimension::Time(_) => None,
    }
}

/// The rows of `plan`, and the range's distinct visitors (for `percentage`).
pub(super) async fn run(store: &Store, plan: &Plan) -> Result<(Rows, u64)> {
    let by = plan
        .dimensions
        .iter()
        .find(|d| !d.is_time())
        .and_then(by_value)
        .unwrap_or(ByValue::None);
    let wants = |m: &[Metric]| plan.metrics.iter().any(|x| m.contains(x));
    let visitors = wants(&[Metric::Visitors, Metric::Percentage]);
    let event_side = wants(&[
        Metric::Visitors,
        Metric::Pageviews,
        Metric::Events,
        Metric::Percentage,
    ]);
    let visit_side = wants(&[
        Metric::Visits,
        Metric::BounceRate,
        Metric::VisitDuration,
        Metric::ViewsPerVisit,
    ]);
    // Types that share what is read of them are read at once; all reads run at once.
    let mut reads: Vec<(BucketTypes, bool, Option<&'static str>)> = Vec::new();
    match by {
        ByValue::None => {
            let mut plain = Vec::new();
            if event_side {
                reads.push((These(&[""]), visitors, None));
                plain.push("page_view");
            }
            if visit_side {
                plain.push(VISIT_BUCKET);
            }
            if !plain.is_empty() {
                reads.push((These(&plain), false, None));
            }
        }
        ByValue::Event(dim) => reads.push((These(&["", "page_view"]), false, Some(dim))),
        ByValue::Name => reads.push((BucketTypes::EventTypes, visitors, None)),
        ByValue::Visit(dim) => reads.push((These(&[VISIT_BUCKET]), false, Some(dim))),
    }
    let reads: Vec<BucketRead> = pieces_of(plan)
        .into_iter()
        .flat_map(|(granularity, from, to)| {
            reads.iter().map(move |(types, users, dim)| BucketRead {
                site_id: plan.site_id.clone(),
                granularity,
                from: Some(from),
                to: Some(to),
                types: types.clone(),
                users: *users,
                dim: *dim,
            })
        })
        .collect();
    let read = try_join_all(reads.iter().map(|read| store.buckets(read))).await?;
    let mut rows = Rows::default();
    if plan.dimensions.is_empty() {
        rows.insert(Vec::new(), Acc::default()); // an aggregate always has its row
    }
    // The all-types buckets' sketches, when read: the range's visitors.
    let mut range_users = None;
    for (read, buckets) in reads.iter().zip(&read) {
        let all_types = read.users && matches!(&read.types, BucketTypes::These(t) if t == &[""]);
        for bucket in buckets {
            add_bucket(plan, by, bucket, &mut rows);
            if all_types {
                range_users
                    .get_or_insert_with(Sketch::default)
                    .merge(&bucket.rollup.users);
            }
        }
    }
    let all_visitors = match range_users {
        _ if !wants(&[Metric::Percentage]) => 0,
        Some(users) => users.count(),
        None => range_visitors(store, plan).await?,
    };
    Ok((rows, all_visitors))
}

#[allow(non_snake_case)]
fn These(types: &[&str]) -> BucketTypes {
    BucketTypes::These(types.iter().map(|t| (*t).to_owned()).collect())
}

/// The bucket ranges to read: hours throughout for hourly labels or a zone that is not
/// UTC; else the plan's days and hours (all days, for UTC days).
fn pieces_of(plan: &Plan) -> Vec<(Granularity, i64, i64)> {
    let span = plan.span;
    let hours_only = match plan.time {
        Some((_, TimeGrain::Hour)) => true,
        Some(_) => !calendar::is_utc(plan.tz, span),
        None => false,
    };
    if hours_only {
        return vec![(Granularity::Hour, span.from, span.to)];
    }
    let range = TimeRange {
        site_id: plan.site_id.clone(),
        from: DateTime::<Utc>::from_timestamp_millis(span.from),
        to: DateTime::<Utc>::from_timestamp_millis(span.to),
        event_type: None,
        limit: 0,
    };
    pieces::plan(&range)
        .into_iter()
        .filter_map(|piece| match piece {
            Piece::Buckets {
                granularity,
                from,
                to,
            } => Some((
                granularity,
                from.unwrap_or(span.from),
                to.unwrap_or(span.to),
            )),
            // Whole hours leave no raw ends.
            Piece::Raw { .. } => None,
        })
        .collect()
}

/// Adds a bucket to the rows it belongs to.
fn add_bucket(plan: &Plan, by: ByValue, bucket: &StoredBucket, rows: &mut Rows) {
    let label = plan.label(bucket.start);
    let row = |value: Option<Cell>| -> Vec<Cell> {
        let mut cells = Vec::with_capacity(plan.dimensions.len());
        for d in &plan.dimensions {
            cells.push(if d.is_time() {
                Cell::Text(label.clone().unwrap_or_default())
            } else {
                value.clone().unwrap_or(Cell::Text(String::new()))
            });
        }
        cells
    };
    let r = &bucket.rollup;
    let pageviews = bucket.event_type == "page_view";
    let visit = bucket.event_type == VISIT_BUCKET;
    match by {
        ByValue::None => {
            let acc = rows.entry(row(None)).or_default();
            if visit {
                acc.visits += r.count as i64;
                acc.bounces += r.extra[BOUNCES];
                acc.duration_ms += r.extra[DURATION_MS];
                acc.visit_pageviews += r.extra[PAGEVIEWS];
            } else if pageviews {
                acc.pageviews += r.count as i64;
            } else {
                acc.events += r.count as i64;
                acc.users.merge(&r.users);
            }
        }
        ByValue::Name => {
            let acc = rows
                .entry(row(Some(Cell::Text(bucket.event_type.clone()))))
                .or_default();
            acc.events += r.count as i64;
            if pageviews {
                acc.pageviews += r.count as i64;
            }
            acc.users.merge(&r.users);
        }
        ByValue::Event(dim) | ByValue::Visit(dim) => {
            let Some(summary) = r.dims.get(dim) else {
                return;
            };
            for (id, c) in summary.counters() {
                if c.count == 0 {
                    continue;
                }
                let acc = rows.entry(row(Some(Cell::Id(id)))).or_default();
                add_value(acc, c, visit, pageviews);
            }
        }
    }
}

/// Adds one value's counters of a bucket.
fn add_value(acc: &mut Acc, c: &Counters, visit: bool, pageviews: bool) {
    if visit {
        acc.visits += c.count as i64;
        acc.daily_visitors += c.extra[VISITORS];
        acc.bounces += c.extra[BOUNCES];
        acc.duration_ms += c.extra[DURATION_MS];
        acc.visit_pageviews += c.extra[PAGEVIEWS];
        acc.pageviews += c.extra[PAGEVIEWS];
        acc.events += c.extra[EVENTS];
    } else if pageviews {
        acc.pageviews += c.count as i64;
    } else {
        acc.events += c.count as i64;
        acc.daily_visitors += c.extra[VISITORS];
    }
}

/// The range's distinct visitors, from the all-types buckets' sketches.
async fn range_visitors(store: &Store, plan: &Plan) -> Result<u64> {
    let reads: Vec<BucketRead> = pieces_of(plan)
        .into_iter()
        .map(|(granularity, from, to)| BucketRead {
            site_id: plan.site_id.clone(),
            granularity,
            from: Some(from),
            to: Some(to),
            types: These(&[""]),
            users: true,
            dim: None,
        })
        .collect();
    let mut users = Sketch::default();
    for buckets in try_join_all(reads.iter().map(|read| store.buckets(read))).await? {
        for bucket in buckets {
            users.merge(&bucket.rollup.users);
        }
    }
    Ok(users.count())
}
