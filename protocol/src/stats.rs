//! `GET /stats`: what is asked and what is answered.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::limits::{DEFAULT_TOP_PATHS, MAX_SITE_ID_BYTES, MAX_TOP_PATHS};
use crate::{DateBound, ValidationError};

/// The query string of `GET /stats`. `site_id` is a plain string, never a query operator.
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsQuery {
    /// The site to report on.
    #[cfg_attr(feature = "openapi", param(min_length = 1))]
    pub site_id: String,
    /// Start of the range (inclusive): `YYYY-MM-DD` or RFC 3339.
    #[cfg_attr(feature = "openapi", param(value_type = Option<String>, min_length = 10))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<DateBound>,
    /// End of the range: a day includes the whole day, an instant is exclusive.
    #[cfg_attr(feature = "openapi", param(value_type = Option<String>, min_length = 10))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<DateBound>,
    /// Only events of this type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// How many top paths to list (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// A validated stats query, resolved to instants, as the store runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeRange {
    /// The site.
    pub site_id: String,
    /// Inclusive start, if any.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive end, if any.
    pub to: Option<DateTime<Utc>>,
    /// Event type filter.
    pub event_type: Option<String>,
    /// Number of top paths.
    pub limit: u32,
}

impl StatsQuery {
    /// A query over all time for `site_id`.
    pub fn new(site_id: impl Into<String>) -> Self {
        Self {
            site_id: site_id.into(),
            ..Self::default()
        }
    }

    /// Checks the query and resolves day bounds into instants.
    pub fn resolve(&self) -> Result<TimeRange, ValidationError> {
        if self.site_id.trim().is_empty() {
            return Err(ValidationError::Empty("site_id"));
        }
        if self.site_id.len() > MAX_SITE_ID_BYTES {
            return Err(ValidationError::TooLong {
                field: "site_id",
                len: self.site_id.len(),
                max: MAX_SITE_ID_BYTES,
            });
        }
        let limit = self.limit.unwrap_or(DEFAULT_TOP_PATHS);
        if limit > MAX_TOP_PATHS {
            return Err(ValidationError::Malformed(format!(
                "`limit` must be at most {MAX_TOP_PATHS}"
            )));
        }
        let from = self.from.map(|b| b.as_start());
        let to = self.to.map(|b| b.as_end());
        if let (Some(f), Some(t)) = (from, to) {
            if f >= t {
                return Err(ValidationError::Malformed(
                    "`from` must be before `to`".to_owned(),
                ));
            }
        }
        Ok(TimeRange {
            site_id: self.site_id.clone(),
            from,
            to,
            event_type: self.event_type.clone().filter(|t| !t.is_empty()),
            limit,
        })
    }
}

/// The answer to `GET /stats`: the API's original contract, kept exactly.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Processed events in the range.
    pub total_events: u64,
    /// Distinct non-empty `user_id`s among them.
    pub unique_users: u64,
    /// The most visited paths, most first, ties by path.
    pub top_paths: Vec<PathCount>,
}

/// One row of `top_paths`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathCount {
    /// The path.
    pub path: String,
    /// Events on it.
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_day_bounds() {
        let q = StatsQuery {
            site_id: "s".into(),
            from: Some(DateBound::parse("2026-11-01").unwrap()),
            to: Some(DateBound::parse("2026-11-01").unwrap()),
            ..Default::default()
        };
        let r = q.resolve().unwrap();
        assert_eq!(r.limit, DEFAULT_TOP_PATHS);
        assert_eq!((r.to.unwrap() - r.from.unwrap()).num_hours(), 24);
    }

    #[test]
    fn reversed_range_and_huge_limit_are_refused() {
        let mut q = StatsQuery::new("s");
        q.from = Some(DateBound::parse("2026-11-02").unwrap());
        q.to = Some(DateBound::parse("2026-11-01").unwrap());
        assert!(q.resolve().is_err());
        let mut q = StatsQuery::new("s");
        q.limit = Some(MAX_TOP_PATHS + 1);
        assert!(q.resolve().is_err());
    }
}
