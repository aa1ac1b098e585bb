//! The snippet's own behaviour in headless Chromium, against the real server: a tag
//! without a site id, a developer's localhost, opting out and back in, cookieless mode,
//! an event refused in the browser, a send that fails (a peer answering `503` once) and
//! is retried without counting twice, and a page's Content Security Policy. `e2e.rs`
//! covers a whole visit; this file the edges.
//!
//! Needs `scripts/build-wasm` to have run and `chromedriver`, like `e2e.rs`.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use beacon_protocol::Stats;
use beacon_store::{Backend, StoreConfig};
use beacon_testkit::browser::{browser, chromedriver, may_run, snippet_ready, start_chromedriver};
use fantoccini::Client;
use serde_json::{Value, json};
use tokio::net::TcpListener;

fn pkg() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pkg")
}

#[derive(Clone)]
struct Site {
    beacon: String,
    /// Requests the flaky peer has seen; it refuses the first.
    flaky_seen: Arc<AtomicUsize>,
}

/// A page with the snippet, its tag carrying `attrs`, and a record of errors thrown
/// into the page. With `early`, the page tracks an event called `early` as soon as the
/// snippet has run, before its tracker has loaded; with `csp`, it is served with that
/// Content Security Policy.
async fn page(
    State(site): State<Site>,
    Query(q): Query<Vec<(String, String)>>,
) -> impl IntoResponse {
    let param = |name: &str| q.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let attrs = param("attrs").unwrap_or_default();
    let csp = param("csp").map(|csp| [(header::CONTENT_SECURITY_POLICY, csp)]);
    let early = match q.iter().any(|(k, _)| k == "early") {
        true => {
            "<script>addEventListener('DOMContentLoaded', function () { beacon.track('early'); });</script>"
        }
        false => "",
    };
    let html = Html(format!(
        "<!doctype html><html><head><script>window.errors = [];\
         addEventListener('error', function (e) {{ errors.push(String(e.message)); }});</script>\
         <script defer src=\"{}/sdk/beacon.js\" {attrs}></script>{early}</head>\
         <body><p>test page</p></body></html>",
        site.beacon
    ));
    (csp, html)
}

/// Answers `503` to the first request, then passes requests on to the real server.
async fn flaky(State(site): State<Site>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    if site.flaky_seen.fetch_add(1, Ordering::SeqCst) == 0 {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/plain")
        .to_owned();
    let answer = reqwest::Client::new()
        .post(format!("{}/events", site.beacon))
        .header(header::CONTENT_TYPE, kind)
        .body(body)
        .send()
        .await
        .unwrap();
    StatusCode::from_u16(answer.status().as_u16()).unwrap()
}

async fn start_site(site: Site) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/page", get(page))
        .route("/flaky/events", post(flaky))
        .with_state(site);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Opens the page with `attrs` and waits for the snippet: true if the visit is tracked.
async fn open(browser: &Client, site: &str, attrs: &str) -> bool {
    open_with(browser, site, &[("attrs", attrs)]).await
}

/// Opens the page with the query `params`, and waits for the snippet: true if the visit
/// is tracked. Nothing may be thrown into the page.
async fn open_with(browser: &Client, site: &str, params: &[(&str, &str)]) -> bool {
    let url = reqwest::Url::parse_with_params(&format!("{site}/page"), params).unwrap();
    browser.goto(url.as_str()).await.unwrap();
    let tracked = snippet_ready(browser).await;
    let errors = browser
        .execute("return window.errors", vec![])
        .await
        .unwrap();
    assert_eq!(errors, json!([]), "nothing thrown into the page");
    tracked
}

async fn run(browser: &Client, script: &str) -> Value {
    browser.execute(script, vec![]).await.unwrap()
}

async fn total(beacon: &str, site_id: &str) -> u64 {
    let url = format!("{beacon}/stats?site_id={site_id}");
    let stats: Stats = reqwest::get(url).await.unwrap().json().await.unwrap();
    stats.total_events
}

/// Waits for `site_id` to reach `want` events, then a little longer for any extra.
async fn settled_total(beacon: &str, site_id: &str, want: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while total(beacon, site_id).await < want && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    total(beacon, site_id).await
}

#[tokio::test]
async fn the_snippet_respects_visitors_and_retries_what_fails() {
    if !may_run(
        chromedriver().and_then(|_| match pkg().join("beacon.js").is_file() {
            true => Ok(()),
            false => Err("sdk-wasm/pkg/ is not built: run scripts/build-wasm".into()),
        }),
    ) {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let mut config = beacon_testkit::server_config(StoreConfig::new(Backend::Embedded {
        data_dir: data.path().to_owned(),
    }));
    config.sdk_dir = pkg();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let beacon = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(beacon_server::run(config, listener, std::future::pending()));
    let flaky_seen = Arc::new(AtomicUsize::new(0));
    let site = Site {
        beacon: beacon.clone(),
        flaky_seen: Arc::clone(&flaky_seen),
    };
    let site = format!("http://{}", start_site(site).await);
    let (_chromedriver, webdriver) = start_chromedriver(&chromedriver().unwrap()).await;
    let browser = browser(&webdriver, 1024, 700).await;
    // No timer: events leave only when the page goes away (sendBeacon) unless a test
    // sets its own interval.
    let local = "data-allow-localhost data-flush-ms=\"600000\"";

    // A tag without a site id: a console warning, not tracking, nothing thrown.
    assert!(!open(&browser, &site, local).await);

    // A developer's own machine is skipped unless the tag allows it.
    assert!(!open(&browser, &site, "data-site-id=\"dev\"").await);
    run(&browser, "beacon.track('x')").await;

    // Opting out drops what waits and holds on the next page; opting in undoes it.
    run(&browser, "localStorage.clear()").await;
    assert!(open(&browser, &site, &format!("data-site-id=\"out\" {local}")).await);
    // The load's page view has gone already; 'before' waits, and is dropped.
    run(
        &browser,
        "beacon.track('before'); beacon.optOut(); beacon.track('after')",
    )
    .await;
    assert!(!open(&browser, &site, &format!("data-site-id=\"out\" {local}")).await);
    run(&browser, "beacon.optIn()").await;
    assert!(open(&browser, &site, &format!("data-site-id=\"out\" {local}")).await);
    let uid = run(&browser, "return localStorage.getItem('beacon_uid')").await;
    assert_eq!(
        uid.as_str().map(str::len),
        Some(32),
        "a visitor id on the device"
    );

    // Cookieless: nothing stored on the device.
    run(&browser, "localStorage.clear()").await;
    assert!(
        open(
            &browser,
            &site,
            &format!("data-site-id=\"nocookie\" data-cookieless {local}")
        )
        .await
    );
    let uid = run(&browser, "return localStorage.getItem('beacon_uid')").await;
    assert_eq!(uid, Value::Null);
    // An event the server would refuse is a console warning, and tracking goes on.
    run(&browser, "beacon.track('')").await;
    run(&browser, "beacon.track('signup', {plan: 'pro'})").await;

    // A send refused with 503 comes back and goes again with the next tick.
    let flaky = format!(
        "data-site-id=\"flaky\" data-allow-localhost data-flush-ms=\"300\" data-api=\"{site}/flaky\""
    );
    assert!(open(&browser, &site, &flaky).await);
    run(&browser, "beacon.track('one')").await;
    assert_eq!(
        settled_total(&beacon, "flaky", 2).await,
        2,
        "the page view and 'one', once each"
    );
    assert!(
        flaky_seen.load(Ordering::SeqCst) >= 2,
        "the first send was refused"
    );

    // A call made before the tracker has loaded is kept, and sent once it has.
    let attrs = "data-site-id=\"early\" data-allow-localhost data-flush-ms=\"300\"";
    let url = reqwest::Url::parse_with_params(
        &format!("{site}/page"),
        [("attrs", attrs), ("early", "1")],
    )
    .unwrap();
    browser.goto(url.as_str()).await.unwrap();
    assert!(snippet_ready(&browser).await);
    assert_eq!(
        settled_total(&beacon, "early", 2).await,
        2,
        "the page view and 'early'"
    );

    // A Content Security Policy without 'wasm-unsafe-eval' stops the snippet, and the
    // page goes on; with what the README lists, it tracks.
    let attrs = format!("data-site-id=\"csp\" {local}");
    for (wasm, tracked) in [("", false), (" 'wasm-unsafe-eval'", true)] {
        let csp = format!("script-src 'unsafe-inline'{wasm} {beacon}; connect-src {beacon}");
        let params = [("attrs", attrs.as_str()), ("csp", csp.as_str())];
        assert_eq!(open_with(&browser, &site, &params).await, tracked, "{csp}");
    }

    browser.goto("about:blank").await.unwrap();
    assert_eq!(
        settled_total(&beacon, "out", 2).await,
        2,
        "the page views before opting out and after opting in, not 'before' or 'after'"
    );
    assert_eq!(settled_total(&beacon, "nocookie", 2).await, 2);
    assert_eq!(
        settled_total(&beacon, "csp", 1).await,
        1,
        "the allowed page's view"
    );
    assert_eq!(total(&beacon, "dev").await, 0);
    let _ = browser.close().await;
}
