//! The query API (`POST /api/v2/query`) from Rust: a builder for the query, and typed
//! answers.
//!
//! ```no_run
//! # async fn demo(client: beacon::Client) -> Result<(), beacon::Error> {
//! use beacon::query::{Dimension, Filter, Metric};
//! let q = beacon::query("site-001")
//!     .metrics([Metric::Visitors, Metric::BounceRate])
//!     .period("30d")
//!     .dimension(Dimension::Visit("source"))
//!     .filter(Filter::is(Dimension::Visit("country"), ["DE", "AT"]))
//!     .limit(10);
//! for row in client.query(&q).await?.rows {
//!     println!("{}: {} visitors", row.dimensions[0], row.get(Metric::Visitors).unwrap_or(0.0));
//! }
//! # Ok(()) }
//! ```

pub use beacon_protocol::query::{
    DateRange, Dimension, Direction, Filter, Metric, Operator, Query, QueryResponse, TimeGrain,
};

use crate::{Client, Error};

/// A query of `site_id`: every visitor over the last 30 days until told otherwise.
pub fn query(site_id: impl Into<String>) -> QueryBuilder {
    QueryBuilder(Query::new(
        site_id,
        Vec::new(),
        DateRange::Period("30d".to_owned()),
    ))
}

/// Builds a [`Query`]; see [`query`].
#[derive(Debug, Clone, PartialEq)]
pub struct QueryBuilder(Query);

impl QueryBuilder {
    /// Counts `metric` too (visitors, when none is named).
    pub fn metric(mut self, metric: Metric) -> Self {
        self.0.metrics.push(metric);
        self
    }

    /// Counts these too.
    pub fn metrics(mut self, metrics: impl IntoIterator<Item = Metric>) -> Self {
        self.0.metrics.extend(metrics);
        self
    }

    /// A period ending today: `"day"`, `"7d"`, `"28d"`, `"30d"`, `"91d"`, `"month"`,
    /// `"6mo"`, `"12mo"`, `"year"` or `"all"`.
    pub fn period(mut self, period: impl Into<String>) -> Self {
        self.0.date_range = DateRange::Period(period.into());
        self
    }

    /// From one date (`2024-01-01`) or RFC 3339 instant to another, both included.
    pub fn between(mut self, start: impl Into<String>, end: impl Into<String>) -> Self {
        self.0.date_range = DateRange::Between(start.into(), end.into());
        self
    }

    /// Breaks the metrics down by `dimension` too.
    pub fn dimension(mut self, dimension: Dimension) -> Self {
        self.0.dimensions.push(dimension);
        self
    }

    /// Counts only what passes `filter` too.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.0.filters.push(filter);
        self
    }

    /// Orders by a metric or dimension (by its name), then by those given before.
    pub fn order_by(mut self, name: impl Into<String>, direction: Direction) -> Self {
        self.0
            .order_by
            .get_or_insert_with(Vec::new)
            .push((name.into(), direction));
        self
    }

    /// At most this many rows.
    pub fn limit(mut self, limit: u64) -> Self {
        self.0.pagination.limit = limit;
        self
    }

    /// Skips this many rows.
    pub fn offset(mut self, offset: u64) -> Self {
        self.0.pagination.offset = offset;
        self
    }

    /// Asks for every label of the time dimension, rows or not.
    pub fn time_labels(mut self) -> Self {
        self.0.include.time_labels = true;
        self
    }

    /// Asks for the number of rows before pagination.
    pub fn total_rows(mut self) -> Self {
        self.0.include.total_rows = true;
        self
    }

    /// Counts days in this IANA time zone rather than the site's.
    pub fn timezone(mut self, tz: impl Into<String>) -> Self {
        self.0.timezone = Some(tz.into());
        self
    }

    /// The query.
    pub fn build(mut self) -> Query {
        if self.0.metrics.is_empty() {
            self.0.metrics.push(Metric::Visitors);
        }
        self.0
    }
}

/// An answer, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The rows, in order.
    pub rows: Vec<AnswerRow>,
    /// With [`QueryBuilder::time_labels`]: every label of the time dimension.
    pub time_labels: Option<Vec<String>>,
    /// With [`QueryBuilder::total_rows`]: rows before pagination.
    pub total_rows: Option<u64>,
}

/// One row: its dimension values, in the order of the query's dimensions, and its
/// metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerRow {
    /// Dimension values as text (times as `2024-01-31`, or `2024-01-31 13:00:00`).
    pub dimensions: Vec<String>,
    /// Each metric asked, with its value.
    pub metrics: Vec<(Metric, f64)>,
}

impl AnswerRow {
    /// The value of `metric`, if it was asked.
    pub fn get(&self, metric: Metric) -> Option<f64> {
        self.metrics
            .iter()
            .find(|(m, _)| *m == metric)
            .map(|(_, v)| *v)
    }
}

impl Client {
    /// Asks the query API (needs a read key on a server with `ADMIN_TOKEN`: see
    /// [`crate::ClientBuilder::read_key`]). Takes a [`Query`] or a [`QueryBuilder`].
    pub async fn query(&self, query: impl Into<Query>) -> Result<Answer, Error> {
        let query = query.into();
        let request = self
            .shared()
            .http
            .post(self.shared().query_url.clone())
            .json(&query);
        let answer: QueryResponse = self.read(request).await?;
        Ok(Answer {
            rows: answer
                .results
                .into_iter()
                .map(|row| AnswerRow {
                    dimensions: row.dimensions,
                    metrics: query
                        .metrics
                        .iter()
                        .zip(row.metrics)
                        .map(|(m, v)| (*m, v.as_f64().unwrap_or(0.0)))
                        .collect(),
                })
                .collect(),
            time_labels: answer.meta.time_labels,
            total_rows: answer.meta.total_rows,
        })
    }
}

impl From<QueryBuilder> for Query {
    fn from(b: QueryBuilder) -> Query {
        b.build()
    }
}

impl From<&QueryBuilder> for Query {
    fn from(b: &QueryBuilder) -> Query {
        b.clone().build()
    }
}
