//! The query API against a brute-force computation over the raw events, on every
//! backend: random visitors with random user agents, referrers, campaigns and gaps
//! between events, asked in several time zones, every metric and dimension, with and
//! without filters; the rollups (fast) and the raw scan each held to the same answers.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap, HashSet};

use beacon_protocol::query::{DateRange, Dimension, Filter, Metric, Query, TimeGrain};
use beacon_store::{Context, Engine, QueuedEvent, Store};
use beacon_testkit::TestBackend;
use beacon_testkit::store::{drain, enqueue, open};
use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use chrono_tz::Tz;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use uuid::Uuid;

const GAP: i64 = 30 * 60 * 1000;
const MAX_VISIT: i64 = 24 * 3600 * 1000;
const DAY: i64 = 24 * 3600 * 1000;

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap()
}

/// Random visitors over four days, in time order.
fn events(site: &str, seed: u64) -> Vec<QueuedEvent> {
    let mut rng = StdRng::seed_from_u64(seed);
    let pick = |rng: &mut StdRng, xs: &[&str]| xs[rng.random_range(0..xs.len())].to_owned();
    let mut out = Vec::new();
    for u in 0..60 {
        let mut t = start().timestamp_millis() + rng.random_range(0..4 * DAY);
        let n = rng.random_range(1..15);
        for _ in 0..n {
            let event_type = pick(
                &mut rng,
                &["page_view", "page_view", "page_view", "click", "signup"],
            );
            let context = Context {
                hostname: Some(pick(&mut rng, &["shop.example", "blog.example"])),
                source: Some(pick(&mut rng, &["Google", "Direct / None", "Hacker News"])),
                channel: Some(pick(&mut rng, &["Organic Search", "Direct", "Referral"])),
                referrer: rng
                    .random_bool(0.5)
                    .then(|| pick(&mut rng, &["news.ycombinator.com", "www.google.com/search"])),
                utm_campaign: rng
                    .random_bool(0.3)
                    .then(|| pick(&mut rng, &["launch", "spring"])),
                browser: Some(pick(&mut rng, &["Chrome", "Firefox", "Safari"])),
                browser_version: Some(pick(&mut rng, &["120", "17"])),
                os: Some(pick(&mut rng, &["Windows", "iOS", "macOS"])),
                device: Some(pick(&mut rng, &["Desktop", "Mobile", "Tablet"])),
                country: rng
                    .random_bool(0.8)
                    .then(|| pick(&mut rng, &["DE", "US", "FR"])),
                ..Context::default()
            };
            out.push(QueuedEvent {
                event_id: Uuid::now_v7(),
                site_id: site.to_owned(),
                path: Some(format!("/p{}", rng.random_range(0..6))),
                user_id: (rng.random_range(0..20) > 0).then(|| format!("u{u}")),
                timestamp: DateTime::from_timestamp_millis(t).unwrap(),
                ingested_at: Utc::now(),
                props: rng
                    .random_bool(0.5)
                    .then(|| {
                        json!({"plan": pick(&mut rng, &["free", "pro"])})
                            .as_object()
                            .cloned()
                    })
                    .flatten(),
                event_type,
                context,
                continues: None,
            });
            t += match rng.random_range(0..10) {
                0 => rng.random_range(GAP..DAY),
                1 | 2 => GAP + rng.random_range(1..600_000),
                3 => GAP, // exactly the gap: still the same visit
                _ => rng.random_range(0..GAP / 3),
            };
        }
    }
    out.sort_by_key(|e| (e.timestamp, e.event_id));
    out
}

// ---- The brute force: every definition, from all events at once. ----

struct Visit<'a> {
    events: Vec<&'a QueuedEvent>,
}

fn ms(e: &QueuedEvent) -> i64 {
    e.timestamp.timestamp_millis()
}

fn visits(events: &[QueuedEvent]) -> Vec<Visit<'_>> {
    let mut by_user: BTreeMap<&str, Vec<&QueuedEvent>> = BTreeMap::new();
    for e in events {
        if let Some(u) = &e.user_id {
            by_user.entry(u).or_default().push(e);
        }
    }
    let mut out: Vec<Visit<'_>> = Vec::new();
    for (_, mut es) in by_user {
        es.sort_by_key(|e| (ms(e), e.event_id));
        let mut current: Vec<&QueuedEvent> = Vec::new();
        for e in es {
            let continues = match (current.first(), current.last()) {
                (Some(f), Some(l)) => ms(e) - ms(l) <= GAP && ms(e) - ms(f) < MAX_VISIT,
                _ => true,
            };
            if !continues {
                out.push(Visit {
                    events: std::mem::take(&mut current),
                });
            }
            current.push(e);
        }
        out.push(Visit { events: current });
    }
    out
}

fn value(d: &Dimension, e: &QueuedEvent, v: Option<&Visit<'_>>) -> Option<String> {
    let c = |e: &QueuedEvent| e.context.clone();
    match d {
        Dimension::Page => e.path.clone(),
        Dimension::Name => Some(e.event_type.clone()),
        Dimension::Hostname => c(e).hostname,
        Dimension::Prop(k) => e
            .props
            .as_ref()?
            .get(k)
            .map(|v| v.as_str().map_or(v.to_string(), str::to_owned)),
        Dimension::Visit(name) => {
            let v = v?;
            let f = v.events[0];
            match *name {
                "entry_page" => f.path.clone(),
                "exit_page" => v
                    .events
                    .iter()
                    .rev()
                    .find(|e| e.event_type == "page_view")?
                    .path
                    .clone(),
                "source" => c(f).source,
                "referrer" => c(f).referrer,
                "channel" => c(f).channel,
                "utm_campaign" => c(f).utm_campaign,
                "device" => c(f).device,
                "browser" => c(f).browser,
                "browser_version" => c(f).browser_version,
                "os" => c(f).os,
                "country" => c(f).country,
                _ => None,
            }
        }
        Dimension::Time(_) => None,
    }
}

fn passes(f: &Filter, e: &QueuedEvent, v: Option<&Visit<'_>>) -> bool {
    match f {
        Filter::Compare {
            op,
            dimension,
            values,
            case_sensitive,
        } => {
            use beacon_protocol::query::Operator::*;
            let got =
                value(dimension, e, v).map(|x| if *case_sensitive { x } else { x.to_lowercase() });
            let vals: Vec<String> = values
                .iter()
                .map(|x| {
                    if *case_sensitive {
                        x.clone()
                    } else {
                        x.to_lowercase()
                    }
                })
                .collect();
            let hit = got.is_some_and(|g| match op {
                Is | IsNot => vals.contains(&g),
                Contains | ContainsNot => vals.iter().any(|x| g.contains(x.as_str())),
                Matches | MatchesNot => vals
                    .iter()
                    .any(|x| regex::Regex::new(x).unwrap().is_match(&g)),
            });
            hit != op.negated()
        }
        Filter::And(all) => all.iter().all(|f| passes(f, e, v)),
        Filter::Or(all) => all.iter().any(|f| passes(f, e, v)),
        Filter::Not(f) => !passes(f, e, v),
    }
}

fn label(t: i64, grain: TimeGrain, tz: Tz) -> String {
    let local = DateTime::from_timestamp_millis(t)
        .unwrap()
        .with_timezone(&tz);
    let date = local.date_naive();
    match grain {
        TimeGrain::Hour => local.format("%Y-%m-%d %H:00:00").to_string(),
        TimeGrain::Week => {
            (date - Duration::days(date.weekday().num_days_from_monday() as i64)).to_string()
        }
        TimeGrain::Month => date.with_day(1).unwrap().to_string(),
        _ => date.to_string(),
    }
}

#[derive(Default, Clone)]
struct Acc {
    users: HashSet<String>,
    daily: i64,
    events: i64,
    pageviews: i64,
    visits: i64,
    bounces: i64,
    duration: i64,
    visit_pageviews: i64,
}

/// What the query should answer: rows as (dimensions, metrics), sorted by dimensions.
fn brute_force(
    all: &[QueuedEvent],
    q: &Query,
    tz: Tz,
    from: i64,
    to: i64,
) -> Vec<(Vec<String>, Vec<Value>)> {
    let by_visits = q.dimensions.iter().any(Dimension::is_visit);
    let daily_mode = q
        .dimensions
        .iter()
        .any(|d| !d.is_time() && *d != Dimension::Name);
    let pass = |e: &QueuedEvent, v: Option<&Visit<'_>>| q.filters.iter().all(|f| passes(f, e, v));
    let cells = |e: &QueuedEvent, v: Option<&Visit<'_>>, t: i64| -> Option<Vec<String>> {
        q.dimensions
            .iter()
            .map(|d| match d {
                Dimension::Time(g) => Some(label(t, *g, tz)),
                other => value(other, e, v),
            })
            .collect()
    };
    let non_time = |cells: &[String]| -> Vec<String> {
        q.dimensions
            .iter()
            .zip(cells)
            .filter(|(d, _)| !d.is_time())
            .map(|(_, c)| c.clone())
            .collect()
    };
    let mut rows: HashMap<Vec<String>, Acc> = HashMap::new();
    let mut counted: HashSet<(i64, String, Vec<String>)> = HashSet::new();
    let mut everyone: HashSet<String> = HashSet::new();
    let vs = visits(all);
    let visit_of: HashMap<Uuid, usize> = vs
        .iter()
        .enumerate()
        .flat_map(|(i, v)| v.events.iter().map(move |e| (e.event_id, i)))
        .collect();
    for e in all {
        let v = visit_of.get(&e.event_id).map(|i| &vs[*i]);
        if ms(e) >= to || !pass(e, v) {
            continue;
        }
        if ms(e) < from {
            // Visitors count once a UTC day: the range's first day may have begun.
            if let (Some(u), false, Some(c)) = (&e.user_id, by_visits, cells(e, v, ms(e))) {
                counted.insert((ms(e) - ms(e).rem_euclid(DAY), u.clone(), non_time(&c)));
            }
            continue;
        }
        if let Some(u) = &e.user_id {
            everyone.insert(u.clone());
        }
        if by_visits {
            continue;
        }
        let Some(c) = cells(e, v, ms(e)) else {
            continue;
        };
        let first = e.user_id.as_ref().is_some_and(|u| {
            counted.insert((ms(e) - ms(e).rem_euclid(DAY), u.clone(), non_time(&c)))
        });
        let acc = rows.entry(c).or_default();
        acc.events += 1;
        acc.pageviews += i64::from(e.event_type == "page_view");
        if let Some(u) = &e.user_id {
            acc.users.insert(u.clone());
        }
        acc.daily += i64::from(first);
    }
    let mut vs_in_order: Vec<&Visit<'_>> = vs.iter().collect();
    vs_in_order.sort_by_key(|v| (ms(v.events[0]), v.events[0].event_id));
    for v in vs_in_order {
        let first = v.events[0];
        let start = ms(first);
        let matching: Vec<&QueuedEvent> = v
            .events
            .iter()
            .copied()
            .filter(|e| pass(e, Some(v)))
            .collect();
        if matching.is_empty() || start >= to {
            continue;
        }
        if start < from {
            if let (true, Some(c)) = (by_visits, cells(first, Some(v), start)) {
                counted.insert((
                    start - start.rem_euclid(DAY),
                    first.user_id.clone().unwrap(),
                    non_time(&c),
                ));
            }
            continue;
        }
        let pv = v
            .events
            .iter()
            .filter(|e| e.event_type == "page_view")
            .count() as i64;
        let add = |acc: &mut Acc| {
            acc.visits += 1;
            acc.bounces += i64::from(v.events.len() == 1 && pv == 1);
            acc.duration += ms(v.events[v.events.len() - 1]) - start;
            acc.visit_pageviews += pv;
        };
        if by_visits {
            let Some(c) = cells(first, Some(v), start) else {
                continue;
            };
            let fresh = counted.insert((
                start - start.rem_euclid(DAY),
                first.user_id.clone().unwrap(),
                non_time(&c),
            ));
            let acc = rows.entry(c).or_default();
            add(acc);
            acc.pageviews += pv;
            acc.events += v.events.len() as i64;
            acc.daily += i64::from(fresh);
        } else {
            let mut seen: Vec<Vec<String>> = Vec::new();
            for e in matching {
                if let Some(c) = cells(e, Some(v), start) {
                    if !seen.contains(&c) {
                        seen.push(c);
                    }
                }
            }
            for c in seen {
                add(rows.entry(c).or_default());
            }
        }
    }
    if q.dimensions.is_empty() {
        rows.entry(Vec::new()).or_default();
    }
    let all_visitors = everyone.len() as f64;
    let mut out: Vec<(Vec<String>, Vec<Value>)> = rows
        .into_iter()
        .map(|(c, a)| {
            let visitors = if daily_mode {
                a.daily as f64
            } else {
                a.users.len() as f64
            };
            let per = |n: i64| {
                if a.visits > 0 {
                    n as f64 / a.visits as f64
                } else {
                    0.0
                }
            };
            let metrics = q
                .metrics
                .iter()
                .map(|m| match m {
                    Metric::Visitors => json!(visitors as i64),
                    Metric::Visits => json!(a.visits),
                    Metric::Pageviews => json!(a.pageviews),
                    Metric::Events => json!(a.events),
                    Metric::BounceRate => json!((per(a.bounces) * 100.0).round() as i64),
                    Metric::VisitDuration => json!((per(a.duration) / 1000.0).round() as i64),
                    Metric::ViewsPerVisit => {
                        json!((per(a.visit_pageviews) * 100.0).round() / 100.0)
                    }
                    Metric::Percentage => json!(if all_visitors > 0.0 {
                        (visitors * 1000.0 / all_visitors).round() / 10.0
                    } else {
                        0.0
                    }),
                })
                .collect();
            (c, metrics)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn sorted(response: beacon_protocol::query::QueryResponse) -> Vec<(Vec<String>, Vec<Value>)> {
    let mut rows: Vec<_> = response
        .results
        .into_iter()
        .map(|r| (r.dimensions, r.metrics))
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

fn query(value: Value) -> Query {
    serde_json::from_value(value).unwrap()
}

/// `[from, to)` of dates in `tz`.
fn span(tz: Tz, first: &str, last: &str) -> (i64, i64) {
    let d = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    let midnight = |date: chrono::NaiveDate| {
        tz.from_local_datetime(&date.and_hms_opt(0, 0, 0).unwrap())
            .unwrap()
            .timestamp_millis()
    };
    (midnight(d(first)), midnight(d(last) + Duration::days(1)))
}

async fn check(
    store: &Store,
    all: &[QueuedEvent],
    name: &str,
    q: Query,
    tz: Tz,
    first: &str,
    last: &str,
) {
    let (from, to) = span(tz, first, last);
    let want = brute_force(all, &q, tz, from, to);
    let now = Utc::now();
    for engine in [Engine::Auto, Engine::Raw] {
        let got = store
            .query(&q, tz, now, engine)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            sorted(got),
            want,
            "{name}, {engine:?}, {tz}: {}",
            serde_json::to_string(&q).unwrap()
        );
    }
}

#[tokio::test]
async fn queries_match_a_brute_force_computation_on_every_backend() {
    let metrics = json!([
        "visitors",
        "visits",
        "pageviews",
        "events",
        "bounce_rate",
        "visit_duration",
        "views_per_visit",
        "percentage"
    ]);
    let event_metrics = json!(["visitors", "pageviews", "events", "percentage"]);
    let shapes: Vec<(&str, Value)> = vec![
        ("aggregate", json!({"metrics": metrics})),
        (
            "by day",
            json!({"metrics": metrics, "dimensions": ["time:day"]}),
        ),
        (
            "by hour",
            json!({"metrics": metrics, "dimensions": ["time:hour"]}),
        ),
        (
            "by week",
            json!({"metrics": ["visitors", "visits"], "dimensions": ["time:week"]}),
        ),
        (
            "by page",
            json!({"metrics": event_metrics, "dimensions": ["event:page"]}),
        ),
        (
            "by page and day",
            json!({"metrics": event_metrics, "dimensions": ["event:page", "time:day"]}),
        ),
        (
            "by name",
            json!({"metrics": ["visitors", "pageviews", "events"], "dimensions": ["event:name"]}),
        ),
        (
            "by host",
            json!({"metrics": event_metrics, "dimensions": ["event:hostname"]}),
        ),
        (
            "by source",
            json!({"metrics": metrics, "dimensions": ["visit:source"]}),
        ),
        (
            "by entry page",
            json!({"metrics": metrics, "dimensions": ["visit:entry_page"]}),
        ),
        (
            "by country and day",
            json!({"metrics": metrics, "dimensions": ["visit:country", "time:day"]}),
        ),
        (
            "by campaign",
            json!({"metrics": metrics, "dimensions": ["visit:utm_campaign"]}),
        ),
        (
            "by browser version",
            json!({"metrics": metrics, "dimensions": ["visit:browser_version"]}),
        ),
        // Raw only: filters, exit pages, props, several dimensions, visit metrics by page.
        (
            "exit pages",
            json!({"metrics": metrics, "dimensions": ["visit:exit_page"]}),
        ),
        (
            "by plan",
            json!({"metrics": metrics, "dimensions": ["event:props:plan"]}),
        ),
        (
            "visits by page",
            json!({"metrics": metrics, "dimensions": ["event:page"]}),
        ),
        (
            "browser and os",
            json!({"metrics": metrics, "dimensions": ["visit:browser", "visit:os"]}),
        ),
        (
            "chrome",
            json!({"metrics": metrics, "filters": [["is", "visit:browser", ["Chrome"]]]}),
        ),
        (
            "chrome by page",
            json!({"metrics": metrics, "dimensions": ["event:page"], "filters": [["is", "visit:browser", ["chrome"], {"case_sensitive": false}]]}),
        ),
        (
            "page filter by source",
            json!({"metrics": metrics, "dimensions": ["visit:source"], "filters": [["contains", "event:page", ["p1", "p2"]]]}),
        ),
        (
            "not clicks by day",
            json!({"metrics": metrics, "dimensions": ["time:day"], "filters": [["not", ["is", "event:name", ["click"]]]]}),
        ),
        (
            "or",
            json!({"metrics": metrics, "filters": [["or", [["matches", "event:page", ["^/p[03]$"]], ["is_not", "visit:country", ["DE"]]]]]}),
        ),
        (
            "pro plan by device",
            json!({"metrics": metrics, "dimensions": ["visit:device"], "filters": [["is", "event:props:plan", ["pro"]]]}),
        ),
    ];
    let zones: [Tz; 3] = [
        Tz::UTC,
        "Europe/Berlin".parse().unwrap(),
        "Asia/Kolkata".parse().unwrap(),
    ];
    for b in TestBackend::all() {
        let store = open(&b).await;
        let site = format!("q-{}", Uuid::now_v7());
        let all = events(&site, 11);
        for chunk in all.chunks(40) {
            enqueue(&store, chunk.to_vec()).await;
            drain(&store).await;
        }
        for (name, shape) in &shapes {
            for (i, tz) in zones.iter().enumerate() {
                let mut q = shape.clone();
                q["site_id"] = json!(site);
                let (first, last) = [
                    ("2026-03-02", "2026-03-05"),
                    ("2026-03-03", "2026-03-04"),
                    ("2026-03-02", "2026-03-06"),
                ][i];
                q["date_range"] = json!([first, last]);
                check(
                    &store,
                    &all,
                    &format!("{}: {name}", b.name),
                    query(q),
                    *tz,
                    first,
                    last,
                )
                .await;
            }
        }
    }
}

#[tokio::test]
async fn bad_queries_are_refused_with_the_reason() {
    let b = TestBackend::embedded();
    let store = open(&b).await;
    let bad = |v: Value| {
        let store = store.clone();
        async move {
            let mut q = json!({"site_id": "s", "metrics": ["visits"], "date_range": "7d"});
            for (k, x) in v.as_object().unwrap() {
                q[k] = x.clone();
            }
            let q: Query = serde_json::from_value(q).unwrap();
            store
                .query(&q, Tz::UTC, Utc::now(), Engine::Auto)
                .await
                .unwrap_err()
                .to_string()
        }
    };
    assert!(
        bad(json!({"dimensions": ["event:page", "visit:source"]}))
            .await
            .contains("event and visit")
    );
    assert!(
        bad(json!({"dimensions": ["time:day", "time:hour"]}))
            .await
            .contains("one time")
    );
    assert!(
        bad(json!({"order_by": [["pageviews", "desc"]]}))
            .await
            .contains("pageviews")
    );
    assert!(
        bad(json!({"include": {"time_labels": true}}))
            .await
            .contains("time dimension")
    );
    // Labels for every hour of 9,000 years would take gigabytes.
    assert!(
        bad(json!({
            "date_range": ["0001-01-01", "9000-12-31"],
            "dimensions": ["time:hour"], "include": {"time_labels": true},
        }))
        .await
        .contains("time labels")
    );
    assert!(
        bad(json!({"date_range": "fortnight"}))
            .await
            .contains("fortnight")
    );
    assert!(
        bad(json!({"filters": [["matches", "event:page", ["("]]]}))
            .await
            .contains("regular expression")
    );
    assert!(
        bad(json!({"pagination": {"limit": 0}}))
            .await
            .contains("limit")
    );
    let _ = DateRange::Period("7d".into());
}

/// A page view of `site` by `user` at `at`, continuing `continues`' visit if given.
fn page_view(site: &str, user: &str, continues: Option<&str>, at: DateTime<Utc>) -> QueuedEvent {
    QueuedEvent {
        continues: continues.map(str::to_owned),
        ..beacon_testkit::store::page_view(site, "/", Some(user), at)
    }
}

/// A visit state deleted (by an erasure of its user, or forgotten as old) is gone for
/// good: the visitor's next event starts a visit, even right after the last one.
#[tokio::test]
async fn a_deleted_visit_state_is_not_continued() {
    for b in TestBackend::all() {
        let store = open(&b).await;
        let site = format!("deleted-{}", Uuid::now_v7());
        let at = Utc.with_ymd_and_hms(2026, 3, 3, 10, 0, 0).unwrap();
        let event = |user: &str, at| page_view(&site, user, None, at);
        enqueue(&store, vec![event("erased", at), event("forgotten", at)]).await;
        drain(&store).await;
        let later = at + Duration::minutes(5);
        store.erase_user(&site, "erased").await.unwrap();
        enqueue(&store, vec![event("erased", later)]).await;
        drain(&store).await;
        store.forget_visits(Utc::now()).await.unwrap();
        enqueue(&store, vec![event("forgotten", later)]).await;
        drain(&store).await;
        // From rollups: two visits each, the first ones counted before the deletions.
        let q = query(json!({"site_id": site, "metrics": ["visits"],
            "date_range": ["2026-03-03", "2026-03-03"]}));
        let got = store
            .query(&q, Tz::UTC, Utc::now(), Engine::Auto)
            .await
            .unwrap();
        assert_eq!(got.results[0].metrics, vec![json!(4)], "{}", b.name);
    }
}

#[tokio::test]
async fn a_cookieless_visit_goes_on_across_midnight() {
    for b in TestBackend::all() {
        let store = open(&b).await;
        let site = format!("midnight-{}", Uuid::now_v7());
        let midnight = Utc.with_ymd_and_hms(2026, 3, 3, 0, 0, 0).unwrap();
        let event = |user: &str, continues, at| page_view(&site, user, continues, at);
        let before = event("monday-id", None, midnight - Duration::minutes(5));
        let after = event(
            "tuesday-id",
            Some("monday-id"),
            midnight + Duration::minutes(5),
        );
        // Someone else, whose visit of the day before ended long ago: a new visit.
        let earlier = event("other-monday", None, midnight - Duration::hours(3));
        let other = event(
            "other-tuesday",
            Some("other-monday"),
            midnight + Duration::minutes(10),
        );
        enqueue(&store, vec![before, earlier]).await;
        drain(&store).await;
        enqueue(&store, vec![after.clone(), other]).await;
        drain(&store).await;
        let q = query(
            json!({"site_id": site, "metrics": ["visitors", "visits", "visit_duration"],
            "date_range": ["2026-03-02", "2026-03-03"]}),
        );
        for engine in [Engine::Auto, Engine::Raw] {
            let got = store.query(&q, Tz::UTC, Utc::now(), engine).await.unwrap();
            // Three ids (the other visitor has one each day), three visits: the one
            // across midnight lasts 10 minutes.
            assert_eq!(
                got.results[0].metrics,
                vec![json!(3), json!(3), json!(200)],
                "{}: {engine:?}",
                b.name
            );
        }
        let page = beacon_store::EventsPage {
            site_id: site.clone(),
            from: None,
            to: None,
            after: None,
            limit: 10,
        };
        let stored = store.events_page(&page).await.unwrap();
        let took_over = stored
            .iter()
            .find(|e| e.event_id == after.event_id)
            .unwrap();
        assert_eq!(
            took_over.user_id.as_deref(),
            Some("monday-id"),
            "{}",
            b.name
        );
    }
}

/// A raw query longer than a page of events (1,000) forgets the visitors it counted on
/// days it has passed, and still counts each once a day: two visitors seen every hour
/// for three days, among 6,000 anonymous events.
#[tokio::test]
async fn a_raw_query_over_many_pages_counts_each_visitor_once_a_day() {
    let b = TestBackend::embedded();
    let store = open(&b).await;
    let page_view = |user: Option<&str>, path: &str, t: i64| {
        beacon_testkit::store::page_view(
            "days",
            path,
            user,
            DateTime::from_timestamp_millis(t).unwrap(),
        )
    };
    let t0 = start().timestamp_millis();
    let mut events = Vec::new();
    for hour in 0..72 {
        for user in ["a", "b"] {
            events.push(page_view(Some(user), "/x", t0 + hour * 3_600_000 + 60_000));
        }
    }
    for i in 0..6000 {
        events.push(page_view(None, "/y", t0 + i * (3 * DAY / 6000)));
    }
    for chunk in events.chunks(1000) {
        enqueue(&store, chunk.to_vec()).await;
    }
    drain(&store).await;
    let q = query(
        json!({"site_id": "days", "metrics": ["visitors", "pageviews"],
        "dimensions": ["event:page"], "date_range": ["2026-03-02", "2026-03-04"]}),
    );
    for engine in [Engine::Auto, Engine::Raw] {
        let got = sorted(store.query(&q, Tz::UTC, Utc::now(), engine).await.unwrap());
        let x = got.iter().find(|(cells, _)| cells == &["/x"]).unwrap();
        // Two visitors on each of three days; 144 page views.
        assert_eq!(x.1, vec![json!(6), json!(144)], "{engine:?}: {got:?}");
    }
}
