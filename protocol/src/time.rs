//! Timestamps on the wire.
//!
//! Clients send RFC 3339 strings or epoch milliseconds; the stats query also takes plain
//! `YYYY-MM-DD` dates. Everything is UTC and kept to millisecond precision, which is what
//! both storage backends hold.

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Drops sub-millisecond precision so that values round-trip through both backends unchanged.
pub fn truncate_to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(t.timestamp_millis())
        .single()
        .unwrap_or(t)
}

/// Serde for an optional timestamp given as RFC 3339 or as epoch milliseconds.
pub mod flexible {
    use super::*;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Millis(i64),
        Text(String),
    }

    /// Writes RFC 3339 with milliseconds.
    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            None => s.serialize_none(),
        }
    }

    /// Reads RFC 3339 or epoch milliseconds; `null` is absent.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        use serde::de::Error;
        let raw = Option::<Raw>::deserialize(d).map_err(|_| {
            D::Error::custom("timestamp must be an RFC 3339 string or epoch milliseconds")
        })?;
        match raw {
            None => Ok(None),
            Some(Raw::Millis(ms)) => Utc
                .timestamp_millis_opt(ms)
                .single()
                .map(Some)
                .ok_or_else(|| D::Error::custom("timestamp is out of range")),
            Some(Raw::Text(s)) => DateTime::parse_from_rfc3339(&s)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|e| D::Error::custom(format!("timestamp is not RFC 3339: {e}"))),
        }
    }
}

/// A bound of a stats range: an instant, or a whole UTC day.
///
/// A day as `from` starts at its midnight; a day as `to` includes the whole day, which is
/// what people mean by `to=2026-11-25`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateBound {
    /// An exact instant.
    Instant(DateTime<Utc>),
    /// A calendar day in UTC.
    Day(NaiveDate),
}

impl DateBound {
    /// Parses `YYYY-MM-DD` or RFC 3339, for years 1 to 9999.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bound = if let Ok(day) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            Self::Day(day)
        } else {
            DateTime::parse_from_rfc3339(s)
                .map(|t| Self::Instant(t.with_timezone(&Utc)))
                .map_err(|_| format!("`{s}` is neither YYYY-MM-DD nor an RFC 3339 timestamp"))?
        };
        let year = match bound {
            Self::Day(d) => d.year(),
            Self::Instant(t) => t.year(),
        };
        if !(1..=9999).contains(&year) {
            return Err(format!("`{s}` is outside the years 1 to 9999"));
        }
        Ok(bound)
    }

    /// The first instant this bound admits, when used as the start of a range.
    pub fn as_start(&self) -> DateTime<Utc> {
        match self {
            Self::Instant(t) => *t,
            Self::Day(d) => day_start(*d),
        }
    }

    /// The first instant past the range, when used as its end (exclusive).
    pub fn as_end(&self) -> DateTime<Utc> {
        match self {
            Self::Instant(t) => *t,
            // Years stop at 9999 (`parse`), so the next day always exists.
            Self::Day(d) => day_start(*d)
                .checked_add_signed(TimeDelta::days(1))
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        }
    }
}

fn day_start(d: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&d.and_time(chrono::NaiveTime::MIN))
}

impl std::fmt::Display for DateBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Instant(t) => {
                f.write_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            }
            Self::Day(d) => write!(f, "{}", d.format("%Y-%m-%d")),
        }
    }
}

impl Serialize for DateBound {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DateBound {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_as_end_includes_the_whole_day() {
        let b = DateBound::parse("2026-11-25").unwrap();
        assert_eq!(b.as_start().to_rfc3339(), "2026-11-25T00:00:00+00:00");
        assert_eq!(b.as_end().to_rfc3339(), "2026-11-26T00:00:00+00:00");
    }

    #[test]
    fn rfc3339_with_offset_is_normalised_to_utc() {
        let b = DateBound::parse("2026-11-25T10:00:00+02:00").unwrap();
        assert_eq!(b.as_start().to_rfc3339(), "2026-11-25T08:00:00+00:00");
    }

    #[test]
    fn junk_is_refused_with_the_value_named() {
        let e = DateBound::parse("yesterday").unwrap_err();
        assert!(e.contains("yesterday"), "{e}");
    }

    #[test]
    fn the_last_days_chrono_knows_are_refused_not_overflowed() {
        for s in [
            "+262142-12-31",
            "-262143-01-01",
            "0000-01-01",
            "10000-01-01",
        ] {
            assert!(DateBound::parse(s).is_err(), "{s}");
        }
        let last = DateBound::parse("9999-12-31").unwrap();
        assert!(last.as_end() > last.as_start());
    }
}
