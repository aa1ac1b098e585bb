//! `POST /api/v2/query`: the query API, in the shape of Plausible's Stats API v2, so
//! that scripts and tools written for it work with Beacon.
//!
//! A query names a site, metrics, a date range, and optionally dimensions to break the
//! metrics down by, filters, an order, pagination and extras to include. The answer is
//! one row per combination of dimension values: `{"metrics": [...], "dimensions": [...]}`
//! in the order asked. Syntax is checked here (an unknown metric or dimension is an
//! error that names it); which combinations can be answered is the store's to say.

mod filter;

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use filter::{Filter, Operator};

/// Most rows one answer holds, and the default page size.
pub const MAX_LIMIT: u64 = 10_000;
/// Most filters (counting those nested in `and`, `or` and `not`) in one query.
pub const MAX_FILTERS: usize = 50;
/// Most values one filter compares against.
pub const MAX_FILTER_VALUES: usize = 100;

/// A query.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// The site.
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub site_id: String,
    /// What to count, in the order the answer lists them.
    pub metrics: Vec<Metric>,
    /// Which days (or times): a period (`"day"`, `"7d"`, `"28d"`, `"30d"`, `"91d"`,
    /// `"month"`, `"6mo"`, `"12mo"`, `"year"`, `"all"`) or two dates (or RFC 3339
    /// instants), both included.
    #[cfg_attr(feature = "openapi", schema(schema_with = date_range_schema, example = json!("30d")))]
    pub date_range: DateRange,
    /// What to break the metrics down by: `event:page`, `event:name`,
    /// `event:props:<name>`, `visit:source`, `visit:entry_page`, `visit:browser`, …,
    /// `time`, `time:hour`, `time:day`, `time:week`, `time:month`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dimensions: Vec<Dimension>,
    /// Which events and visits count, as in Plausible:
    /// `["is", "visit:source", ["Google"]]`, `["contains", …]`, `["and", [...]]`, ….
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    /// How rows are ordered: metrics or dimensions of the query, each ascending or
    /// descending. Default: by time if there is a time dimension, else by the first
    /// metric, largest first.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<Vec<String>>>, example = json!([["visitors", "desc"]])))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_by: Option<Vec<(String, Direction)>>,
    /// Extras in `meta`.
    #[serde(default)]
    pub include: Include,
    /// Which rows.
    #[serde(default)]
    pub pagination: Pagination,
    /// The time zone days are counted in (an IANA name such as `Europe/Berlin`).
    /// Default: the site's registered zone, else UTC. A Beacon extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

impl Query {
    /// A query of `metrics` for `site_id` over `date_range`, with nothing else.
    pub fn new(site_id: impl Into<String>, metrics: Vec<Metric>, date_range: DateRange) -> Self {
        Self {
            site_id: site_id.into(),
            metrics,
            date_range,
            dimensions: Vec::new(),
            filters: Vec::new(),
            order_by: None,
            include: Include::default(),
            pagination: Pagination::default(),
            timezone: None,
        }
    }
}

/// What can be counted.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Distinct users.
    Visitors,
    /// Visits (sessions).
    Visits,
    /// Page views.
    Pageviews,
    /// Events of every type.
    Events,
    /// Visits with one page view and nothing else, in percent of visits.
    BounceRate,
    /// The mean time from a visit's first event to its last, in seconds.
    VisitDuration,
    /// Page views per visit.
    ViewsPerVisit,
    /// A row's visitors in percent of all visitors.
    Percentage,
}

impl Metric {
    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Visitors => "visitors",
            Self::Visits => "visits",
            Self::Pageviews => "pageviews",
            Self::Events => "events",
            Self::BounceRate => "bounce_rate",
            Self::VisitDuration => "visit_duration",
            Self::ViewsPerVisit => "views_per_visit",
            Self::Percentage => "percentage",
        }
    }
}

/// A dimension of events (`event:…`), of visits (`visit:…`), or of time (`time…`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub enum Dimension {
    /// `event:page`: the path.
    Page,
    /// `event:name`: the event type.
    Name,
    /// `event:hostname`: the host of the page.
    Hostname,
    /// `event:props:<key>`: a custom property, as text.
    Prop(String),
    /// `visit:<name>`: an attribute of the visit (see [`VISIT_DIMENSIONS`]).
    Visit(&'static str),
    /// `time`, `time:hour`, `time:day`, `time:week` or `time:month`.
    Time(TimeGrain),
}

/// The attributes of visits that `visit:<name>` can name.
pub const VISIT_DIMENSIONS: &[&str] = &[
    "entry_page",
    "exit_page",
    "source",
    "referrer",
    "channel",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "device",
    "browser",
    "browser_version",
    "os",
    "os_version",
    "country",
];

/// How finely time is broken down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeGrain {
    /// `time`: hours for a range of up to two days, days up to 100, months beyond.
    Auto,
    /// Hours.
    Hour,
    /// Days.
    Day,
    /// Weeks, from Monday.
    Week,
    /// Calendar months.
    Month,
}

impl Dimension {
    /// Whether this is a dimension of time.
    pub fn is_time(&self) -> bool {
        matches!(self, Self::Time(_))
    }

    /// Whether this is a dimension of visits.
    pub fn is_visit(&self) -> bool {
        matches!(self, Self::Visit(_))
    }
}

impl TryFrom<String> for Dimension {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        Ok(match name.as_str() {
            "event:page" => Self::Page,
            "event:name" => Self::Name,
            "event:hostname" => Self::Hostname,
            "time" => Self::Time(TimeGrain::Auto),
            "time:hour" => Self::Time(TimeGrain::Hour),
            "time:day" => Self::Time(TimeGrain::Day),
            "time:week" => Self::Time(TimeGrain::Week),
            "time:month" => Self::Time(TimeGrain::Month),
            other => {
                if let Some(key) = other.strip_prefix("event:props:") {
                    if key.is_empty() || key.len() > 256 {
                        return Err(format!(
                            "unknown dimension `{other}`: a property key is 1 to 256 bytes"
                        ));
                    }
                    Self::Prop(key.to_owned())
                } else if let Some(visit) = other
                    .strip_prefix("visit:")
                    .and_then(|v| VISIT_DIMENSIONS.iter().find(|d| **d == v))
                {
                    Self::Visit(visit)
                } else {
                    return Err(format!(
                        "unknown dimension `{other}`: use event:page, event:name, event:hostname, \
                         event:props:<key>, visit:<{}>, time, time:hour, time:day, time:week or \
                         time:month",
                        VISIT_DIMENSIONS.join("|")
                    ));
                }
            }
        })
    }
}

impl<'de> Deserialize<'de> for Dimension {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Dimension::try_from(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl From<Dimension> for String {
    fn from(d: Dimension) -> String {
        d.to_string()
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Page => f.write_str("event:page"),
            Self::Name => f.write_str("event:name"),
            Self::Hostname => f.write_str("event:hostname"),
            Self::Prop(key) => write!(f, "event:props:{key}"),
            Self::Visit(name) => write!(f, "visit:{name}"),
            Self::Time(TimeGrain::Auto) => f.write_str("time"),
            Self::Time(TimeGrain::Hour) => f.write_str("time:hour"),
            Self::Time(TimeGrain::Day) => f.write_str("time:day"),
            Self::Time(TimeGrain::Week) => f.write_str("time:week"),
            Self::Time(TimeGrain::Month) => f.write_str("time:month"),
        }
    }
}

/// Which days: a period ending today (included), all time, or from one date (or
/// instant) to another, both included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DateRange {
    /// `"day"`, `"7d"`, `"28d"`, `"30d"`, `"91d"`, `"month"`, `"6mo"`, `"12mo"`, `"year"`
    /// or `"all"`.
    Period(String),
    /// `["2024-01-01", "2024-01-31"]`, or RFC 3339 instants.
    Between(String, String),
}

/// `date_range`'s schema: a period's name, or two dates (or instants).
#[cfg(feature = "openapi")]
fn date_range_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
    let period = ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(PERIODS.iter().copied()));
    let day = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(10));
    let between = ArrayBuilder::new()
        .items(day)
        .min_items(Some(2))
        .max_items(Some(2));
    Schema::OneOf(OneOfBuilder::new().item(period).item(between).build())
}

/// The periods `date_range` can name.
pub const PERIODS: &[&str] = &[
    "day", "7d", "28d", "30d", "91d", "month", "6mo", "12mo", "year", "all",
];

/// Ascending or descending.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Smallest first.
    Asc,
    /// Largest first.
    Desc,
}

/// Extras the answer's `meta` carries.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Include {
    /// Every label of the time dimension in the range, rows or not.
    #[serde(default)]
    pub time_labels: bool,
    /// How many rows there are before pagination.
    #[serde(default)]
    pub total_rows: bool,
}

/// Which rows: `limit` of them (at most [`MAX_LIMIT`]) after skipping `offset`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pagination {
    /// Rows to answer.
    #[serde(default = "default_limit")]
    pub limit: u64,
    /// Rows to skip.
    #[serde(default)]
    pub offset: u64,
}

fn default_limit() -> u64 {
    MAX_LIMIT
}

impl Default for Pagination {
    fn default() -> Self {
        Self {
            limit: MAX_LIMIT,
            offset: 0,
        }
    }
}

/// The answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryResponse {
    /// One row per combination of dimension values, in order.
    pub results: Vec<QueryRow>,
    /// Extras asked for with `include`.
    pub meta: Meta,
    /// The query as run: its date range resolved to instants, its time zone and
    /// defaults filled in.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub query: Value,
}

/// One row: metrics in the order asked, and the dimension values it is for.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryRow {
    /// Counts are integers; `bounce_rate` and `visit_duration` are rounded to whole
    /// numbers, `views_per_visit` to two decimals, `percentage` to one.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<f64>))]
    pub metrics: Vec<Value>,
    /// Dimension values as text; times as `2024-01-31` (days, weeks by their Monday,
    /// months by their first day) or `2024-01-31 13:00:00` (hours), in the query's time
    /// zone.
    pub dimensions: Vec<String>,
}

/// Extras.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// With `include.time_labels`: every label of the time dimension in the range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_labels: Option<Vec<String>>,
    /// With `include.total_rows`: rows before pagination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_rows: Option<u64>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn queries_read_and_write_plausibles_shape() {
        let wire = json!({
            "site_id": "s",
            "metrics": ["visitors", "bounce_rate"],
            "date_range": ["2024-01-01", "2024-01-31"],
            "dimensions": ["visit:source", "time:day", "event:props:plan"],
            "filters": [
                ["is", "visit:browser", ["Chrome"], {"case_sensitive": false}],
                ["or", [["contains", "event:page", ["/blog"]], ["not", ["is", "event:name", ["click"]]]]]
            ],
            "order_by": [["visitors", "desc"]],
            "include": {"time_labels": true},
            "pagination": {"limit": 5}
        });
        let q: Query = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(q.dimensions[0], Dimension::Visit("source"));
        assert_eq!(q.dimensions[2], Dimension::Prop("plan".into()));
        assert_eq!(
            q.pagination,
            Pagination {
                limit: 5,
                offset: 0
            }
        );
        assert_eq!(q.filters[1].count(), 4);
        let back = serde_json::to_value(&q).unwrap();
        assert_eq!(back["filters"], wire["filters"]);
        assert_eq!(back["dimensions"], wire["dimensions"]);
        assert_eq!(serde_json::from_value::<Query>(back).unwrap(), q);
    }

    #[test]
    fn mistakes_are_named() {
        let bad = |extra: Value| {
            let mut q = json!({"site_id": "s", "metrics": ["visits"], "date_range": "7d"});
            for (k, v) in extra.as_object().unwrap() {
                q[k] = v.clone();
            }
            serde_json::from_value::<Query>(q).unwrap_err().to_string()
        };
        assert!(bad(json!({"metrics": ["visiters"]})).contains("visiters"));
        assert!(bad(json!({"dimensions": ["visit:city"]})).contains("visit:city"));
        assert!(bad(json!({"filters": [["near", "event:page", ["/"]]]})).contains("near"));
        assert!(bad(json!({"filters": [["is", "time:day", ["x"]]]})).contains("date_range"));
        assert!(bad(json!({"filters": [["is", "event:page", []]]})).contains("1 to"));
        assert!(bad(json!({"limit": 3})).contains("limit"));
    }
}
