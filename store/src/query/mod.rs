//! The query API's engine: a [`Query`] in Plausible's shape, answered from rollups when
//! they can answer it, else from the raw events of the range.
//!
//! - `calendar`: the date range as instants, and time labels, in the query's zone;
//! - `filter`: filters, and dimension values read off events and visits;
//! - `table`: what rows add up, the metrics, their order and the page answered;
//! - `fast`: rollups: no filter, at most one dimension besides time, a range of whole
//!   hours (the dashboard's cards, chart and tables);
//! - `raw`: everything else, by scanning the range's events with the site-and-time
//!   index and following each visitor's visits as the worker does.
//!
//! Rows are made either from events (no dimension, time, or event dimensions) or from
//! visits (visit dimensions): see `table` for what each metric counts. Event and visit
//! dimensions cannot be mixed in one query.

pub(crate) mod calendar;
mod fast;
mod filter;
mod raw;
mod table;

use beacon_protocol::limits::MAX_SITE_ID_BYTES;
use beacon_protocol::query::{
    Dimension, MAX_FILTERS, MAX_LIMIT, Meta, Metric, Query, QueryResponse, QueryRow, TimeGrain,
};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::Value;

use crate::{EventsPage, Result, Store, StoreError, millis};
use calendar::Span;
use filter::Compiled;
use table::{Row, Visitors};

/// Most dimensions in one query.
const MAX_DIMENSIONS: usize = 4;
/// Most time labels in one answer: hourly for eleven years, daily for ever.
const MAX_TIME_LABELS: i64 = 100_000;

/// Which engine answers: the fastest that can, or raw events whatever the query (for
/// tests that hold the two against each other).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// Rollups when they can answer, raw events otherwise.
    #[default]
    Auto,
    /// Raw events.
    Raw,
}

/// A checked query, its range resolved.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) site_id: String,
    pub(crate) metrics: Vec<Metric>,
    /// The dimensions, `time` resolved to its grain.
    pub(crate) dimensions: Vec<Dimension>,
    /// The time dimension's position and grain.
    pub(crate) time: Option<(usize, TimeGrain)>,
    pub(crate) filter: Option<Compiled>,
    pub(crate) span: Span,
    pub(crate) tz: Tz,
    /// Rows of visits (a visit dimension) or of events.
    pub(crate) by_visits: bool,
    pub(crate) visitors: Visitors,
}

impl Plan {
    fn new(q: &Query, tz: Tz, span: Span) -> std::result::Result<Self, String> {
        if q.site_id.trim().is_empty() || q.site_id.len() > MAX_SITE_ID_BYTES {
            return Err(format!("site_id must be 1 to {MAX_SITE_ID_BYTES} bytes"));
        }
        if q.metrics.is_empty() {
            return Err("metrics must name at least one metric".to_owned());
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(m) = q.metrics.iter().find(|m| !seen.insert(**m)) {
            return Err(format!("metric `{}` is named twice", m.name()));
        }
        if q.dimensions.len() > MAX_DIMENSIONS {
            return Err(format!("at most {MAX_DIMENSIONS} dimensions"));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(d) = q.dimensions.iter().find(|d| !seen.insert((*d).clone())) {
            return Err(format!("dimension `{d}` is named twice"));
        }
        if q.dimensions.iter().filter(|d| d.is_time()).count() > 1 {
            return Err("at most one time dimension".to_owned());
        }
        let by_visits = q.dimensions.iter().any(Dimension::is_visit);
        if by_visits && q.dimensions.iter().any(|d| !d.is_visit() && !d.is_time()) {
            return Err(
                "cannot break down by event and visit dimensions together: use one kind".to_owned(),
            );
        }
        let filters: usize = q.filters.iter().map(|f| f.count()).sum();
        if filters > MAX_FILTERS {
            return Err(format!(
                "at most {MAX_FILTERS} filters, and and/or/not count"
            ));
        }
        if q.pagination.limit == 0 || q.pagination.limit > MAX_LIMIT {
            return Err(format!("pagination.limit must be 1 to {MAX_LIMIT}"));
        }
        let dimensions: Vec<Dimension> = q
            .dimensions
            .iter()
            .map(|d| match d {
                Dimension::Time(TimeGrain::Auto) => Dimension::Time(calendar::auto_grain(span)),
                other => other.clone(),
            })
            .collect();
        let time = dimensions.iter().enumerate().find_map(|(i, d)| match d {
            Dimension::Time(grain) => Some((i, *grain)),
            _ => None,
        });
        match time {
            None if q.include.time_labels => {
                return Err("include.time_labels needs a time dimension".to_owned());
            }
            Some((_, grain))
                if q.include.time_labels
                    && calendar::most_labels(span, grain) > MAX_TIME_LABELS =>
            {
                return Err(format!(
                    "over {MAX_TIME_LABELS} time labels: a coarser time dimension or a shorter range"
                ));
            }
            _ => {}
        }
        let by_value = dimensions
            .iter()
            .any(|d| !d.is_time() && *d != Dimension::Name);
        Ok(Self {
            site_id: q.site_id.clone(),
            metrics: q.metrics.clone(),
            dimensions,
            time,
            filter: filter::compile(&q.filters)?,
            span,
            tz,
            by_visits,
            visitors: if by_value {
                Visitors::Daily
            } else {
                Visitors::Distinct
            },
        })
    }

    /// The time label of `t`, if the query breaks down by time.
    pub(crate) fn label(&self, t: i64) -> Option<String> {
        self.time
            .map(|(_, grain)| calendar::label(t, grain, self.tz))
    }
}

impl Store {
    /// Answers `q` with days counted in `tz`, today being the day of `now` there.
    pub async fn query(
        &self,
        q: &Query,
        tz: Tz,
        now: DateTime<Utc>,
        engine: Engine,
    ) -> Result<QueryResponse> {
        let bad = StoreError::BadQuery;
        let first_event = match &q.date_range {
            beacon_protocol::query::DateRange::Period(p) if p == "all" => {
                self.first_event_time(&q.site_id).await?
            }
            _ => None,
        };
        let span = calendar::resolve(&q.date_range, tz, now, first_event).map_err(bad)?;
        let plan = Plan::new(q, tz, span).map_err(bad)?;
        let keys =
            table::order(q.order_by.as_deref(), &plan.metrics, &plan.dimensions).map_err(bad)?;
        let (rows, all_visitors) = match (engine, fast::can_answer(&plan)) {
            (Engine::Auto, true) => fast::run(self, &plan).await?,
            _ => raw::run(self, &plan).await?,
        };
        let mut rows = table::evaluate(rows, &plan.metrics, plan.visitors, all_visitors);
        if table::reads_dimensions(&keys, q.order_by.is_some()) {
            rows = self.named(rows).await?;
        }
        let total = rows.len() as u64;
        let offset = usize::try_from(q.pagination.offset).unwrap_or(usize::MAX);
        let limit = usize::try_from(q.pagination.limit).unwrap_or(usize::MAX);
        table::top(&mut rows, &keys, offset.saturating_add(limit));
        let mut page: Vec<Row> = rows.into_iter().skip(offset).take(limit).collect();
        page = self.named(page).await?;
        table::sort(&mut page, &keys);
        let results = page
            .into_iter()
            .map(|row| QueryRow {
                metrics: plan
                    .metrics
                    .iter()
                    .zip(&row.values)
                    .map(|(m, v)| table::json(*m, *v))
                    .collect(),
                dimensions: row.cells.into_iter().map(table::text).collect(),
            })
            .collect();
        let meta = Meta {
            time_labels: match (q.include.time_labels, plan.time) {
                (true, Some((_, grain))) => Some(calendar::labels(span, grain, tz)),
                _ => None,
            },
            total_rows: q.include.total_rows.then_some(total),
        };
        Ok(QueryResponse {
            results,
            meta,
            query: echo(q, &plan),
        })
    }

    /// Rows with their value ids replaced by texts.
    async fn named(&self, rows: Vec<Row>) -> Result<Vec<Row>> {
        let ids = table::ids(&rows);
        if ids.is_empty() {
            return Ok(rows);
        }
        let texts = self.value_texts(&ids).await?;
        Ok(table::name(rows, &texts))
    }

    /// When the site's first stored event happened.
    async fn first_event_time(&self, site_id: &str) -> Result<Option<i64>> {
        let first = EventsPage {
            site_id: site_id.to_owned(),
            from: None,
            to: None,
            after: None,
            limit: 1,
        };
        let events = self.events_page(&first).await?;
        Ok(events.first().map(|e| millis(e.timestamp)))
    }
}

/// The query as run: its range as instants in its zone, the zone, and `time` resolved.
fn echo(q: &Query, plan: &Plan) -> Value {
    let mut v = serde_json::to_value(q).unwrap_or(Value::Null);
    let instant = |t: i64| {
        DateTime::<Utc>::from_timestamp_millis(t)
            .map(|t| t.with_timezone(&plan.tz).to_rfc3339())
            .unwrap_or_default()
    };
    if let Value::Object(map) = &mut v {
        map.insert(
            "date_range".to_owned(),
            Value::from(vec![instant(plan.span.from), instant(plan.span.to - 1)]),
        );
        map.insert("timezone".to_owned(), Value::from(plan.tz.name()));
        map.insert(
            "dimensions".to_owned(),
            Value::from(
                plan.dimensions
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
            ),
        );
    }
    v
}
