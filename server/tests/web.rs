//! What the browser SDK needs from the server: its files under `/sdk/`, and anonymous
//! daily users for cookieless batches.
#![allow(clippy::unwrap_used)]

mod common;

use beacon_testkit::TestBackend;
use common::{TestApp, config};
use serde_json::{Value, json};

fn batch(events: &[Value], cookieless: bool) -> String {
    json!({ "events": events, "cookieless": cookieless }).to_string()
}

fn page_view(site: &str, user: Option<&str>) -> Value {
    let mut e = json!({ "site_id": site, "event_type": "page_view", "path": "/" });
    if let Some(user) = user {
        e["user_id"] = json!(user);
    }
    e
}

async fn send(app: &TestApp, body: String, ip: &str, user_agent: &str) {
    let r = app
        .http
        .post(app.url("/events"))
        .header("content-type", "text/plain;charset=UTF-8")
        // What a client forged first, then what the proxy appended: the proxy's counts.
        .header("x-forwarded-for", format!("6.6.6.6, {ip}"))
        .header("user-agent", user_agent)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn cookieless_batches_count_each_visitor_once_per_day_and_site() {
    for b in TestBackend::all() {
        let start = || async {
            let mut c = config(b.config.clone(), true);
            c.trust_proxy = true;
            let app = TestApp::start_with(c).await;
            app.wait_healthy().await;
            app
        };
        let app = start().await;
        let anon = |n: usize| batch(&vec![page_view("web", None); n], true);
        send(&app, anon(3), "203.0.113.1", "Firefox").await;
        send(&app, anon(1), "203.0.113.1", "Chrome").await;
        send(&app, anon(2), "203.0.113.2", "Firefox").await;
        // A user id the page set itself is kept.
        send(
            &app,
            batch(&[page_view("web", Some("u1"))], true),
            "203.0.113.1",
            "Firefox",
        )
        .await;
        // Not cookieless: an event without a user stays anonymous.
        send(
            &app,
            batch(&[page_view("web", None)], false),
            "203.0.113.3",
            "Firefox",
        )
        .await;
        // The same visitor on another site is another user there.
        send(&app, anon(1), "203.0.113.1", "Firefox").await;
        send(
            &app,
            batch(&[page_view("other", None)], true),
            "203.0.113.1",
            "Firefox",
        )
        .await;
        let stats = app.wait_for_total("site_id=web", 9).await;
        assert_eq!(stats.unique_users, 4, "{}", b.name);
        assert_eq!(app.wait_for_total("site_id=other", 1).await.unique_users, 1);
        app.stop().await;

        // After a restart the day's salt is the same, so a known visitor is not new.
        let app = start().await;
        send(&app, anon(1), "203.0.113.2", "Firefox").await;
        send(&app, anon(1), "203.0.113.4", "Firefox").await;
        let stats = app.wait_for_total("site_id=web", 11).await;
        assert_eq!(stats.unique_users, 5, "{}", b.name);
        app.stop().await;
    }
}

#[tokio::test]
async fn forwarded_addresses_are_ignored_unless_the_proxy_is_trusted() {
    let b = TestBackend::embedded();
    let app = TestApp::start(&b).await;
    for ip in ["198.51.100.1", "198.51.100.2"] {
        send(&app, batch(&[page_view("web", None)], true), ip, "Firefox").await;
    }
    let stats = app.wait_for_total("site_id=web", 2).await;
    assert_eq!(stats.unique_users, 1, "both came from 127.0.0.1");
    app.stop().await;
}

#[tokio::test]
async fn the_browser_sdk_is_served_with_types_caching_and_cors() {
    let b = TestBackend::embedded();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("beacon.js"), "/* snippet */").unwrap();
    std::fs::write(dir.path().join("beacon.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let mut c = config(b.config.clone(), true);
    c.sdk_dir = dir.path().to_owned();
    let app = TestApp::start_with(c).await;
    app.wait_healthy().await;
    let get = |path: &'static str| {
        app.http
            .get(app.url(path))
            .header("origin", "https://shop.example")
            .send()
    };
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };

    let r = get("/sdk/beacon.js").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").contains("javascript"));
    assert_eq!(header(&r, "cache-control"), "public, max-age=300");
    assert_eq!(header(&r, "access-control-allow-origin"), "*");

    let r = get("/sdk/beacon.wasm?v=0123abcd").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "application/wasm");
    assert!(header(&r, "cache-control").contains("immutable"));
    assert_eq!(header(&r, "access-control-allow-origin"), "*");

    for missing in [
        "/sdk/nothing.js",
        "/sdk/../Cargo.toml",
        "/sdk/%2e%2e/Cargo.toml",
    ] {
        let r = get(missing).await.unwrap();
        assert_eq!(r.status(), 404, "{missing}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "not_found");
    }
    let body: Value = get("/sdk/nothing.js").await.unwrap().json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("scripts/build-wasm")
    );
    app.stop().await;
}
