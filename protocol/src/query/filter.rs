//! Filters: comparisons of a dimension with values, and `and`, `or`, `not` of others,
//! read and written as Plausible's arrays.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Dimension, MAX_FILTER_VALUES};

/// A filter: a comparison of a dimension with values, or `and`, `or`, `not` of others.
/// On the wire, as in Plausible: `["is", "visit:browser", ["Chrome", "Firefox"]]`
/// (optionally with `{"case_sensitive": false}` after the values), `["and", [f, …]]`,
/// `["or", [f, …]]`, `["not", f]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub enum Filter {
    /// A comparison.
    Compare {
        /// How.
        op: Operator,
        /// What is compared: not a time dimension.
        dimension: Dimension,
        /// With what: any of them.
        values: Vec<String>,
        /// Whether case matters (it does by default).
        case_sensitive: bool,
    },
    /// All of them.
    And(Vec<Filter>),
    /// Any of them.
    Or(Vec<Filter>),
    /// Not it.
    Not(Box<Filter>),
}

impl std::ops::Not for Filter {
    type Output = Filter;

    /// `!filter`: not this.
    fn not(self) -> Filter {
        Filter::Not(Box::new(self))
    }
}

/// How a filter compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// Equal to one of the values.
    Is,
    /// Equal to none of them (a missing value counts as not equal).
    IsNot,
    /// Contains one of them.
    Contains,
    /// Contains none of them.
    ContainsNot,
    /// Matches one of them, as a regular expression.
    Matches,
    /// Matches none of them.
    MatchesNot,
}

impl Operator {
    const ALL: [(&'static str, Operator); 6] = [
        ("is", Self::Is),
        ("is_not", Self::IsNot),
        ("contains", Self::Contains),
        ("contains_not", Self::ContainsNot),
        ("matches", Self::Matches),
        ("matches_not", Self::MatchesNot),
    ];

    /// The name on the wire.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, op)| *op == self)
            .map_or("is", |(name, _)| name)
    }

    /// Whether this is a negated comparison.
    pub fn negated(self) -> bool {
        matches!(self, Self::IsNot | Self::ContainsNot | Self::MatchesNot)
    }
}

impl Filter {
    /// `dimension` is one of `values`.
    pub fn is<S: Into<String>>(dimension: Dimension, values: impl IntoIterator<Item = S>) -> Self {
        Self::compare(Operator::Is, dimension, values)
    }

    /// `dimension` contains one of `values`.
    pub fn contains<S: Into<String>>(
        dimension: Dimension,
        values: impl IntoIterator<Item = S>,
    ) -> Self {
        Self::compare(Operator::Contains, dimension, values)
    }

    /// `dimension` matches one of the regular expressions `patterns`.
    pub fn matches<S: Into<String>>(
        dimension: Dimension,
        patterns: impl IntoIterator<Item = S>,
    ) -> Self {
        Self::compare(Operator::Matches, dimension, patterns)
    }

    /// A comparison, case-sensitive.
    pub fn compare<S: Into<String>>(
        op: Operator,
        dimension: Dimension,
        values: impl IntoIterator<Item = S>,
    ) -> Self {
        Self::Compare {
            op,
            dimension,
            values: values.into_iter().map(Into::into).collect(),
            case_sensitive: true,
        }
    }

    /// Comparisons in this filter, nested ones included.
    pub fn count(&self) -> usize {
        match self {
            Self::Compare { .. } => 1,
            Self::And(all) | Self::Or(all) => all.iter().map(Filter::count).sum::<usize>() + 1,
            Self::Not(one) => one.count() + 1,
        }
    }

    /// Every dimension the filter compares.
    pub fn dimensions(&self) -> Vec<&Dimension> {
        match self {
            Self::Compare { dimension, .. } => vec![dimension],
            Self::And(all) | Self::Or(all) => all.iter().flat_map(Filter::dimensions).collect(),
            Self::Not(one) => one.dimensions(),
        }
    }
}

impl TryFrom<Value> for Filter {
    type Error = String;

    fn try_from(value: Value) -> Result<Self, String> {
        let Value::Array(parts) = &value else {
            return Err(format!("a filter is an array, not {value}"));
        };
        let op = parts.first().and_then(Value::as_str).unwrap_or_default();
        match (op, parts.as_slice()) {
            ("and" | "or", [_, Value::Array(inner)]) if !inner.is_empty() => {
                let inner = inner
                    .iter()
                    .map(|f| Filter::try_from(f.clone()))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(if op == "and" {
                    Self::And(inner)
                } else {
                    Self::Or(inner)
                })
            }
            ("not", [_, inner]) => Ok(Self::Not(Box::new(Filter::try_from(inner.clone())?))),
            (_, [_, Value::String(dimension), Value::Array(values), rest @ ..])
                if rest.len() <= 1 =>
            {
                let Some((_, op)) = Operator::ALL.iter().find(|(name, _)| *name == op) else {
                    return Err(format!(
                        "unknown filter operator `{op}`: use is, is_not, contains, contains_not, \
                         matches, matches_not, and, or or not"
                    ));
                };
                let dimension = Dimension::try_from(dimension.clone())?;
                if dimension.is_time() {
                    return Err(format!("cannot filter by `{dimension}`: use date_range"));
                }
                if values.is_empty() || values.len() > MAX_FILTER_VALUES {
                    return Err(format!(
                        "a filter compares with 1 to {MAX_FILTER_VALUES} values, not {}",
                        values.len()
                    ));
                }
                let values = values
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s.clone()),
                        Value::Number(n) => Ok(n.to_string()),
                        other => Err(format!("a filter value is a string, not {other}")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let case_sensitive = match rest.first() {
                    None => true,
                    Some(modifiers) => modifiers
                        .get("case_sensitive")
                        .and_then(Value::as_bool)
                        .ok_or_else(|| format!("unknown filter modifiers {modifiers}"))?,
                };
                Ok(Self::Compare {
                    op: *op,
                    dimension,
                    values,
                    case_sensitive,
                })
            }
            _ => Err(format!("cannot read the filter {value}")),
        }
    }
}

impl From<Filter> for Value {
    fn from(f: Filter) -> Value {
        match f {
            Filter::Compare {
                op,
                dimension,
                values,
                case_sensitive,
            } => {
                let mut parts = vec![
                    Value::from(op.name()),
                    Value::from(dimension.to_string()),
                    Value::from(values),
                ];
                if !case_sensitive {
                    parts.push(serde_json::json!({ "case_sensitive": false }));
                }
                Value::Array(parts)
            }
            Filter::And(all) => serde_json::json!(["and", all]),
            Filter::Or(all) => serde_json::json!(["or", all]),
            Filter::Not(one) => serde_json::json!(["not", *one]),
        }
    }
}
