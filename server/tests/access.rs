//! Sites, keys and data rights, through the HTTP API on every backend: who may read,
//! which hosts may send, and exporting and erasing raw events.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;

use beacon_testkit::TestBackend;
use common::{TestApp, config};
use reqwest::Method;
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-for-tests-0123456789";

/// A server with `ADMIN_TOKEN` set, whose helpers read with the admin token.
async fn secured(b: &TestBackend) -> TestApp {
    secured_with(config(b.config.clone(), true)).await
}

/// The server of `c`, with `ADMIN_TOKEN` set.
async fn secured_with(mut c: beacon_server::ServerConfig) -> TestApp {
    c.admin_token = Some(ADMIN.to_owned());
    let mut app = TestApp::start_with(c).await;
    app.wait_healthy().await;
    app.token = Some(ADMIN.to_owned());
    app
}

/// `POST /api/sites`.
async fn register(app: &TestApp, site: Value) -> (u16, Value) {
    admin(app, Method::POST, "/api/sites", Some(site)).await
}

async fn admin(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    app.send(method, path, Some(ADMIN), body.as_ref()).await
}

fn event(site: &str, path: &str, user: &str) -> Value {
    json!({"site_id": site, "event_type": "page_view", "path": path, "user_id": user})
}

#[tokio::test]
async fn open_mode_reads_freely_and_keeps_the_admin_api_off() {
    let b = TestBackend::embedded();
    let app = TestApp::start(&b).await;
    assert_eq!(app.get("/stats?site_id=any").await.0, 200);
    let (_, health) = app.get("/health").await;
    assert_eq!(health["auth"], "open");
    let (status, body) = admin(&app, Method::GET, "/api/sites", None).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    app.stop().await;
}

#[tokio::test]
async fn keys_gate_reads_and_a_revoked_key_stops_at_once() {
    for b in TestBackend::all() {
        let app = secured(&b).await;
        assert_eq!(app.get("/health").await.1["auth"], "keys");
        for site in ["shop", "blog"] {
            let (status, _) = register(&app, json!({"site_id": site})).await;
            assert_eq!(status, 201, "{}", b.name);
        }
        let (status, created) = admin(&app, Method::POST, "/api/sites/shop/keys", None).await;
        assert_eq!(status, 201, "{}: {created}", b.name);
        let key = created["key"].as_str().unwrap().to_owned();
        let key_id = created["key_id"].as_str().unwrap().to_owned();
        let read = |token: Option<&str>, site: &str| {
            let path = format!("/stats?site_id={site}");
            let token = token.map(str::to_owned);
            let app = &app;
            async move { app.send(Method::GET, &path, token.as_deref(), None).await }
        };
        let (status, body) = read(None, "shop").await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unauthorized")),
            "{}",
            b.name
        );
        assert_eq!(read(Some("bk_nope_nope"), "shop").await.0, 401);
        assert_eq!(read(Some(&format!("{key}x")), "shop").await.0, 401);
        assert_eq!(read(Some(&key), "shop").await.0, 200, "{}", b.name);
        let (status, body) = read(Some(&key), "blog").await;
        assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
        assert_eq!(read(Some(ADMIN), "blog").await.0, 200);
        // A read key is not an admin key.
        let (status, _) = app.send(Method::GET, "/api/sites", Some(&key), None).await;
        assert_eq!(status, 403);
        // Listed without the key, with when it was last used.
        let (_, keys) = admin(&app, Method::GET, "/api/sites/shop/keys", None).await;
        assert_eq!(keys[0]["key_id"], key_id.as_str());
        assert!(keys[0].get("key").is_none(), "{keys}");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while admin(&app, Method::GET, "/api/sites/shop/keys", None)
            .await
            .1[0]["last_used_at"]
            .is_null()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "last use never recorded"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // A parameter that is not UTF-8 once decoded is refused in JSON.
        let (status, body) = admin(&app, Method::DELETE, "/api/sites/shop/keys/%FF", None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_request"))
        );
        let path = format!("/api/sites/shop/keys/{key_id}");
        assert_eq!(admin(&app, Method::DELETE, &path, None).await.0, 204);
        assert_eq!(read(Some(&key), "shop").await.0, 401, "{}", b.name);
        assert_eq!(admin(&app, Method::DELETE, &path, None).await.0, 404);
        app.stop().await;
    }
}

/// Two servers share one MongoDB: a key revoked through one stops working on the other
/// at once.
#[tokio::test]
async fn mongo_a_key_revoked_on_one_server_fails_on_another() {
    let Some(b) = TestBackend::mongo() else {
        return;
    };
    let first = secured(&b).await;
    let second = secured_with(config(b.config.clone(), false)).await;
    register(&first, json!({"site_id": "s"})).await;
    let (_, created) = admin(&first, Method::POST, "/api/sites/s/keys", None).await;
    let key = created["key"].as_str().unwrap();
    let on_second = || second.send(Method::GET, "/stats?site_id=s", Some(key), None);
    assert_eq!(on_second().await.0, 200);
    let path = format!("/api/sites/s/keys/{}", created["key_id"].as_str().unwrap());
    assert_eq!(admin(&first, Method::DELETE, &path, None).await.0, 204);
    assert_eq!(on_second().await.0, 401);
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn sites_are_registered_changed_and_removed() {
    for b in TestBackend::all() {
        let app = secured(&b).await;
        let new =
            json!({"site_id": "shop", "domains": ["Example.com"], "timezone": "Europe/Berlin"});
        let (status, site) = register(&app, new.clone()).await;
        assert_eq!(status, 201, "{}: {site}", b.name);
        assert_eq!(site["domains"], json!(["example.com"]));
        assert_eq!(site["timezone"], "Europe/Berlin");
        assert_eq!(
            admin(&app, Method::POST, "/api/sites", Some(new)).await.0,
            409
        );
        for bad in [
            json!({"site_id": "x", "timezone": "Mars/Olympus"}),
            json!({"site_id": "x", "domains": ["https://example.com/"]}),
            json!({"site_id": ""}),
            json!({"site_id": "x", "colour": "blue"}),
        ] {
            let (status, body) = register(&app, bad.clone()).await;
            assert_eq!(status, 400, "{bad}: {body}");
            assert!(body["message"].is_string());
        }
        let patch = json!({"timezone": "Asia/Kolkata"});
        let (status, site) = admin(&app, Method::PATCH, "/api/sites/shop", Some(patch)).await;
        assert_eq!(
            (status, site["timezone"].as_str()),
            (200, Some("Asia/Kolkata"))
        );
        assert_eq!(site["domains"], json!(["example.com"]), "kept");
        let (_, all) = admin(&app, Method::GET, "/api/sites", None).await;
        assert_eq!(all.as_array().unwrap().len(), 1);
        assert_eq!(
            admin(&app, Method::DELETE, "/api/sites/shop", None).await.0,
            204
        );
        assert_eq!(
            admin(&app, Method::GET, "/api/sites/shop", None).await.0,
            404
        );
        assert_eq!(
            admin(&app, Method::POST, "/api/sites/shop/keys", None)
                .await
                .0,
            404
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn a_site_with_domains_takes_browser_events_only_from_them() {
    for b in TestBackend::all() {
        let app = secured(&b).await;
        let site = json!({"site_id": "shop", "domains": ["example.com"]});
        admin(&app, Method::POST, "/api/sites", Some(site)).await;
        // The registry is read every two seconds, and at once after a change.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let post =
            |origin: Option<(&'static str, &'static str)>, body: Value, path: &'static str| {
                let mut request = app.http.post(app.url(path)).json(&body);
                if let Some((name, value)) = origin {
                    request = request.header(name, value);
                }
                async move {
                    let r = request.send().await.unwrap();
                    let status = r.status().as_u16();
                    (status, r.json::<Value>().await.unwrap_or(Value::Null))
                }
            };
        let e = event("shop", "/", "u");
        for (header, why) in [
            (Some(("origin", "https://www.example.com")), "a subdomain"),
            (Some(("referer", "https://example.com/cart")), "the domain"),
            (None, "server-side senders"),
        ] {
            assert_eq!(post(header, e.clone(), "/event").await.0, 202, "{why}");
        }
        let (status, body) = post(
            Some(("origin", "https://evil.example.net")),
            e.clone(),
            "/event",
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("forbidden")),
            "{}",
            b.name
        );
        // In a batch, each event on its own; all refused is a 403.
        let mixed = json!([e.clone(), event("other", "/", "u")]);
        let (status, body) = post(
            Some(("origin", "https://evil.example.net")),
            mixed,
            "/events",
        )
        .await;
        assert_eq!(
            (status, body["accepted"].as_u64()),
            (200, Some(1)),
            "{body}"
        );
        let (status, _) = post(
            Some(("origin", "https://evil.example.net")),
            json!([e]),
            "/events",
        )
        .await;
        assert_eq!(status, 403);
        let (_, health) = app.get("/health").await;
        assert_eq!(health["refused_events"]["other_hosts"], 3, "{health}");
        app.wait_for_total("site_id=shop", 3).await;
        app.stop().await;
    }
}

#[tokio::test]
async fn strict_sites_refuse_unregistered_site_ids() {
    let b = TestBackend::embedded();
    let mut c = config(b.config.clone(), true);
    c.strict_sites = true;
    let app = secured_with(c).await;
    register(&app, json!({"site_id": "known"})).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        app.post_json("/event", &event("known", "/", "u")).await.0,
        202
    );
    let (status, body) = app.post_json("/event", &event("stranger", "/", "u")).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["message"].as_str().unwrap().contains("not registered"));
    app.stop().await;
}

/// Lines of an NDJSON export.
async fn export(app: &TestApp, query: &str, accept: &str) -> (u16, String) {
    let r = app
        .http
        .get(app.url(&format!("/api/sites/s/export{query}")))
        .bearer_auth(ADMIN)
        .header("accept", accept)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn exports_stream_raw_events_as_ndjson_or_csv_and_erasure_removes_a_user() {
    for b in TestBackend::all() {
        let app = secured(&b).await;
        let mut sent = Vec::new();
        for day in 1..=3 {
            for i in 0..4 {
                let mut e = event("s", &format!("/{i},\"quoted\""), &format!("u{}", i % 2));
                e["timestamp"] = json!(format!("2026-10-0{day}T12:00:00Z"));
                e["props"] = json!({"n": i, "$oid": "x"});
                sent.push(e);
            }
        }
        let (status, _) = app.post_json("/events", &json!(sent)).await;
        assert_eq!(status, 200);
        app.wait_for_total("site_id=s", 12).await;

        let (status, body) = export(&app, "", "application/x-ndjson").await;
        assert_eq!(status, 200, "{}", b.name);
        let lines: Vec<Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 12, "{}", b.name);
        assert_eq!(
            lines[0]["props"],
            json!({"n": 0, "$oid": "x"}),
            "exactly as sent"
        );
        assert!(lines[0]["ingested_at"].is_string());
        let (_, day) = export(&app, "?from=2026-10-02&to=2026-10-02", "*/*").await;
        assert_eq!(day.lines().count(), 4);
        let (status, csv) = export(&app, "?from=2026-10-03", "text/csv").await;
        assert_eq!(status, 200);
        let mut rows = csv::Reader::from_reader(csv.as_bytes());
        assert_eq!(rows.headers().unwrap().get(3), Some("path"));
        let paths: HashSet<String> = rows
            .records()
            .map(|r| r.unwrap().get(3).unwrap().to_owned())
            .collect();
        assert!(paths.contains("/1,\"quoted\""), "{paths:?}");

        // Erasure (queued and in-flight events are covered by the store's tests).
        let (status, _) = app.post_json("/event", &event("s", "/late", "u1")).await;
        assert_eq!(status, 202);
        app.wait_for_total("site_id=s", 13).await;
        let (status, erased) = admin(&app, Method::DELETE, "/api/sites/s/users/u1", None).await;
        assert_eq!(status, 200, "{erased}");
        assert_eq!(erased["erased"], 7, "{}: six and the late one", b.name);
        let (_, left) = export(&app, "", "application/x-ndjson").await;
        let users: HashSet<String> = left
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["user_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(users, HashSet::from(["u0".to_owned()]), "{}", b.name);
        // An id ingest would refuse was never stored.
        let long = format!("/api/sites/s/users/{}", "u".repeat(1000));
        let (status, body) = admin(&app, Method::DELETE, &long, None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_request"))
        );
        // Exports are for the admin only.
        let (_, created) = {
            register(&app, json!({"site_id": "s"})).await;
            admin(&app, Method::POST, "/api/sites/s/keys", None).await
        };
        let r = app
            .http
            .get(app.url("/api/sites/s/export"))
            .bearer_auth(created["key"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        app.stop().await;
    }
}

#[tokio::test]
async fn reads_are_rate_limited_per_key() {
    let b = TestBackend::embedded();
    let mut c = config(b.config.clone(), true);
    c.limits.read_rate_limit = Some(beacon_config::RateLimit {
        per_second: 1,
        burst: 3,
    });
    let app = secured_with(c).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            app.send(Method::GET, "/stats?site_id=s", Some(ADMIN), None)
                .await,
        );
    }
    let limited = statuses.iter().find(|(s, _)| *s == 429).expect("a 429");
    assert_eq!(limited.1["error"], "rate_limited");
    // Another key has its own allowance (an unknown one is refused after it).
    let (status, _) = app
        .send(Method::GET, "/stats?site_id=s", Some("bk_other_x"), None)
        .await;
    assert_eq!(status, 401);
    app.stop().await;
}
