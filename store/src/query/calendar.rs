//! Days, weeks and months in a time zone: a query's date range as instants, and the
//! label of the time bucket an instant falls in.
//!
//! Ranges of dates run from the first date's local midnight to the midnight after the
//! last date. Relative periods end with today, included. A zone whose offset is not a
//! whole number of hours (Asia/Kolkata, +05:30) puts local midnights at half past a UTC
//! hour, which no rollup bucket starts at: such queries are answered from raw events,
//! exactly, only slower.

use beacon_protocol::query::{DateRange, PERIODS, TimeGrain};
use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use crate::rollup::{DAY_MS, HOUR_MS};

/// A resolved range, `[from, to)` in epoch milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) from: i64,
    pub(crate) to: i64,
}

impl Span {
    /// Whether both ends are whole UTC hours, as buckets are.
    pub(crate) fn on_hours(&self) -> bool {
        self.from.rem_euclid(HOUR_MS) == 0 && self.to.rem_euclid(HOUR_MS) == 0
    }
}

/// The instants of `range` in `tz`, today being the day of `now` there. `first_event`
/// (the site's earliest) starts `"all"`; without one, `"all"` is today.
pub(crate) fn resolve(
    range: &DateRange,
    tz: Tz,
    now: DateTime<Utc>,
    first_event: Option<i64>,
) -> Result<Span, String> {
    let today = now.with_timezone(&tz).date_naive();
    let tomorrow = midnight(tz, today + Duration::days(1))?;
    let days_back = |n: i64| -> Result<Span, String> {
        Ok(Span {
            from: midnight(tz, today - Duration::days(n - 1))?,
            to: tomorrow,
        })
    };
    let months_back = |n: u32| -> Result<Span, String> {
        let first = today.with_day(1).ok_or("no first day of the month")?;
        let start = first
            .checked_sub_months(chrono::Months::new(n - 1))
            .ok_or("the range starts before year 1")?;
        Ok(Span {
            from: midnight(tz, start)?,
            to: tomorrow,
        })
    };
    let span = match range {
        DateRange::Period(p) => match p.as_str() {
            "day" => days_back(1)?,
            "7d" => days_back(7)?,
            "28d" => days_back(28)?,
            "30d" => days_back(30)?,
            "91d" => days_back(91)?,
            "month" => months_back(1)?,
            "6mo" => months_back(6)?,
            "12mo" => months_back(12)?,
            "year" => Span {
                from: midnight(tz, today.with_ordinal(1).ok_or("no first day of the year")?)?,
                to: tomorrow,
            },
            "all" => {
                let first = first_event
                    .and_then(DateTime::<Utc>::from_timestamp_millis)
                    .map_or(today, |t| t.with_timezone(&tz).date_naive());
                Span {
                    from: midnight(tz, first.min(today))?,
                    to: tomorrow,
                }
            }
            other => {
                return Err(format!(
                    "unknown date_range `{other}`: use one of {} or [start, end]",
                    PERIODS.join(", ")
                ));
            }
        },
        DateRange::Between(start, end) => {
            let from = bound(start, tz, false)?;
            let to = bound(end, tz, true)?;
            if from >= to {
                return Err(format!(
                    "date_range ends ({end}) before it starts ({start})"
                ));
            }
            Span { from, to }
        }
    };
    Ok(span)
}

/// One end of `[start, end]`: a date (its local midnight, or the next one for the end)
/// or an RFC 3339 instant (for the end, the end of its second, or millisecond).
fn bound(text: &str, tz: Tz, end: bool) -> Result<i64, String> {
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let date = if end {
            date.succ_opt().ok_or("the date is too late")?
        } else {
            date
        };
        return midnight(tz, date);
    }
    let instant = DateTime::parse_from_rfc3339(text)
        .map_err(|_| format!("`{text}` is neither a date (YYYY-MM-DD) nor an RFC 3339 time"))?;
    if !(1..=9999).contains(&instant.year()) {
        return Err(format!("`{text}` is not between the years 1 and 9999"));
    }
    let t = instant.timestamp_millis();
    Ok(match (end, instant.timestamp_subsec_millis()) {
        (false, _) => t,
        (true, 0) => t + 1000,
        (true, _) => t + 1,
    })
}

/// The first instant of `date` in `tz` (an hour later where midnight does not exist).
fn midnight(tz: Tz, date: NaiveDate) -> Result<i64, String> {
    if !(1..=9999).contains(&date.year()) {
        return Err(format!("{date} is not between the years 1 and 9999"));
    }
    for hour in 0..3 {
        let local = date.and_hms_opt(hour, 0, 0).ok_or("no such time")?;
        match tz.from_local_datetime(&local) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                return Ok(t.with_timezone(&Utc).timestamp_millis());
            }
            LocalResult::None => {}
        }
    }
    Err(format!("{date} has no start in {tz}"))
}

/// The grain of `time` (auto) for a range: hours up to two days, days up to 100,
/// months beyond.
pub(crate) fn auto_grain(span: Span) -> TimeGrain {
    let days = (span.to - span.from) / DAY_MS;
    if days <= 2 {
        TimeGrain::Hour
    } else if days <= 100 {
        TimeGrain::Day
    } else {
        TimeGrain::Month
    }
}

/// The label of the time bucket `t` falls in, in `tz`: `2024-01-31 13:00:00` for hours,
/// the date for days, the Monday for weeks, the first of the month for months.
pub(crate) fn label(t: i64, grain: TimeGrain, tz: Tz) -> String {
    let Some(local) = DateTime::<Utc>::from_timestamp_millis(t).map(|t| t.with_timezone(&tz))
    else {
        return String::new();
    };
    let date = local.date_naive();
    match grain {
        TimeGrain::Hour => local.format("%Y-%m-%d %H:00:00").to_string(),
        TimeGrain::Auto | TimeGrain::Day => date.to_string(),
        TimeGrain::Week => {
            (date - Duration::days(i64::from(date.weekday().num_days_from_monday()))).to_string()
        }
        TimeGrain::Month => date.with_day(1).unwrap_or(date).to_string(),
    }
}

/// Every label of `grain` in the range, in order.
pub(crate) fn labels(span: Span, grain: TimeGrain, tz: Tz) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut t = span.from;
    while t < span.to {
        let l = label(t, grain, tz);
        if out.last() != Some(&l) {
            out.push(l);
        }
        // Hours step by an hour; longer grains by an hour too near their edges would be
        // slow, so by whole days, which every label change falls on.
        t += if grain == TimeGrain::Hour {
            HOUR_MS
        } else {
            HOUR_MS.max(day_step(t, tz))
        };
    }
    out
}

/// At most how many labels `labels` gives: a grain is never shorter than its shortest
/// local length (a day of 23 hours, a month of 28 days less one).
pub(crate) fn most_labels(span: Span, grain: TimeGrain) -> i64 {
    let shortest = match grain {
        TimeGrain::Hour => HOUR_MS,
        TimeGrain::Day | TimeGrain::Auto => DAY_MS - HOUR_MS,
        TimeGrain::Week => 7 * DAY_MS - HOUR_MS,
        TimeGrain::Month => 28 * DAY_MS - HOUR_MS,
    };
    (span.to - span.from) / shortest + 2
}

/// From `t`, the time to the next local midnight (at least an hour).
fn day_step(t: i64, tz: Tz) -> i64 {
    let Some(local) = DateTime::<Utc>::from_timestamp_millis(t).map(|t| t.with_timezone(&tz))
    else {
        return DAY_MS;
    };
    let next = local
        .date_naive()
        .succ_opt()
        .and_then(|d| midnight(tz, d).ok());
    next.map_or(DAY_MS, |n| (n - t).max(HOUR_MS))
}

/// Whether `tz` is UTC at every instant of the range, so that UTC day buckets are its
/// days.
pub(crate) fn is_utc(tz: Tz, span: Span) -> bool {
    use chrono::Offset;
    let offset_at = |t: i64| {
        DateTime::<Utc>::from_timestamp_millis(t)
            .map(|t| t.with_timezone(&tz).offset().fix().local_minus_utc())
    };
    let step = 30 * DAY_MS;
    let mut t = span.from;
    while t < span.to {
        if offset_at(t) != Some(0) {
            return false;
        }
        t = t.saturating_add(step);
    }
    offset_at(span.to - 1) == Some(0)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    fn ms(t: DateTime<Utc>) -> i64 {
        t.timestamp_millis()
    }

    #[test]
    fn periods_end_with_today_in_the_zone() {
        let now = at(2024, 3, 15, 23); // already the 16th in Berlin
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let seven = resolve(&DateRange::Period("7d".into()), berlin, now, None).unwrap();
        assert_eq!(seven.from, ms(at(2024, 3, 9, 23)));
        assert_eq!(seven.to, ms(at(2024, 3, 16, 23)));
        let month = resolve(&DateRange::Period("month".into()), Tz::UTC, now, None).unwrap();
        assert_eq!(
            (month.from, month.to),
            (ms(at(2024, 3, 1, 0)), ms(at(2024, 3, 16, 0)))
        );
        let six = resolve(&DateRange::Period("6mo".into()), Tz::UTC, now, None).unwrap();
        assert_eq!(six.from, ms(at(2023, 10, 1, 0)));
        let all = resolve(
            &DateRange::Period("all".into()),
            Tz::UTC,
            now,
            Some(ms(at(2020, 5, 5, 5))),
        );
        assert_eq!(all.unwrap().from, ms(at(2020, 5, 5, 0)));
        assert!(resolve(&DateRange::Period("fortnight".into()), Tz::UTC, now, None).is_err());
    }

    #[test]
    fn dates_and_instants_include_their_ends() {
        let between = |a: &str, b: &str| {
            resolve(
                &DateRange::Between(a.into(), b.into()),
                Tz::UTC,
                at(2024, 1, 1, 0),
                None,
            )
        };
        let days = between("2024-01-01", "2024-01-31").unwrap();
        assert_eq!(
            (days.from, days.to),
            (ms(at(2024, 1, 1, 0)), ms(at(2024, 2, 1, 0)))
        );
        let times = between("2024-01-01T12:00:00+02:00", "2024-01-01T15:59:59+02:00").unwrap();
        assert_eq!(
            (times.from, times.to),
            (ms(at(2024, 1, 1, 10)), ms(at(2024, 1, 1, 14)))
        );
        assert!(between("2024-02-01", "2024-01-01").is_err());
        assert!(between("yesterday", "2024-01-01").is_err());
        assert!(between("+262142-12-31", "2024-01-01").is_err());
    }

    #[test]
    fn labels_follow_the_zone_and_half_hour_zones_are_off_the_hour() {
        let kolkata: Tz = "Asia/Kolkata".parse().unwrap();
        let day = resolve(
            &DateRange::Period("day".into()),
            kolkata,
            at(2024, 1, 10, 12),
            None,
        );
        let day = day.unwrap();
        assert!(!day.on_hours());
        assert_eq!(labels(day, TimeGrain::Hour, kolkata).len(), 24);
        assert_eq!(
            label(day.from, TimeGrain::Hour, kolkata),
            "2024-01-10 00:00:00"
        );
        let wed = ms(at(2024, 1, 10, 12));
        assert_eq!(label(wed, TimeGrain::Week, Tz::UTC), "2024-01-08");
        assert_eq!(label(wed, TimeGrain::Month, Tz::UTC), "2024-01-01");
        let span = Span {
            from: ms(at(2024, 1, 1, 0)),
            to: ms(at(2024, 3, 1, 0)),
        };
        assert_eq!(
            labels(span, TimeGrain::Month, Tz::UTC),
            ["2024-01-01", "2024-02-01"]
        );
        assert_eq!(labels(span, TimeGrain::Day, Tz::UTC).len(), 60);
        assert!(is_utc(Tz::UTC, span));
        assert!(!is_utc(
            "Europe/London".parse().unwrap(),
            Span {
                from: span.from,
                to: ms(at(2024, 7, 1, 0))
            }
        ));
    }
}
