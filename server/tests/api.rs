//! The HTTP contract, against the real server and worker on every backend.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;

use beacon_testkit::TestBackend;
use common::TestApp;
use serde_json::{Value, json};

fn seed_event() -> Value {
    json!({
        "site_id": "site-001",
        "event_type": "page_view",
        "path": "/home",
        "user_id": "user123"
    })
}

#[tokio::test]
async fn the_seeds_curl_examples_give_the_seeds_responses() {
    for b in TestBackend::all() {
        let app = TestApp::start(&b).await;
        let (status, body) = app.post_json("/event", &seed_event()).await;
        assert_eq!(
            (status, body),
            (202, json!({"status": "queued"})),
            "{}",
            b.name
        );
        let more = [
            ("/home", "user123"),
            ("/pricing", "user456"),
            ("/home", "user789"),
        ];
        for (path, user) in more {
            let e = json!({"site_id": "site-001", "event_type": "page_view", "path": path, "user_id": user});
            assert_eq!(app.post_json("/event", &e).await.0, 202);
        }
        app.wait_for_total("site_id=site-001", 4).await;
        let (status, body) = app.get("/stats?site_id=site-001").await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({
                "total_events": 4,
                "unique_users": 3,
                "top_paths": [
                    { "path": "/home", "count": 3 },
                    { "path": "/pricing", "count": 1 }
                ]
            }),
            "{}",
            b.name
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn stats_filters_by_range_type_and_limit() {
    for b in TestBackend::all() {
        let app = TestApp::start(&b).await;
        let events = [
            ("page_view", "/a", "2026-11-01T10:00:00Z"),
            ("page_view", "/b", "2026-11-02T10:00:00Z"),
            ("click", "/a", "2026-11-02T11:00:00Z"),
            ("page_view", "/c", "2026-11-03T00:00:00Z"),
        ];
        for (t, path, ts) in events {
            let e = json!({"site_id": "s", "event_type": t, "path": path, "timestamp": ts});
            assert_eq!(app.post_json("/event", &e).await.0, 202);
        }
        app.wait_for_total("site_id=s", 4).await;
        let s = app.stats("site_id=s&from=2026-11-02&to=2026-11-02").await;
        assert_eq!(
            s.total_events, 2,
            "{}: a day as `to` includes that day",
            b.name
        );
        let s = app.stats("site_id=s&event_type=click").await;
        assert_eq!((s.total_events, s.unique_users), (1, 0));
        let s = app.stats("site_id=s&limit=1").await;
        assert_eq!(s.top_paths.len(), 1);
        assert_eq!(s.top_paths[0].path, "/a");
        let s = app.stats("site_id=s&from=2026-11-02T10:30:00Z").await;
        assert_eq!(s.total_events, 2);
        let s = app.stats("site_id=nobody").await;
        assert_eq!(s.total_events, 0);
        app.stop().await;
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[tokio::test]
async fn bad_input_gets_a_4xx_that_names_the_problem() {
    let b = TestBackend::embedded();
    let app = TestApp::start(&b).await;
    let long_path = format!("/{}", "a".repeat(2048));
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "malformed JSON",
            r#"{"site_id": "#.into(),
            400,
            "malformed JSON",
        ),
        ("not an object", "[1,2]".into(), 400, "invalid type"),
        (
            "wrong type",
            r#"{"site_id": 5, "event_type": "x"}"#.into(),
            400,
            "invalid type",
        ),
        (
            "missing site_id",
            r#"{"event_type": "x"}"#.into(),
            400,
            "site_id",
        ),
        (
            "missing event_type",
            r#"{"site_id": "s"}"#.into(),
            400,
            "event_type",
        ),
        (
            "empty site_id",
            r#"{"site_id": "", "event_type": "x"}"#.into(),
            400,
            "site_id",
        ),
        (
            "over-long path",
            json!({"site_id": "s", "event_type": "x", "path": long_path}).to_string(),
            400,
            "path",
        ),
        (
            "bad timestamp",
            r#"{"site_id":"s","event_type":"x","timestamp":"noon"}"#.into(),
            400,
            "timestamp",
        ),
        (
            "oversized body",
            format!(r#"{{"site_id":"{}"}}"#, "s".repeat(20_000)),
            413,
            "length limit",
        ),
        ("empty body", String::new(), 400, "JSON"),
    ];
    for (name, body, status, needle) in cases {
        let (got, json) = app.post_raw("/event", body).await;
        assert_eq!(got, status, "{name}: {json}");
        let message = json["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{name}: {json}");
        assert!(json["error"].is_string(), "{name}: {json}");
    }

    let queries = [
        ("/stats", "site_id"),
        ("/stats?site_id[$ne]=x", "site_id"),
        ("/stats?site_id=s&site_id=t", "site_id"),
        ("/stats?site_id=", "site_id"),
        ("/stats?site_id=s&from=yesterday", "yesterday"),
        ("/stats?site_id=s&limit=many", "limit"),
        ("/stats?site_id=s&limit=100000", "limit"),
        ("/stats?site_id=s&from=2026-11-02&to=2026-11-01", "before"),
        // The last day chrono knows: its end once overflowed into a panic.
        ("/stats?site_id=s&to=%2B262142-12-31", "years"),
    ];
    for (q, needle) in queries {
        let (got, json) = app.get(q).await;
        assert_eq!(got, 400, "{q}: {json}");
        assert!(
            json["message"].as_str().unwrap().contains(needle),
            "{q}: {json}"
        );
    }
    let (got, json) = app.get("/nowhere").await;
    assert_eq!((got, json["error"].as_str()), (404, Some("not_found")));
    // A route asked with the wrong method answers in the same JSON shape.
    let (got, json) = app.send(reqwest::Method::POST, "/stats", None, None).await;
    assert_eq!(
        (got, json["error"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let (got, json) = app
        .send(reqwest::Method::DELETE, "/event", None, None)
        .await;
    assert_eq!(
        (got, json["error"].as_str()),
        (405, Some("method_not_allowed"))
    );
    // Nothing bad was queued.
    assert_eq!(app.get("/health").await.1["queue_depth"], 0);
    assert_eq!(app.get("/health/ready").await.1["status"], "ready");
    app.stop().await;
}

#[tokio::test]
async fn gzip_bodies_are_accepted_gzip_bombs_stop_at_the_limit_and_other_encodings_are_refused() {
    let b = TestBackend::embedded();
    let app = TestApp::start(&b).await;
    let r = app
        .http
        .post(app.url("/event"))
        .header("content-encoding", "gzip")
        .body(gzip(seed_event().to_string().as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let bomb = gzip(&vec![b' '; 8 * 1024 * 1024]);
    let r = app
        .http
        .post(app.url("/events"))
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // An encoding the server cannot decode is refused in JSON, on every route.
    for (path, encoding) in [("/event", "br"), ("/api/v2/query", "x\u{ff}\u{fe}")] {
        let r = app
            .http
            .post(app.url(path))
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .body(seed_event().to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 415, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "unsupported_media_type", "{path}: {body}");
    }
    app.wait_for_total("site_id=site-001", 1).await;
    app.stop().await;
}

#[tokio::test]
async fn answers_to_ingest_go_uncompressed_and_reads_compressed() {
    let b = TestBackend::embedded();
    let app = TestApp::start(&b).await;
    // A client that says it takes gzip and leaves the answer as it came.
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let batch: Vec<Value> = (0..100).map(|_| seed_event()).collect();
    let r = raw
        .post(app.url("/events"))
        .header("accept-encoding", "gzip")
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("content-encoding").is_none());
    assert_eq!(r.json::<Value>().await.unwrap()["accepted"], 100);
    let r = raw
        .get(app.url("/openapi.json"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "gzip");
    app.stop().await;
}

#[tokio::test]
async fn batches_answer_per_event_and_dedupe_event_ids() {
    for b in TestBackend::all() {
        let app = TestApp::start(&b).await;
        let id = uuid::Uuid::now_v7().to_string();
        let batch = json!({"events": [
            {"site_id": "s", "event_type": "page_view", "path": "/a", "event_id": id},
            {"site_id": "s"},
            {"site_id": "s", "event_type": "click", "path": "/b", "props": {"target": "buy"}},
        ]});
        let (status, body) = app.post_json("/events", &batch).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            (body["accepted"].as_u64(), body["rejected"].as_u64()),
            (Some(2), Some(1))
        );
        assert_eq!(body["results"][0]["status"], "accepted");
        assert_eq!(body["results"][1]["status"], "rejected");
        assert!(
            body["results"][1]["error"]
                .as_str()
                .unwrap()
                .contains("event_type")
        );
        // The same event_id again, before and after the worker moved it: stored once.
        let again =
            json!([{"site_id": "s", "event_type": "page_view", "path": "/a", "event_id": id}]);
        assert_eq!(app.post_json("/events", &again).await.1["accepted"], 1);
        app.wait_for_total("site_id=s", 2).await;
        assert_eq!(app.post_json("/events", &again).await.1["accepted"], 1);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(app.stats("site_id=s").await.total_events, 2, "{}", b.name);

        let too_many: Vec<Value> = (0..1001)
            .map(|_| json!({"site_id": "s", "event_type": "x"}))
            .collect();
        let (status, body) = app.post_json("/events", &Value::Array(too_many)).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["message"].as_str().unwrap().contains("1000"));
        let (status, _) = app.post_json("/events", &json!({"site_id": "s"})).await;
        assert_eq!(status, 400);
        app.stop().await;
    }
}

#[tokio::test]
async fn ingest_allows_cross_origin_posts_and_text_plain_bodies() {
    let b = TestBackend::embedded();
    let app = TestApp::start(&b).await;
    let r = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/events"))
        .header("origin", "https://example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    // navigator.sendBeacon sends text/plain to avoid a preflight.
    let r = app
        .http
        .post(app.url("/events"))
        .header("content-type", "text/plain;charset=UTF-8")
        .header("origin", "https://example.com")
        .body(json!([seed_event()]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    // The same answer for every origin: nothing for a cache to tell apart.
    assert!(r.headers().get("vary").is_none());
    app.wait_for_total("site_id=site-001", 1).await;
    app.stop().await;
}

#[tokio::test]
async fn the_embedded_server_keeps_every_accepted_event_across_restarts() {
    let b = TestBackend::embedded();
    let mut accepted = 0;
    for round in 0..3 {
        let app = TestApp::start(&b).await;
        for i in 0..50 {
            let e =
                json!({"site_id": "s", "event_type": "page_view", "path": format!("/{round}/{i}")});
            let (status, _) = app.post_json("/event", &e).await;
            assert_eq!(status, 202);
            accepted += 1;
        }
        // Stop at once: some events are still queued, and must be moved after restart.
        app.stop().await;
    }
    let app = TestApp::start(&b).await;
    app.wait_for_total("site_id=s", accepted).await;
    app.stop().await;
}

#[tokio::test]
async fn concurrent_requests_share_writes_and_every_one_is_stored_once() {
    for b in TestBackend::all() {
        let app = TestApp::start(&b).await;
        let posts = (0..300).map(|i| {
            let (http, url) = (app.http.clone(), app.url("/event"));
            tokio::spawn(async move {
                let e = json!({"site_id": "busy", "event_type": "page_view", "path": format!("/{}", i % 10)});
                http.post(url).json(&e).send().await.unwrap().status().as_u16()
            })
        });
        for post in futures_join(posts).await {
            assert_eq!(post, 202, "{}", b.name);
        }
        let s = app.wait_for_total("site_id=busy", 300).await;
        assert_eq!(s.top_paths.iter().map(|p| p.count).sum::<u64>(), 300);
        app.stop().await;
    }
}

async fn futures_join<T>(tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks.collect::<Vec<_>>() {
        out.push(t.await.unwrap());
    }
    out
}
