//! End to end in a real browser: the real server and worker (embedded store), the
//! example site on another origin, and headless Chromium driven over WebDriver. It
//! loads pages, navigates (links and SPA history), clicks, and closes the page; `/stats`
//! must then show exactly those page views and clicks, including the ones that only
//! `sendBeacon` on close could have delivered.
//!
//! Needs `scripts/build-wasm` to have run and `chromedriver` (or `CHROMEDRIVER`).
//! Without them the test says SKIPPED, or fails when `BEACON_REQUIRE_BROWSER=1`, as
//! `scripts/test` sets.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::State;
use axum::http::{Uri, header};
use axum::response::IntoResponse;
use beacon_protocol::Stats;
use beacon_store::{Backend, StoreConfig};
use beacon_testkit::browser::{browser, chromedriver, may_run, snippet_ready, start_chromedriver};
use fantoccini::{Client, Locator};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const SITE: &str = "site-001";

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Why the test cannot run, if it cannot.
fn prerequisites() -> Result<(), String> {
    if !manifest_dir().join("pkg/beacon.js").is_file() {
        return Err("sdk-wasm/pkg/ is not built: run scripts/build-wasm".into());
    }
    chromedriver().map(|_| ())
}

/// Serves `examples/web` as a static host would, pointing the snippet at `beacon` and
/// setting how often each page flushes: the home page on a short timer (to prove the
/// `fetch` path), the others never (so their events can only leave by `sendBeacon`).
async fn start_site(beacon: String) -> SocketAddr {
    async fn file(State(beacon): State<String>, uri: Uri) -> impl IntoResponse {
        let dir = manifest_dir().join("../examples/web");
        let name = match uri.path().trim_start_matches('/') {
            "" => "index.html",
            other => other,
        };
        let Ok(bytes) = std::fs::read(dir.join(name)) else {
            return (
                axum::http::StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/plain")],
                Vec::new(),
            );
        };
        if let Some(html) = name.strip_suffix(".html") {
            let flush = if html == "index" { "1000" } else { "600000" };
            let page = String::from_utf8(bytes)
                .unwrap()
                .replace("http://localhost:1000", &beacon)
                .replace(
                    "data-allow-localhost",
                    &format!("data-allow-localhost data-flush-ms=\"{flush}\""),
                );
            return (
                axum::http::StatusCode::OK,
                [(header::CONTENT_TYPE, "text/html")],
                page.into_bytes(),
            );
        }
        let kind = if name.ends_with(".css") {
            "text/css"
        } else {
            "application/octet-stream"
        };
        (
            axum::http::StatusCode::OK,
            [(header::CONTENT_TYPE, kind)],
            bytes,
        )
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(file).with_state(beacon);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn stats(http: &reqwest::Client, beacon: &str, query: &str) -> Stats {
    let url = format!("{beacon}/stats?site_id={SITE}{query}");
    http.get(url).send().await.unwrap().json().await.unwrap()
}

async fn wait_for_total(http: &reqwest::Client, beacon: &str, total: u64) -> Stats {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = stats(http, beacon, "").await;
        if s.total_events >= total || tokio::time::Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_visit_in_chromium_shows_up_in_stats_exactly() {
    if !may_run(prerequisites()) {
        return;
    }
    let driver = chromedriver().unwrap();

    // The real server with the worker inside, serving the built SDK.
    let data = tempfile::tempdir().unwrap();
    let mut config = beacon_testkit::server_config(StoreConfig::new(Backend::Embedded {
        data_dir: data.path().to_owned(),
    }));
    config.sdk_dir = manifest_dir().join("pkg");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let beacon = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(beacon_server::run(config, listener, async move {
        let _ = stopped.await;
    }));
    let site = format!("http://{}", start_site(beacon.clone()).await);
    let (_chromedriver, webdriver) = start_chromedriver(&driver).await;
    let browser = browser(&webdriver, 1280, 800).await;
    let http = reqwest::Client::new();

    // Home, arriving from another host by a tagged link: a page view on load and a
    // marked button, sent by the timer's fetch.
    let elsewhere = beacon.replace("127.0.0.1", "localhost");
    browser.goto(&format!("{elsewhere}/health")).await.unwrap();
    browser
        .execute(
            "location.href = arguments[0]",
            vec![json!(format!(
                "{site}/?utm_source=newsletter&utm_campaign=launch&secret=1"
            ))],
        )
        .await
        .unwrap();
    assert!(
        snippet_ready(&browser).await,
        "the snippet did not start tracking"
    );
    click(&browser, "#signup").await;
    assert_eq!(
        wait_for_total(&http, &beacon, 2).await.total_events,
        2,
        "fetch on the timer"
    );

    // About, by a link: the home page's pagehide flushes (nothing left there).
    click(&browser, "a[href='/about.html']").await;
    assert!(snippet_ready(&browser).await);
    // An outbound link (it opens a tab, which fails offline; the click is what counts).
    click(&browser, "#outbound").await;
    // The SPA, by a link: about's events leave by sendBeacon on pagehide.
    click(&browser, "a[href='/spa.html']").await;
    assert!(snippet_ready(&browser).await);
    click(&browser, "#to-settings").await;
    click(&browser, "#to-profile").await;
    browser.back().await.unwrap();
    click(&browser, "#save").await;
    // Closing the tab: only sendBeacon can deliver the SPA's five events now.
    browser.close_window().await.unwrap();

    let all = wait_for_total(&http, &beacon, 9).await;
    // Give a duplicate time to show up, were there one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let all_again = stats(&http, &beacon, "").await;
    let views = stats(&http, &beacon, "&event_type=page_view").await;
    let clicks = stats(&http, &beacon, "&event_type=click").await;
    let _ = browser.close().await;

    assert_eq!(all.total_events, 9, "{all:?}");
    assert_eq!(all_again, all, "nothing counted twice");
    assert_eq!(all.unique_users, 1, "one visitor, one id from localStorage");
    assert_eq!(views.total_events, 6);
    let mut paths: Vec<(String, u64)> = views
        .top_paths
        .iter()
        .map(|p| (p.path.clone(), p.count))
        .collect();
    paths.sort();
    let expected = [
        ("/", 1),
        ("/about.html", 1),
        ("/spa.html", 1),
        ("/spa/profile", 1),
        ("/spa/settings", 2),
    ];
    assert_eq!(paths, expected.map(|(p, c)| (p.to_owned(), c)));
    assert_eq!(clicks.total_events, 3, "signup, the outbound link, save");

    let _ = stop.send(());
    server.await.unwrap().unwrap();

    // The home page's events say where the visit came from; the path keeps no query.
    let store = beacon_store::Store::open(StoreConfig::new(Backend::Embedded {
        data_dir: data.path().to_owned(),
    }))
    .await
    .unwrap();
    let page = beacon_store::EventsPage {
        site_id: SITE.to_owned(),
        from: None,
        to: None,
        after: None,
        limit: 100,
    };
    let events = store.events_page(&page).await.unwrap();
    let home: Vec<_> = events
        .iter()
        .filter(|e| e.path.as_deref() == Some("/"))
        .collect();
    assert_eq!(home.len(), 2, "the page view and the signup click");
    for e in home {
        let c = &e.context;
        assert_eq!(c.utm_source.as_deref(), Some("newsletter"));
        assert_eq!(c.utm_campaign.as_deref(), Some("launch"));
        assert_eq!(c.referrer.as_deref(), Some("localhost"));
        assert_eq!(c.source.as_deref(), Some("newsletter"));
        assert_eq!(c.browser.as_deref(), Some("Chrome"));
        assert_eq!(c.hostname.as_deref(), Some("127.0.0.1"));
    }
    let about = events
        .iter()
        .find(|e| e.path.as_deref() == Some("/about.html"))
        .unwrap();
    assert_eq!(about.context.referrer, None, "a link within the site");
}
