//! What operators rely on: binaries that explain themselves, logs for shippers, health
//! for orchestrators, Prometheus metrics and the API's description.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use beacon_testkit::TestBackend;
use beacon_testkit::store::poison;
use common::{TestApp, config};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

#[test]
fn the_binary_lists_every_setting_and_its_version() {
    let bin = env!("CARGO_BIN_EXE_beacon-server");
    let settings = [
        "PORT",
        "MONGO_URL",
        "ADMIN_TOKEN",
        "TRUST_PROXY",
        "LOG_FORMAT",
        "METRICS_PORT",
        "METRICS_TOKEN",
        "BATCH_SIZE",
        "QUEUE_MAX_EVENTS",
    ];
    beacon_testkit::assert_explains_itself(bin, &settings);
}

/// With `LOG_FORMAT=json`, every line the server logs is one JSON object.
#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let data = tempfile::tempdir().unwrap();
    let port = beacon_testkit::free_port();
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_beacon-server"))
        .env_clear()
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        .env("DATA_DIR", data.path())
        .env("LOG_FORMAT", "json")
        .current_dir(data.path())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let object: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(
                object["timestamp"].is_string() && object["level"].is_string(),
                "{line}"
            );
            let listening = object["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Beacon listening on"));
            seen.push(object);
            if listening {
                return;
            }
        }
    })
    .await;
    assert!(found.is_ok(), "no listening line in {seen:?}");
    server.kill().await.unwrap();
}

/// `/metrics` as series (name and labels, as printed) to values.
async fn scrape(http: &reqwest::Client, url: &str, token: Option<&str>) -> HashMap<String, f64> {
    let mut request = http.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

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
        let before = scrape(&app.http, &url, None).await;
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
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let after = loop {
            let after = scrape(&app.http, &url, None).await;
            // MongoDB's depth is an estimate that settles after writes.
            let settled = after.get("beacon_queue_depth").copied() == Some(0.0);
            if after.get("beacon_dead_letters").copied() == Some(1.0) && settled {
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

/// With `METRICS_PORT`, `/metrics` leaves the public router for a port of its own;
/// with `METRICS_TOKEN`, it asks for the token.
#[tokio::test]
async fn metrics_can_move_off_the_public_port_behind_a_token() {
    let b = TestBackend::embedded();
    let mut c = config(b.config.clone(), true);
    let port = beacon_testkit::free_port();
    c.worker.observe.metrics_port = Some(port);
    c.worker.observe.metrics_token = Some("scrape-secret".to_owned());
    let app = TestApp::start_with(c).await;
    app.wait_healthy().await;
    assert_eq!(app.get("/metrics").await.0, 404);
    let url = format!("http://127.0.0.1:{port}/metrics");
    let refused = app.http.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    let wrong = app
        .http
        .get(&url)
        .bearer_auth("scrape-secreT")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let metrics = scrape(&app.http, &url, Some("scrape-secret")).await;
    assert!(metrics.contains_key("beacon_queue_depth"), "{metrics:?}");
    app.stop().await;
}
