//! The server's limits, tried as the open internet tries them: half-sent requests, a
//! shutdown with clients hanging on, a queue that fills up, a flood from one address,
//! and a store too slow to answer in time.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use beacon_testkit::TestBackend;
use common::{TestApp, config};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn event(site: &str, path: &str) -> serde_json::Value {
    json!({"site_id": site, "event_type": "page_view", "path": path})
}

/// A connection that sent half a request's headers and then nothing.
async fn half_sent(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /event HTTP/1.1\r\nHost: beacon\r\nContent-Ty")
        .await
        .unwrap();
    stream
}

/// Whether the server closed `stream` (within 10 s).
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await,
        Ok(Ok(_) | Err(_))
    )
}

#[tokio::test]
async fn a_thousand_half_sent_requests_do_not_stop_a_new_client_and_are_closed() {
    let b = TestBackend::embedded();
    let mut c = config(b.config.clone(), true);
    c.limits.header_timeout = Duration::from_millis(500);
    let app = TestApp::start_with(c).await;
    app.wait_healthy().await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(half_sent(&addr).await);
    }
    // A new client is served while they hang.
    assert_eq!(app.post_json("/event", &event("s", "/")).await.0, 202);
    // And each of them is closed once the header timeout passes.
    for stream in idle.iter_mut().step_by(50) {
        assert!(
            closed_by_server(stream).await,
            "a half-sent request was left open"
        );
    }
    app.stop().await;
}

/// The real binary under SIGTERM, with clients attached that never finish their
/// requests: it stops accepting, and exits once the shutdown deadline has passed.
#[tokio::test]
async fn sigterm_with_hanging_clients_exits_within_the_shutdown_deadline() {
    let data = tempfile::tempdir().unwrap();
    let port = beacon_testkit::free_port();
    let mut server = common::server_binary(data.path(), port)
        .env("HEADER_TIMEOUT_MS", "600000")
        .env("SHUTDOWN_TIMEOUT_MS", "500")
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while http
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .is_err()
    {
        assert!(tokio::time::Instant::now() < deadline, "never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut hanging = Vec::new();
    for _ in 0..100 {
        hanging.push(half_sent(&addr).await);
    }
    // And one that sent its headers but only half its body.
    let mut slow_body = TcpStream::connect(&addr).await.unwrap();
    slow_body
        .write_all(b"POST /event HTTP/1.1\r\nHost: beacon\r\nContent-Length: 100\r\n\r\n{\"site")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = server.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    // Loose on purpose: without a deadline it never exits while they hang on.
    let exit = tokio::time::timeout(Duration::from_secs(20), server.wait())
        .await
        .expect("the server exited")
        .unwrap();
    assert!(exit.success(), "{exit}");
}

#[tokio::test]
async fn above_the_high_water_mark_ingest_gets_503_and_recovers_when_the_worker_drains() {
    for b in TestBackend::all() {
        let mut c = config(b.config.clone(), false); // no worker: the queue only grows
        c.limits.queue_max_events = 50;
        let app = TestApp::start_with(c.clone()).await;
        app.wait_healthy().await;
        let batch: Vec<_> = (0..20).map(|i| event("s", &format!("/{i}"))).collect();
        let mut accepted = 0;
        let mut full = None;
        for _ in 0..20 {
            let r = app
                .http
                .post(app.url("/events"))
                .json(&batch)
                .send()
                .await
                .unwrap();
            if r.status() == 503 {
                full = Some(r);
                break;
            }
            assert_eq!(r.status(), 200, "{}", b.name);
            accepted += 20;
            tokio::time::sleep(Duration::from_millis(400)).await; // a depth reading
        }
        let full = full.expect("ingest was refused above the mark");
        assert!(full.headers().contains_key("retry-after"));
        let body: serde_json::Value = full.json().await.unwrap();
        assert_eq!(body["error"], "queue_full", "{}: {body}", b.name);
        let over = r#"beacon_ingest_events_total{outcome="over_high_water_mark"}"#;
        assert!(app.metric(over).await >= 1.0, "{}", b.name);
        let (_, health) = app.get("/health").await;
        assert_eq!(health["status"], "degraded", "{}: {health}", b.name);
        // Not ready for traffic above the mark, though alive.
        let (status, ready) = app.get("/health/ready").await;
        assert_eq!(
            (status, &ready["status"]),
            (503, &json!("not_ready")),
            "{ready}"
        );
        assert!(
            ready["reason"]
                .as_str()
                .unwrap()
                .contains("QUEUE_MAX_EVENTS")
        );
        assert_eq!(app.get("/health/live").await.0, 200);
        assert!(
            health["oldest_queued_age_seconds"].as_f64().is_some(),
            "{health}"
        );
        // A worker drains the queue: on MongoDB a process of its own, on the embedded
        // store (one process owns its files) the server restarted with its worker.
        let app = if b.name == "mongo" {
            let store = beacon_store::Store::open(b.config.clone()).await.unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(beacon_worker::run(c.worker.clone(), store, async move {
                let _ = stopped.await;
            }));
            std::mem::forget(stop); // runs until the test ends
            app
        } else {
            app.stop().await;
            TestApp::start_with(config(b.config.clone(), true)).await
        };
        app.wait_for_total("site_id=s", accepted).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while app.post_json("/event", &event("s", "/again")).await.0 != 202 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: never recovered",
                b.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        app.wait_for_total("site_id=s", accepted + 1).await;
        app.stop().await;
    }
}

#[tokio::test]
async fn a_flood_from_one_address_gets_429_and_others_are_served() {
    let b = TestBackend::embedded();
    let mut c = config(b.config.clone(), true);
    c.limits.rate_limit = Some(beacon_config::RateLimit {
        per_second: 1,
        burst: 3,
    });
    c.trust_proxy = true;
    let app = TestApp::start_with(c).await;
    app.wait_healthy().await;
    let send = |from: &'static str| {
        app.http
            .post(app.url("/event"))
            .header("x-forwarded-for", format!("6.6.6.6, {from}"))
            .json(&event("s", "/"))
            .send()
    };
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(send("203.0.113.1").await.unwrap());
    }
    let limited = statuses
        .into_iter()
        .find(|r| r.status() == 429)
        .expect("a 429");
    assert!(limited.headers().contains_key("retry-after"));
    let body: serde_json::Value = limited.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited", "{body}");
    let limited = app
        .metric(r#"beacon_ingest_events_total{outcome="rate_limited"}"#)
        .await;
    assert!(limited >= 1.0, "{limited}");
    // Another address has its own allowance; reads are not limited.
    assert_eq!(send("203.0.113.2").await.unwrap().status(), 202);
    assert_eq!(app.get("/health").await.0, 200);
    app.stop().await;
}

/// Every event answered 2xx is stored, and every event answered with an error is not,
/// when the store is too slow: here another process holds the queue's write lock for
/// two seconds while requests keep arriving. The events carry no id, so a retry after
/// an error would double-count any event that was stored anyway.
#[tokio::test]
async fn an_answer_of_503_means_not_stored_when_the_store_is_slow() {
    let b = TestBackend::embedded();
    let mut c = config(b.config.clone(), true);
    c.limits.store_timeout = Duration::from_millis(300);
    let app = TestApp::start_with(c).await;
    app.wait_healthy().await;
    let queue_db = b.data_dir().unwrap().join("queue.db");
    let locker = std::thread::spawn(move || {
        let mut conn = rusqlite::Connection::open(queue_db).unwrap();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        std::thread::sleep(Duration::from_secs(2));
        tx.rollback().unwrap();
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut sent = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..30 {
        let path = format!("/{i}");
        sent.push(path.clone());
        let (http, url) = (app.http.clone(), app.url("/event"));
        tasks.push(tokio::spawn(async move {
            let r = http.post(url).json(&event("slow", &path)).send().await;
            (path, r.map(|r| r.status().as_u16()).unwrap_or(0))
        }));
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let mut stored_expected = HashSet::new();
    let mut refused = 0;
    for task in tasks {
        let (path, status) = task.await.unwrap();
        match status {
            202 => {
                stored_expected.insert(path);
            }
            503 => refused += 1,
            other => panic!("{path}: unexpected {other}"),
        }
    }
    locker.join().unwrap();
    assert!(refused > 0, "the store was slow enough to refuse some");
    let stats = app
        .wait_for_total("site_id=slow&limit=1000", stored_expected.len() as u64)
        .await;
    let stored: HashSet<String> = stats.top_paths.into_iter().map(|p| p.path).collect();
    assert_eq!(stored, stored_expected);
    // And nothing shows up later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        app.stats("site_id=slow").await.total_events,
        stored_expected.len() as u64
    );
    app.stop().await;
}
