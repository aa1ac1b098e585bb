//! The metrics move with what happens. A test binary of its own: the recorder is global
//! to the process, and `cargo test` runs a binary's tests side by side, so another
//! test's requests would count here too.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use beacon_testkit::TestBackend;
use beacon_testkit::store::poison;
use common::TestApp;
use serde_json::json;

/// How much `series` grew from `before` to `after`.
fn grew(before: &HashMap<String, f64>, after: &HashMap<String, f64>, series: &str) -> f64 {
    let value = |m: &HashMap<String, f64>| m.get(series).copied().unwrap_or(0.0);
    value(after) - value(before)
}

#[tokio::test]
async fn metrics_move_as_events_are_accepted_rejected_moved_and_dead_lettered() {
    for b in TestBackend::all() {
        poison(&b).await;
        let app = TestApp::start(&b).await;
        let url = app.url("/metrics");
        let before = common::scrape(&app.http, &url, None).await;
        let page = |path: &str| json!({"site_id": "m", "event_type": "page_view", "path": path});
        assert_eq!(app.post_json("/event", &page("/a")).await.0, 202);
        let batch = json!([page("/b"), page("/c"), {"site_id": "m"}, page("/poison")]);
        let (status, answer) = app.post_json("/events", &batch).await;
        assert_eq!(
            (status, answer["accepted"].as_u64()),
            (200, Some(3)),
            "{answer}"
        );
        let bot = app
            .http
            .post(app.url("/event"))
            .header(
                "user-agent",
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            )
            .json(&page("/d"))
            .send()
            .await
            .unwrap();
        assert_eq!(bot.status(), 202);
        assert_eq!(app.post_raw("/event", "{").await.0, 400);
        assert_eq!(app.get("/nowhere/42").await.0, 404);
        app.wait_for_total("site_id=m", 3).await;
        // The poisoned event reaches dead_letters in a batch of its own, after the rest.
        // The worker counts a move once the store has finished it (dead letters and
        // all), so the counters can trail what the store shows: wait for both.
        let moved = |m: &HashMap<String, f64>| {
            ["inserted", "duplicate", "dead_lettered"]
                .map(|r| {
                    grew(
                        &before,
                        m,
                        &format!("beacon_worker_events_moved_total{{result=\"{r}\"}}"),
                    )
                })
                .iter()
                .sum::<f64>()
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let after = loop {
            let after = common::scrape(&app.http, &url, None).await;
            // MongoDB's depth is an estimate that settles after writes.
            let settled = after.get("beacon_queue_depth").copied() == Some(0.0);
            if after.get("beacon_dead_letters").copied() == Some(1.0)
                && settled
                && moved(&after) >= 4.0
            {
                break after;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: {after:?}",
                b.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let ingest = |labels: &str| {
            grew(
                &before,
                &after,
                &format!("beacon_ingest_events_total{{{labels}}}"),
            )
        };
        assert_eq!(ingest(r#"outcome="accepted""#), 4.0, "{}", b.name);
        assert_eq!(ingest(r#"outcome="bot""#), 1.0);
        assert_eq!(ingest(r#"outcome="rejected",reason="invalid""#), 2.0);
        let worker = |labels: &str| {
            grew(
                &before,
                &after,
                &format!("beacon_worker_events_moved_total{{{labels}}}"),
            )
        };
        // A batch the database refused in part is retried after the split, where its
        // good events count as stored before.
        let stored = worker(r#"result="inserted""#) + worker(r#"result="duplicate""#);
        assert_eq!(stored, 3.0, "{}", b.name);
        assert!(worker(r#"result="inserted""#) >= 1.0);
        assert_eq!(worker(r#"result="dead_lettered""#), 1.0);
        assert_eq!(grew(&before, &after, "beacon_dead_letters_total"), 1.0);
        assert!(
            grew(
                &before,
                &after,
                r#"beacon_worker_batches_total{result="moved"}"#
            ) >= 1.0
        );
        assert!(grew(&before, &after, "beacon_worker_move_duration_seconds_count") >= 1.0);
        assert_eq!(after["beacon_queue_depth"], 0.0, "{}", b.name);
        assert_eq!(after["beacon_queue_oldest_age_seconds"], 0.0);
        let http = |labels: &str| {
            grew(
                &before,
                &after,
                &format!("beacon_http_requests_total{{{labels}}}"),
            )
        };
        assert_eq!(http(r#"route="/event",status="202""#), 2.0);
        assert_eq!(http(r#"route="/event",status="400""#), 1.0);
        assert_eq!(http(r#"route="/events",status="200""#), 1.0);
        // A scan of made-up paths adds no series: they count as one route.
        assert_eq!(http(r#"route="unmatched",status="404""#), 1.0);
        assert!(!after.keys().any(|k| k.contains("/nowhere")));
        let timed = r#"beacon_http_request_duration_seconds_count{route="/event",status="202"}"#;
        assert_eq!(grew(&before, &after, timed), 2.0);
        assert!(after.contains_key(
            r#"beacon_http_request_duration_seconds_bucket{route="/event",status="202",le="0.005"}"#
        ));
        app.stop().await;
    }
}
