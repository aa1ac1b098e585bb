//! MongoDB outages: the API answers 503 quickly instead of hanging, and everything
//! recovers, with no accepted event lost, when MongoDB comes back.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use beacon_store::{Backend, StoreConfig};
use common::{TestApp, config};
use serde_json::json;

fn event(i: usize) -> serde_json::Value {
    json!({"site_id": "s", "event_type": "page_view", "path": format!("/{i}")})
}

#[tokio::test]
async fn unreachable_mongodb_gives_503_with_a_reason() {
    // Nothing listens on port 1: every connection is refused.
    let store = StoreConfig::new(Backend::Mongo {
        url: "mongodb://127.0.0.1:1/beacon".into(),
    });
    let app = TestApp::start_with(config(store, true)).await;
    let (status, body) = app.post_json("/event", &event(0)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "store_unavailable");
    let (status, _) = app.post_json("/events", &json!([event(1)])).await;
    assert_eq!(status, 503);
    assert_eq!(app.get("/stats?site_id=s").await.0, 503);
    assert_eq!(app.get("/health").await.0, 503);
    let (status, ready) = app.get("/health/ready").await;
    assert_eq!(
        (status, &ready["status"]),
        (503, &json!("not_ready")),
        "{ready}"
    );
    // Alive all the same: restarting the process would not bring MongoDB back.
    assert_eq!(
        app.get("/health/live").await,
        (200, json!({"status": "live"}))
    );
    // Bad input is still a 400, whatever the store's state.
    assert_eq!(app.post_raw("/event", "{").await.0, 400);
    app.stop().await;
}

#[tokio::test]
async fn server_and_worker_recover_when_mongodb_comes_back() {
    let Some((backend, proxy)) = beacon_testkit::mongo_behind_proxy().await else {
        return;
    };
    // Server and worker as separate components, as on a scaled-out deployment.
    let app = TestApp::start_with(config(backend.config.clone(), false)).await;
    app.wait_healthy().await;
    let worker_store = beacon_store::Store::open(backend.config.clone())
        .await
        .unwrap();
    let worker_config = config(backend.config.clone(), false).worker;
    let (stop_worker, worker_stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(beacon_worker::run(
        worker_config,
        worker_store,
        async move {
            let _ = worker_stopped.await;
        },
    ));

    let mut accepted = 0;
    for i in 0..20 {
        assert_eq!(app.post_json("/event", &event(i)).await.0, 202);
        accepted += 1;
    }
    proxy.go_down();
    let mut refused = 0;
    for i in 20..25 {
        match app.post_json("/event", &event(i)).await.0 {
            202 => accepted += 1,
            503 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(refused > 0, "the outage was seen");
    assert_eq!(app.get("/health").await.0, 503);
    assert_eq!(app.get("/health/ready").await.0, 503);
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.come_up();
    wait_ready(&app).await;
    // The driver reconnects on its own; keep posting until it does.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut sent = 25;
    while accepted < 40 {
        assert!(tokio::time::Instant::now() < deadline, "no recovery");
        if app.post_json("/event", &event(sent)).await.0 == 202 {
            accepted += 1;
        }
        sent += 1;
    }
    app.wait_for_total("site_id=s", accepted).await;
    let _ = stop_worker.send(());
    worker.await.unwrap();
    app.stop().await;
}

/// Waits until `/health/ready` says ready again.
async fn wait_ready(app: &TestApp) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = app.get("/health/ready").await;
        if status == 200 {
            assert_eq!(body["status"], "ready");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Through a MongoDB outage that cuts writes in the middle, every event answered 2xx is
/// stored and every event answered with an error is not: the events carry no id, so a
/// client retrying after a 503 would otherwise count one twice.
#[tokio::test]
async fn every_answer_is_true_through_an_outage() {
    let Some((backend, proxy)) = beacon_testkit::mongo_behind_proxy().await else {
        return;
    };
    let app = TestApp::start_with(config(backend.config.clone(), true)).await;
    app.wait_healthy().await;
    let mut answered = std::collections::HashMap::new();
    for i in 0..40 {
        if i == 12 {
            proxy.go_down();
        }
        if i == 24 {
            proxy.come_up();
        }
        let e = serde_json::json!({"site_id": "truth", "event_type": "page_view", "path": format!("/{i}")});
        let r = app.http.post(app.url("/event")).json(&e).send().await;
        let status = r.map(|r| r.status().as_u16()).unwrap_or(0);
        assert!(status == 202 || status == 503, "/{i}: {status}");
        answered.insert(format!("/{i}"), status);
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let acknowledged: std::collections::HashSet<String> = answered
        .iter()
        .filter(|(_, s)| **s == 202)
        .map(|(p, _)| p.clone())
        .collect();
    assert!(acknowledged.len() < 40, "the outage refused some");
    let stats = app
        .wait_for_total("site_id=truth&limit=1000", acknowledged.len() as u64)
        .await;
    // Past every lease: an unreleased batch would have been discarded by now, not moved.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let stats_later = app.stats("site_id=truth&limit=1000").await;
    assert_eq!(stats, stats_later);
    let stored: std::collections::HashSet<String> =
        stats.top_paths.into_iter().map(|p| p.path).collect();
    assert_eq!(stored, acknowledged);
    app.stop().await;
}
