//! Data shapes that real sites and public endpoints produce: long tails of distinct
//! paths, more of them in an hour than one MongoDB document could hold, and events the
//! database refuses for good. Every case runs on every backend.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use beacon_protocol::{DateBound, StatsQuery};
use beacon_store::{QueuedEvent, Store};
use beacon_testkit::TestBackend;
use beacon_testkit::store::{
    all_stats, drain, enqueue, move_patiently, open, page_view, poison, stored_ids,
};
use chrono::{TimeDelta, TimeZone, Utc};
use futures::TryStreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The summaries' capacity (`rollup::topk::CAPACITY`): past it, top paths are estimates.
const CAPACITY: u64 = 1024;

#[tokio::test]
async fn one_poisoned_event_does_not_hold_back_the_rest_of_its_batch() {
    for b in TestBackend::all() {
        poison(&b).await;
        let store = open(&b).await;
        let at = Utc.with_ymd_and_hms(2026, 5, 1, 10, 0, 0).unwrap();
        let mut events: Vec<QueuedEvent> = (0..30)
            .map(|i| page_view(["a", "b"][i % 2], &format!("/{i}"), Some("u"), at))
            .collect();
        events[13].path = Some("/poison".into());
        let poisoned = events[13].event_id;
        enqueue(&store, events.clone()).await;
        // One batch holds all 30: the poisoned event is in it.
        let batch = store.claim(100).await.unwrap();
        assert_eq!(batch.len(), 30, "{}", b.name);
        let outcome = store.move_batch(&batch).await.unwrap();
        assert_eq!(outcome.inserted, 29, "{}: {outcome:?}", b.name);
        assert_eq!(outcome.dead_lettered, 1, "{}", b.name);
        assert_eq!(store.queue_depth().await.unwrap(), 0, "{}", b.name);
        assert_eq!(store.dead_letters().await.unwrap(), 1, "{}", b.name);
        assert_eq!(all_stats(&store, "a").await.total_events, 15, "{}", b.name);
        assert_eq!(all_stats(&store, "b").await.total_events, 14, "{}", b.name);
        assert!(!stored_ids(&store, "b").await.contains(&poisoned));
        // Nothing is left to retry, and nothing is counted again.
        assert_eq!(drain(&store).await, 0);
        assert_eq!(all_stats(&store, "b").await.total_events, 14, "{}", b.name);
    }
}

/// A duplicate key is a copy of a stored event only when the key is the event's id: on
/// another unique index (one an operator added), it is a refusal like any other.
#[tokio::test]
async fn mongo_a_duplicate_on_another_unique_index_is_a_dead_letter_not_a_copy() {
    let Some(b) = TestBackend::mongo() else {
        return;
    };
    let store = open(&b).await;
    let beacon_store::Backend::Mongo { url } = &b.config.backend else {
        unreachable!("a MongoDB backend");
    };
    let client = mongodb::Client::with_uri_str(url).await.unwrap();
    let events = client
        .default_database()
        .unwrap()
        .collection::<mongodb::bson::Document>("events");
    events
        .create_index(
            mongodb::IndexModel::builder()
                .keys(mongodb::bson::doc! { "p": 1 })
                .options(
                    mongodb::options::IndexOptions::builder()
                        .unique(true)
                        .partial_filter_expression(mongodb::bson::doc! { "p": "/once" })
                        .build(),
                )
                .build(),
        )
        .await
        .unwrap();
    let at = Utc::now();
    enqueue(&store, vec![page_view("s", "/once", None, at)]).await;
    assert_eq!(drain(&store).await, 1);
    enqueue(
        &store,
        vec![
            page_view("s", "/once", None, at),
            page_view("s", "/x", None, at),
        ],
    )
    .await;
    assert_eq!(drain(&store).await, 1);
    assert_eq!(store.dead_letters().await.unwrap(), 1);
    assert_eq!(all_stats(&store, "s").await.total_events, 2);
}

/// 9,000 page views in one hour, each on its own path of 1,900 bytes: 17 MB of paths,
/// more than one MongoDB document may hold. Everything moves, and the buckets stay
/// small.
#[tokio::test]
async fn an_hour_with_more_distinct_paths_than_a_document_holds_moves_completely() {
    const EVENTS: usize = 9_000;
    for mut b in TestBackend::all() {
        // Claims that join several batches of big documents take a while on the test
        // server; 300 ms leases would run out in the middle of them.
        b.config.claim_lease = std::time::Duration::from_secs(5);
        let store = open(&b).await;
        let at = Utc.with_ymd_and_hms(2026, 5, 2, 14, 0, 0).unwrap();
        let padding = "x".repeat(1_890);
        for chunk in (0..EVENTS).collect::<Vec<_>>().chunks(400) {
            let events = chunk
                .iter()
                .map(|i| {
                    let ts = at + TimeDelta::milliseconds(*i as i64);
                    page_view("shop", &format!("/{i:06}/{padding}"), Some("u"), ts)
                })
                .collect();
            enqueue(&store, events).await;
        }
        let mut moved = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let batch = store.claim(1000).await.unwrap();
            if !batch.is_empty() {
                moved += move_patiently(&store, &batch).await;
                continue;
            }
            // A claim too slow for its lease (big documents on a loaded machine) hands
            // its batches back and answers nothing: the queue is empty only at depth 0.
            if store.queue_depth().await.unwrap() == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{}: not drained",
                b.name
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(moved, EVENTS, "{}", b.name);
        assert_eq!(store.queue_depth().await.unwrap(), 0, "{}", b.name);
        let stats = all_stats(&store, "shop").await;
        assert_eq!(stats.total_events, EVENTS as u64, "{}", b.name);
        assert_eq!(stats.unique_users, 1, "{}", b.name);
        assert_eq!(stats.top_paths.len(), 10, "{}", b.name);
    }
}

/// More distinct paths than the summaries keep (two days, 6,000 paths in the tail):
/// every count is at most N/(K+1) below the truth and never above it, and no path that
/// truly beats the list by more than that is missing, against a brute-force count; a
/// range with few paths is exact.
#[tokio::test]
async fn top_paths_stay_within_their_error_bound_against_a_brute_force_count() {
    for b in TestBackend::all() {
        let store = open(&b).await;
        let mut rng = StdRng::seed_from_u64(14);
        let start = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
        let mut events = Vec::new();
        for i in 0..12_000_i64 {
            // Half the views on 30 popular pages, half on a tail of 6,000.
            let path = if rng.random_bool(0.5) {
                format!(
                    "/popular/{}",
                    rng.random_range(0..30) * rng.random_range(1..3)
                )
            } else {
                format!("/tail/{}", rng.random_range(0..6_000))
            };
            let ts = start + TimeDelta::seconds(i * 14); // about two days
            let user = format!("u{}", rng.random_range(0..500));
            events.push(page_view("big", &path, Some(&user), ts));
        }
        for chunk in events.chunks(1000) {
            enqueue(&store, chunk.to_vec()).await;
        }
        drain(&store).await;
        let mut truth: HashMap<&str, u64> = HashMap::new();
        for e in &events {
            *truth.entry(e.path.as_deref().unwrap()).or_default() += 1;
        }
        let mut query = StatsQuery::new("big");
        query.limit = Some(50);
        let stats = store.stats(&query.resolve().unwrap()).await.unwrap();
        assert_eq!(stats.total_events, 12_000, "{}", b.name);
        assert_eq!(stats.unique_users, 500, "{}", b.name);
        let bound = events.len() as u64 / (CAPACITY + 1);
        assert_eq!(stats.top_paths.len(), 50);
        for p in &stats.top_paths {
            let true_count = truth[p.path.as_str()];
            assert!(
                p.count <= true_count && true_count - p.count <= bound,
                "{}: {} counted {} of {true_count} (bound {bound})",
                b.name,
                p.path,
                p.count
            );
        }
        // A path that truly beats the last listed count by more than the bound must be
        // listed: its estimate beats it too.
        let last = stats.top_paths.last().unwrap().count;
        for (path, n) in &truth {
            if *n > last + bound {
                assert!(
                    stats.top_paths.iter().any(|p| p.path == *path),
                    "{}: {path} ({n}) is missing",
                    b.name
                );
            }
        }
        // Two and a half hours, fewer distinct paths than the capacity: exact, from
        // hour buckets and raw events.
        let mut hours = StatsQuery::new("big");
        hours.from = Some(DateBound::parse("2026-06-01T00:00:00Z").unwrap());
        hours.to = Some(DateBound::parse("2026-06-01T02:30:00Z").unwrap());
        hours.limit = Some(1000);
        assert_exact(&store, &hours, &events, b.name).await;
    }
}

/// `/stats` for `query` equals a brute-force count over `events`.
async fn assert_exact(store: &Store, query: &StatsQuery, events: &[QueuedEvent], name: &str) {
    let range = query.resolve().unwrap();
    let mut truth: HashMap<&str, u64> = HashMap::new();
    let mut total = 0;
    for e in events {
        if range.from.is_none_or(|f| e.timestamp >= f) && range.to.is_none_or(|t| e.timestamp < t) {
            total += 1;
            *truth.entry(e.path.as_deref().unwrap()).or_default() += 1;
        }
    }
    assert!(truth.len() as u64 <= CAPACITY, "the case needs few paths");
    let stats = store.stats(&range).await.unwrap();
    assert_eq!(stats.total_events, total, "{name}");
    let mut expected: Vec<(&str, u64)> = truth.into_iter().collect();
    expected.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let got: Vec<(&str, u64)> = stats
        .top_paths
        .iter()
        .map(|p| (p.path.as_str(), p.count))
        .collect();
    assert_eq!(got, expected, "{name}");
}

/// `event:name` finds every type: for a site with few types (read one query each on
/// MongoDB), one with more than that reader takes one by one (read in one query), and,
/// on MongoDB, types stored before the store listed each site's types (listed again at
/// start-up).
#[tokio::test]
async fn every_event_type_is_found_by_name() {
    use beacon_protocol::query::Query;
    use beacon_store::Engine;
    let at = Utc.with_ymd_and_hms(2026, 5, 1, 10, 0, 0).unwrap();
    for b in TestBackend::all() {
        let store = open(&b).await;
        let mut events = Vec::new();
        for (site, types) in [("few", 3), ("many", 70)] {
            for t in 0..types {
                for _ in 0..=t % 4 {
                    let mut e = page_view(site, "/", Some("u"), at);
                    e.event_type = format!("type-{t:02}");
                    events.push(e);
                }
            }
        }
        enqueue(&store, events).await;
        drain(&store).await;
        drop(store);
        if let beacon_store::Backend::Mongo { url } = &b.config.backend {
            let client = mongodb::Client::with_uri_str(url).await.unwrap();
            let db = client.default_database().unwrap();
            db.collection::<mongodb::bson::Document>("event_types")
                .drop()
                .await
                .unwrap();
        }
        // A new process: on MongoDB it lists the stored buckets' types again.
        let store = open(&b).await;
        for (site, types) in [("few", 3), ("many", 70)] {
            let q: Query = serde_json::from_value(serde_json::json!({
                "site_id": site, "metrics": ["events"], "dimensions": ["event:name"],
                "date_range": ["2026-05-01", "2026-05-01"], "pagination": {"limit": 1000},
            }))
            .unwrap();
            let got = store
                .query(&q, chrono_tz::UTC, Utc::now(), Engine::Auto)
                .await
                .unwrap();
            let mut got: Vec<(String, u64)> = got
                .results
                .into_iter()
                .map(|r| (r.dimensions[0].clone(), r.metrics[0].as_u64().unwrap()))
                .collect();
            got.sort();
            let want: Vec<(String, u64)> = (0..types)
                .map(|t| (format!("type-{t:02}"), t % 4 + 1))
                .collect();
            assert_eq!(got, want, "{}, {site}", b.name);
        }
    }
}

/// Reading a site's events, in one pass or page by page, returns each once, in order of
/// time then id, when many share a millisecond across page boundaries (a batch stamped
/// at once), and keeps within the range asked.
#[tokio::test]
async fn pages_of_events_sharing_a_millisecond_miss_and_repeat_nothing() {
    let at = Utc.with_ymd_and_hms(2026, 5, 1, 10, 0, 0).unwrap();
    for b in TestBackend::all() {
        let store = open(&b).await;
        let mut events = Vec::new();
        for (ms, n) in [(-5, 3), (0, 25), (1, 4), (7, 9), (9, 2)] {
            for _ in 0..n {
                events.push(page_view(
                    "ties",
                    "/",
                    Some("u"),
                    at + TimeDelta::milliseconds(ms),
                ));
            }
        }
        enqueue(&store, events.clone()).await;
        drain(&store).await;
        // [at, at + 9ms): all but the first 3 and the last 2.
        let mut want: Vec<_> = events[3..events.len() - 2]
            .iter()
            .map(|e| (e.timestamp, e.event_id))
            .collect();
        want.sort();
        let first = beacon_store::EventsPage {
            site_id: "ties".into(),
            from: Some(at),
            to: Some(at + TimeDelta::milliseconds(9)),
            after: None,
            limit: 7,
        };
        // In one pass, as raw queries and exports read them.
        let pages: Vec<Vec<QueuedEvent>> = store.events(first.clone()).try_collect().await.unwrap();
        assert!(
            pages.iter().all(|p| !p.is_empty() && p.len() <= 7),
            "{}",
            b.name
        );
        let streamed: Vec<_> = pages
            .iter()
            .flatten()
            .map(|e| (e.timestamp, e.event_id))
            .collect();
        assert_eq!(streamed, want, "{}", b.name);
        // Page by page.
        let mut page = first;
        let mut got = Vec::new();
        for _ in 0..=want.len() {
            let events = store.events_page(&page).await.unwrap();
            got.extend(events.iter().map(|e| (e.timestamp, e.event_id)));
            match events.last() {
                Some(last) if events.len() == page.limit => page = page.next(last),
                _ => break,
            }
        }
        assert_eq!(got, want, "{}", b.name);
    }
}
