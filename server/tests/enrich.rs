//! Enrichment at ingest, through the HTTP API on every backend: what a request says about
//! its visitor becomes the stored context, bots are left out, and no raw user agent or
//! address is kept.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use beacon_testkit::TestBackend;
use common::{TestApp, config};
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-for-tests-0123456789";
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
const HEADLESS: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.6099.109 Safari/537.36";

fn geoip_db() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testkit/data/geoip-test.mmdb"
    ))
}

async fn post(app: &TestApp, agent: &str, forwarded: &str, events: Value) -> u16 {
    let r = app
        .http
        .post(app.url("/events"))
        .header("user-agent", agent)
        .header("x-forwarded-for", forwarded)
        .header("origin", "https://shop.example")
        .json(&events)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert!(
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "accepted"),
        "{body}"
    );
    status
}

async fn exported(app: &TestApp) -> Vec<Value> {
    let r = app
        .http
        .get(app.url("/api/sites/s/export"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut events: Vec<Value> = r
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    events.sort_by_key(|e| e["path"].as_str().unwrap_or_default().to_owned());
    events
}

#[tokio::test]
async fn requests_become_context_and_bots_are_left_out() {
    for b in TestBackend::all() {
        let mut c = config(b.config.clone(), true);
        c.admin_token = Some(ADMIN.to_owned());
        c.trust_proxy = true;
        c.geoip_db = Some(geoip_db());
        let mut app = TestApp::start_with(c).await;
        app.wait_healthy().await;
        app.token = Some(ADMIN.to_owned());
        let person = json!([
            {"site_id": "s", "event_type": "page_view", "path": "/a", "user_id": "u1",
             "referrer": "https://www.google.com/search?q=secret",
             "utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "launch"},
            {"site_id": "s", "event_type": "page_view", "path": "/b", "user_id": "u1",
             "referrer": "https://shop.example/a"},
        ]);
        assert_eq!(post(&app, CHROME, "203.0.113.7", person).await, 200);
        let relayed = json!([
            {"site_id": "s", "event_type": "page_view", "path": "/c", "user_id": "u2",
             "user_agent": IPHONE, "hostname": "m.shop.example"},
            {"site_id": "s", "event_type": "page_view", "path": "/bot", "user_id": "u3",
             "user_agent": GOOGLEBOT},
        ]);
        assert_eq!(post(&app, "curl/8.5.0", "2001:db8::5", relayed).await, 200);
        for agent in [GOOGLEBOT, HEADLESS] {
            let bot = json!([{"site_id": "s", "event_type": "page_view", "path": "/bot"}]);
            assert_eq!(post(&app, agent, "198.51.100.1", bot).await, 200);
        }
        app.wait_for_total("site_id=s", 3).await;
        let (_, health) = app.get("/health").await;
        assert_eq!(health["bots_dropped"], 3, "{}", b.name);

        let events = exported(&app).await;
        let paths: Vec<&str> = events.iter().map(|e| e["path"].as_str().unwrap()).collect();
        assert_eq!(paths, ["/a", "/b", "/c"], "{}", b.name);
        let field = |i: usize, name: &str| events[i][name].as_str().map(str::to_owned);
        assert_eq!(
            field(0, "referrer").as_deref(),
            Some("www.google.com/search")
        );
        // A tag wins over the referrer.
        assert_eq!(field(0, "source").as_deref(), Some("newsletter"));
        assert_eq!(field(0, "channel").as_deref(), Some("Email"));
        assert_eq!(field(0, "utm_campaign").as_deref(), Some("launch"));
        assert_eq!(field(0, "hostname").as_deref(), Some("shop.example"));
        assert_eq!(field(0, "browser").as_deref(), Some("Chrome"));
        assert_eq!(field(0, "os").as_deref(), Some("Windows"));
        assert_eq!(field(0, "device").as_deref(), Some("Desktop"));
        assert_eq!(field(0, "country").as_deref(), Some("DE"));
        // A link within the site is not a referrer.
        assert_eq!(field(1, "referrer"), None);
        assert_eq!(field(1, "source").as_deref(), Some("Direct / None"));
        // A server passing on its visitor's user agent and page.
        assert_eq!(field(2, "browser").as_deref(), Some("Safari"));
        assert_eq!(field(2, "device").as_deref(), Some("Mobile"));
        assert_eq!(field(2, "hostname").as_deref(), Some("m.shop.example"));
        assert_eq!(field(2, "country").as_deref(), Some("JP"));
        // Nothing raw is kept.
        let all = serde_json::to_string(&events).unwrap();
        for raw in ["203.0.113.7", "2001:db8::5", "Mozilla", "q=secret"] {
            assert!(!all.contains(raw), "{}: {raw} stored", b.name);
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn bot_filter_off_keeps_bots() {
    let b = TestBackend::embedded();
    let mut c = config(b.config.clone(), true);
    c.bot_filter = false;
    let app = TestApp::start_with(c).await;
    app.wait_healthy().await;
    let bot = json!([{"site_id": "s", "event_type": "page_view", "path": "/"}]);
    assert_eq!(post(&app, GOOGLEBOT, "", bot).await, 200);
    app.wait_for_total("site_id=s", 1).await;
    assert_eq!(app.get("/health").await.1["bots_dropped"], 0);
    app.stop().await;
}
