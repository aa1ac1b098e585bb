//! Visits followed batch by batch, against all events at once.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::rollup::{Granularity, PATH};
use crate::{Context, from_millis};

fn keys() -> Keys {
    Keys::from_secret(&[7; 32])
}

fn event(user: &str, t: i64, event_type: &str, path: &str, source: &str) -> QueuedEvent {
    QueuedEvent {
        event_id: Uuid::now_v7(),
        site_id: "s".into(),
        event_type: event_type.into(),
        path: Some(path.into()),
        user_id: Some(user.into()),
        timestamp: from_millis(t).unwrap(),
        ingested_at: Utc::now(),
        props: None,
        context: Context {
            source: Some(source.into()),
            ..Context::default()
        },
        continues: None,
    }
}

/// Visits by the hour they started: (visits, bounces, ms, page views, events), and
/// visits by entry page, worked out from all events at once.
type Expected = (BTreeMap<i64, [i64; 5]>, BTreeMap<String, i64>);

fn brute_force(events: &[QueuedEvent]) -> Expected {
    let mut by_user: BTreeMap<&str, Vec<&QueuedEvent>> = BTreeMap::new();
    for e in events {
        by_user
            .entry(e.user_id.as_deref().unwrap())
            .or_default()
            .push(e);
    }
    let (mut hours, mut entries) = (BTreeMap::new(), BTreeMap::new());
    for (_, mut events) in by_user {
        events.sort_by_key(|e| (millis(e.timestamp), e.event_id));
        let mut visits: Vec<Vec<&QueuedEvent>> = Vec::new();
        for e in events {
            let t = millis(e.timestamp);
            match visits.last_mut() {
                Some(v)
                    if t - millis(v[v.len() - 1].timestamp) <= GAP_MS
                        && t - millis(v[0].timestamp) < MAX_VISIT_MS =>
                {
                    v.push(e)
                }
                _ => visits.push(vec![e]),
            }
        }
        for v in visits {
            let pv = v.iter().filter(|e| e.event_type == "page_view").count() as i64;
            let (first, last) = (millis(v[0].timestamp), millis(v[v.len() - 1].timestamp));
            let h: &mut [i64; 5] = hours.entry(hour_of(first)).or_default();
            h[0] += 1;
            h[1] += i64::from(v.len() == 1 && pv == 1);
            h[2] += last - first;
            h[3] += pv;
            h[4] += v.len() as i64;
            *entries.entry(v[0].path.clone().unwrap()).or_default() += 1;
        }
    }
    (hours, entries)
}

#[test]
fn visits_followed_batch_by_batch_match_all_events_at_once() {
    let keys = keys();
    let mut rng = StdRng::seed_from_u64(3);
    let base = Utc
        .with_ymd_and_hms(2026, 3, 1, 22, 0, 0)
        .unwrap()
        .timestamp_millis();
    let mut events = Vec::new();
    for u in 0..40 {
        let mut t = base + rng.random_range(0..HOUR_MS);
        for _ in 0..rng.random_range(1..12) {
            let kind = if rng.random_bool(0.8) {
                "page_view"
            } else {
                "click"
            };
            let path = format!("/{}", rng.random_range(0..5));
            let source = ["Google", "Direct / None"][rng.random_range(0..2)];
            events.push(event(&format!("u{u}"), t, kind, &path, source));
            // Gaps around the half hour, some over it, some days long.
            t += match rng.random_range(0..10) {
                0 => 2 * DAY_MS,
                1..=3 => GAP_MS + rng.random_range(1..60_000),
                _ => rng.random_range(0..GAP_MS),
            };
        }
    }
    events.sort_by_key(|e| millis(e.timestamp));
    let (hours, entries) = brute_force(&events);

    let mut states = HashMap::new();
    let mut total = Contribution::default();
    for batch in events.chunks(17) {
        let refs: Vec<&QueuedEvent> = batch.iter().collect();
        let mut out = Contribution::default();
        add_visits(&keys, &refs, &mut states, &mut out);
        // Through their stored form, as the stores keep them.
        for state in states.values_mut() {
            *state = VisitState::from_bytes(&state.to_bytes()).unwrap();
        }
        for (key, delta) in out.buckets {
            total.buckets.entry(key).or_default().merge(&delta);
        }
        total.values.extend(out.values);
    }
    let mut got_hours = BTreeMap::new();
    let mut got_entries = BTreeMap::new();
    for (key, bucket) in &total.buckets {
        if key.event_type != VISIT_BUCKET || key.granularity != Granularity::Hour {
            continue;
        }
        let e = &bucket.extra;
        got_hours.insert(
            key.start,
            [
                bucket.count as i64,
                e[BOUNCES],
                e[DURATION_MS],
                e[PAGEVIEWS],
                e[EVENTS],
            ],
        );
        for (id, c) in bucket.dims["entry_page"].counters() {
            *got_entries.entry(total.values[&id].clone()).or_default() += c.count as i64;
        }
    }
    assert_eq!(got_hours, hours);
    assert_eq!(got_entries, entries);
    // Days add up to the hours.
    let days: i64 = total
        .buckets
        .iter()
        .filter(|(k, _)| k.event_type == VISIT_BUCKET && k.granularity == Granularity::Day)
        .map(|(_, b)| b.count as i64)
        .sum();
    assert_eq!(days, hours.values().map(|h| h[0]).sum::<i64>());
}

#[test]
fn visitors_of_a_value_count_once_a_day() {
    let keys = keys();
    let day = Utc
        .with_ymd_and_hms(2026, 3, 1, 0, 0, 0)
        .unwrap()
        .timestamp_millis();
    let events = [
        event("u", day + HOUR_MS, "page_view", "/a", "Google"),
        event("u", day + 5 * HOUR_MS, "page_view", "/a", "Google"),
        event("u", day + 5 * HOUR_MS + 1, "page_view", "/b", "Google"),
        event("u", day + DAY_MS + HOUR_MS, "page_view", "/a", "Google"),
    ];
    let mut states = HashMap::new();
    let mut out = Contribution::default();
    add_visits(
        &keys,
        &events.iter().collect::<Vec<_>>(),
        &mut states,
        &mut out,
    );
    let visitors = |granularity, start, bucket: &str, dim: &str, value: &str| {
        let key = BucketKey {
            site_id: "s".into(),
            granularity,
            start,
            event_type: bucket.into(),
        };
        out.buckets[&key].dims[dim]
            .counters()
            .find(|(id, _)| *id == keys.value(value))
            .map_or(0, |(_, c)| c.extra[VISITORS])
    };
    assert_eq!(
        visitors(Granularity::Day, day, "page_view", PATH.name, "/a"),
        1
    );
    assert_eq!(visitors(Granularity::Day, day, "", PATH.name, "/b"), 1);
    assert_eq!(
        visitors(Granularity::Day, day + DAY_MS, "", PATH.name, "/a"),
        1
    );
    // Two visits from Google that day, one visitor.
    assert_eq!(
        visitors(Granularity::Day, day, VISIT_BUCKET, "source", "Google"),
        1
    );
    assert_eq!(states.len(), 1);
}

#[test]
fn a_visit_goes_on_under_the_id_of_the_day_before() {
    let midnight = Utc
        .with_ymd_and_hms(2026, 3, 2, 0, 0, 0)
        .unwrap()
        .timestamp_millis();
    let yesterday = event("old", midnight - 60_000, "page_view", "/a", "Google");
    let mut today = event("new", midnight + 60_000, "page_view", "/b", "Google");
    today.continues = Some("old".into());
    let mut states = HashMap::new();
    let mut out = Contribution::default();
    add_visits(&keys(), &[&yesterday], &mut states, &mut out);
    let rewrites = continuations(std::slice::from_ref(&today), &states);
    assert_eq!(rewrites, vec![(today.event_id, "old".to_owned())]);
    // Long after the old visit ended, the new id keeps its own.
    today.timestamp = from_millis(midnight + GAP_MS).unwrap();
    assert!(continuations(std::slice::from_ref(&today), &states).is_empty());
}

#[test]
fn states_round_trip_and_bad_bytes_are_an_error() {
    let state = VisitState {
        start: -5,
        last: 1_000,
        events: 3,
        pageviews: 2,
        attrs: (0..VISIT_DIMS.len() as u64).map(|i| i * 7).collect(),
        day: 0,
        seen: [1, u64::MAX].into(),
    };
    assert_eq!(VisitState::from_bytes(&state.to_bytes()).unwrap(), state);
    assert!(VisitState::from_bytes(&[state::VERSION, 0x80]).is_err());
    assert!(VisitState::from_bytes(&[]).is_err());
}
