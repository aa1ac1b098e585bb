//! Filters and dimension values, read off an event and the visit it is in.
//!
//! A comparison with a missing value (an event without the property, a visit without
//! a referrer) is false, so its negation (`is_not`, `contains_not`, `matches_not`) is
//! true. Regular expressions are Rust's `regex`: linear in the text, so no pattern can
//! make a query run away, and compiled with a size limit.

use std::borrow::Cow;

use beacon_protocol::query::{Dimension, Filter, Operator};
use regex::{Regex, RegexBuilder};

use crate::QueuedEvent;
use crate::rollup::VISIT_DIMS;

/// Largest compiled regular expression, in bytes.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// The visit an event is in, as filters and dimensions see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct VisitView<'a> {
    /// Its first event, whose attributes are the visit's.
    pub(crate) first: &'a QueuedEvent,
    /// The path of its last page view.
    pub(crate) exit_page: Option<&'a str>,
}

/// An event, and its visit if it has a user.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Subject<'a> {
    pub(crate) event: &'a QueuedEvent,
    pub(crate) visit: Option<VisitView<'a>>,
}

/// The value of `dim` for `s`; `None` when it has none (time dimensions have none here).
pub(crate) fn value_of<'a>(dim: &Dimension, s: &Subject<'a>) -> Option<Cow<'a, str>> {
    let e = s.event;
    match dim {
        Dimension::Page => e.path.as_deref().map(Cow::Borrowed),
        Dimension::Name => Some(Cow::Borrowed(&e.event_type)),
        Dimension::Hostname => e.context.hostname.as_deref().map(Cow::Borrowed),
        Dimension::Prop(key) => match e.props.as_ref()?.get(key)? {
            serde_json::Value::String(text) => Some(Cow::Borrowed(text)),
            serde_json::Value::Null => None,
            other => Some(Cow::Owned(other.to_string())),
        },
        Dimension::Visit("exit_page") => s.visit?.exit_page.map(Cow::Borrowed),
        Dimension::Visit(name) => {
            let first = s.visit?.first;
            let dim = VISIT_DIMS.iter().find(|d| d.name == *name)?;
            (dim.value)(first).map(Cow::Borrowed)
        }
        Dimension::Time(_) => None,
    }
}

/// A filter ready to run.
#[derive(Debug)]
pub(crate) enum Compiled {
    Compare {
        dim: Dimension,
        negated: bool,
        test: Test,
    },
    And(Vec<Compiled>),
    Or(Vec<Compiled>),
    Not(Box<Compiled>),
}

/// How a comparison tests one value.
#[derive(Debug)]
pub(crate) enum Test {
    Equal(Vec<String>, bool),
    Contains(Vec<String>, bool),
    Matches(Vec<Regex>),
}

impl Compiled {
    /// Compiles `filter`; an invalid or oversized regular expression is an error that
    /// shows it.
    pub(crate) fn new(filter: &Filter) -> Result<Self, String> {
        Ok(match filter {
            Filter::Compare {
                op,
                dimension,
                values,
                case_sensitive,
            } => {
                let folded = |values: &[String]| -> Vec<String> {
                    if *case_sensitive {
                        values.to_vec()
                    } else {
                        values.iter().map(|v| v.to_lowercase()).collect()
                    }
                };
                let test = match op {
                    Operator::Is | Operator::IsNot => Test::Equal(folded(values), *case_sensitive),
                    Operator::Contains | Operator::ContainsNot => {
                        Test::Contains(folded(values), *case_sensitive)
                    }
                    Operator::Matches | Operator::MatchesNot => Test::Matches(
                        values
                            .iter()
                            .map(|pattern| {
                                RegexBuilder::new(pattern)
                                    .case_insensitive(!case_sensitive)
                                    .size_limit(REGEX_SIZE_LIMIT)
                                    .build()
                                    .map_err(|e| format!("bad regular expression `{pattern}`: {e}"))
                            })
                            .collect::<Result<_, _>>()?,
                    ),
                };
                Self::Compare {
                    dim: dimension.clone(),
                    negated: op.negated(),
                    test,
                }
            }
            Filter::And(all) => Self::And(all.iter().map(Self::new).collect::<Result<_, _>>()?),
            Filter::Or(all) => Self::Or(all.iter().map(Self::new).collect::<Result<_, _>>()?),
            Filter::Not(one) => Self::Not(Box::new(Self::new(one)?)),
        })
    }

    /// Whether `s` passes.
    pub(crate) fn passes(&self, s: &Subject<'_>) -> bool {
        match self {
            Self::Compare { dim, negated, test } => {
                let hit = value_of(dim, s).is_some_and(|v| test.hits(&v));
                hit != *negated
            }
            Self::And(all) => all.iter().all(|f| f.passes(s)),
            Self::Or(all) => all.iter().any(|f| f.passes(s)),
            Self::Not(one) => !one.passes(s),
        }
    }
}

impl Test {
    fn hits(&self, value: &str) -> bool {
        let fold = |case_sensitive: bool| {
            if case_sensitive {
                Cow::Borrowed(value)
            } else {
                Cow::Owned(value.to_lowercase())
            }
        };
        match self {
            Self::Equal(values, case) => {
                let v = fold(*case);
                values.iter().any(|x| *x == *v)
            }
            Self::Contains(values, case) => {
                let v = fold(*case);
                values.iter().any(|x| v.contains(x.as_str()))
            }
            Self::Matches(patterns) => patterns.iter().any(|p| p.is_match(value)),
        }
    }
}

/// All of `filters`, or `None` when there are none.
pub(crate) fn compile(filters: &[Filter]) -> Result<Option<Compiled>, String> {
    match filters {
        [] => Ok(None),
        [one] => Compiled::new(one).map(Some),
        all => all
            .iter()
            .map(Compiled::new)
            .collect::<Result<Vec<_>, _>>()
            .map(|all| Some(Compiled::And(all))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::Context;

    fn event() -> QueuedEvent {
        QueuedEvent {
            event_id: uuid::Uuid::now_v7(),
            site_id: "s".into(),
            event_type: "page_view".into(),
            path: Some("/Blog/post".into()),
            user_id: Some("u".into()),
            timestamp: chrono::Utc::now(),
            ingested_at: chrono::Utc::now(),
            props: json!({"plan": "pro", "n": 3}).as_object().cloned(),
            context: Context {
                browser: Some("Chrome".into()),
                ..Context::default()
            },
            continues: None,
        }
    }

    fn passes(filter: serde_json::Value) -> bool {
        let e = event();
        let subject = Subject {
            event: &e,
            visit: Some(VisitView {
                first: &e,
                exit_page: Some("/bye"),
            }),
        };
        let filter: Filter = serde_json::from_value(filter).unwrap();
        Compiled::new(&filter).unwrap().passes(&subject)
    }

    #[test]
    fn comparisons_and_combinations() {
        assert!(passes(json!([
            "is",
            "visit:browser",
            ["Firefox", "Chrome"]
        ])));
        assert!(!passes(json!(["is", "visit:browser", ["chrome"]])));
        assert!(passes(
            json!(["is", "visit:browser", ["chrome"], {"case_sensitive": false}])
        ));
        assert!(passes(
            json!(["contains", "event:page", ["/blog"], {"case_sensitive": false}])
        ));
        assert!(passes(json!(["matches", "event:page", ["^/Blog/.+$"]])));
        assert!(passes(json!(["is", "event:props:n", ["3"]])));
        assert!(passes(json!(["is", "visit:exit_page", ["/bye"]])));
        // Missing values: the comparison is false, its negation true.
        assert!(!passes(json!(["is", "visit:country", ["DE"]])));
        assert!(passes(json!(["is_not", "visit:country", ["DE"]])));
        assert!(passes(json!(["matches_not", "event:props:missing", ["."]])));
        assert!(passes(json!([
            "and",
            [
                ["is", "event:name", ["page_view"]],
                ["not", ["is", "event:props:plan", ["free"]]]
            ]
        ])));
        assert!(!passes(json!([
            "or",
            [
                ["is", "event:name", ["click"]],
                ["contains_not", "event:page", ["post"]]
            ]
        ])));
    }

    #[test]
    fn bad_patterns_are_named() {
        let filter: Filter =
            serde_json::from_value(json!(["matches", "event:page", ["(unclosed"]])).unwrap();
        assert!(Compiled::new(&filter).unwrap_err().contains("(unclosed"));
        let huge: Filter =
            serde_json::from_value(json!(["matches", "event:page", ["(a{1000}){1000}"]])).unwrap();
        assert!(Compiled::new(&huge).is_err());
    }
}
