//! How a stats range splits into rollup buckets and raw scans: whole days in the middle,
//! whole hours next to them, raw events only at the ragged ends (under an hour each).

use beacon_protocol::TimeRange;

use super::{DAY_MS, Granularity, HOUR_MS};
use crate::millis;

/// A piece of a stats range, in epoch milliseconds, `to` exclusive; `None` is unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// Whole buckets starting in `[from, to)`.
    Buckets {
        /// Hour or day.
        granularity: Granularity,
        /// First bucket start, inclusive.
        from: Option<i64>,
        /// Last bucket end, exclusive.
        to: Option<i64>,
    },
    /// Raw events with timestamps in `[from, to)`: less than an hour at either end.
    Raw {
        /// Inclusive.
        from: i64,
        /// Exclusive.
        to: i64,
    },
}

/// Splits `[from, to)` into the fewest pieces: whole days in the middle, whole hours
/// next to them, raw events at the ragged ends.
pub fn plan(range: &TimeRange) -> Vec<Piece> {
    let from = range.from.map(millis);
    let to = range.to.map(millis);
    let ceil = |t: i64, w: i64| t + (w - t.rem_euclid(w)) % w;
    let floor = |t: i64, w: i64| t - t.rem_euclid(w);
    let mut pieces = Vec::new();
    // Days first: [first whole day, last whole day).
    let day_from = from.map(|f| ceil(f, DAY_MS));
    let day_to = to.map(|t| floor(t, DAY_MS));
    let days_exist = match (day_from, day_to) {
        (Some(a), Some(b)) => a < b,
        _ => true,
    };
    if !days_exist {
        // No whole day inside: hours and raw only, within [from, to).
        if let (Some(f), Some(t)) = (from, to) {
            hours_and_raw(f, t, &mut pieces);
        }
        return pieces;
    }
    if let (Some(f), Some(df)) = (from, day_from) {
        hours_and_raw(f, df, &mut pieces);
    }
    pieces.push(Piece::Buckets {
        granularity: Granularity::Day,
        from: day_from,
        to: day_to,
    });
    if let (Some(dt), Some(t)) = (day_to, to) {
        hours_and_raw(dt, t, &mut pieces);
    }
    pieces
}

/// `[from, to)` within at most a day and a bit: raw, whole hours, raw.
fn hours_and_raw(from: i64, to: i64, pieces: &mut Vec<Piece>) {
    if from >= to {
        return;
    }
    let hour_from = from + (HOUR_MS - from.rem_euclid(HOUR_MS)) % HOUR_MS;
    let hour_to = to - to.rem_euclid(HOUR_MS);
    if hour_from >= hour_to {
        pieces.push(Piece::Raw { from, to });
        return;
    }
    if from < hour_from {
        pieces.push(Piece::Raw {
            from,
            to: hour_from,
        });
    }
    pieces.push(Piece::Buckets {
        granularity: Granularity::Hour,
        from: Some(hour_from),
        to: Some(hour_to),
    });
    if hour_to < to {
        pieces.push(Piece::Raw { from: hour_to, to });
    }
}

/// The bucket type to read for a query: the event type, or all types.
pub fn bucket_type(range: &TimeRange) -> &str {
    range.event_type.as_deref().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    fn range(from: Option<i64>, to: Option<i64>) -> TimeRange {
        let at = |ms: i64| Utc.timestamp_millis_opt(ms).unwrap();
        TimeRange {
            site_id: "s".into(),
            from: from.map(at),
            to: to.map(at),
            event_type: None,
            limit: 10,
        }
    }

    #[test]
    fn whole_days_use_day_buckets_only() {
        assert_eq!(
            plan(&range(None, None)),
            [Piece::Buckets {
                granularity: Granularity::Day,
                from: None,
                to: None
            }]
        );
        assert_eq!(
            plan(&range(Some(DAY_MS), Some(8 * DAY_MS))),
            [Piece::Buckets {
                granularity: Granularity::Day,
                from: Some(DAY_MS),
                to: Some(8 * DAY_MS)
            }]
        );
    }

    #[test]
    fn ragged_ends_use_hours_then_raw() {
        let from = DAY_MS - 2 * HOUR_MS - 5;
        let to = 3 * DAY_MS + HOUR_MS + 7;
        assert_eq!(
            plan(&range(Some(from), Some(to))),
            [
                Piece::Raw {
                    from,
                    to: DAY_MS - 2 * HOUR_MS
                },
                Piece::Buckets {
                    granularity: Granularity::Hour,
                    from: Some(DAY_MS - 2 * HOUR_MS),
                    to: Some(DAY_MS)
                },
                Piece::Buckets {
                    granularity: Granularity::Day,
                    from: Some(DAY_MS),
                    to: Some(3 * DAY_MS)
                },
                Piece::Buckets {
                    granularity: Granularity::Hour,
                    from: Some(3 * DAY_MS),
                    to: Some(3 * DAY_MS + HOUR_MS)
                },
                Piece::Raw {
                    from: 3 * DAY_MS + HOUR_MS,
                    to
                },
            ]
        );
        // Inside one hour: raw only. Open ends keep their days.
        assert_eq!(
            plan(&range(Some(10), Some(20))),
            [Piece::Raw { from: 10, to: 20 }]
        );
        assert_eq!(
            plan(&range(None, Some(DAY_MS + 1))),
            [
                Piece::Buckets {
                    granularity: Granularity::Day,
                    from: None,
                    to: Some(DAY_MS)
                },
                Piece::Raw {
                    from: DAY_MS,
                    to: DAY_MS + 1
                },
            ]
        );
        // Before 1970 too.
        assert_eq!(
            plan(&range(Some(-DAY_MS - 1), Some(-DAY_MS + HOUR_MS))),
            [
                Piece::Raw {
                    from: -DAY_MS - 1,
                    to: -DAY_MS
                },
                Piece::Buckets {
                    granularity: Granularity::Hour,
                    from: Some(-DAY_MS),
                    to: Some(-DAY_MS + HOUR_MS)
                },
            ]
        );
    }
}
