//! The dashboard, in headless Chromium against the real server: its numbers match what
//! was sent, a row filters the whole page, an empty site shows the snippet, a phone's
//! width fits, and with `ADMIN_TOKEN` it asks for a key and a shared link reads one site.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use beacon_testkit::TestBackend;
use beacon_testkit::browser::{browser, chromedriver, may_run, start_chromedriver};
use chrono::{TimeDelta, Utc};
use common::{TestApp, config};
use fantoccini::{Client, Locator};
use reqwest::Method;
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-for-tests-0123456789";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0";

/// Three visitors this week: two on Chrome (one reads three pages, one bounces), one on
/// Firefox from Hacker News who reads two pages and signs up.
async fn seed(app: &TestApp, site: &str) {
    let at = |minutes: i64| {
        (Utc::now() - TimeDelta::hours(3) + TimeDelta::minutes(minutes)).to_rfc3339()
    };
    let chrome = beacon_testkit::browser::DESKTOP_CHROME;
    let event = |user: &str, path: &str, minutes: i64, agent: &str| {
        json!({"site_id": site, "event_type": "page_view", "path": path, "user_id": user,
               "timestamp": at(minutes), "user_agent": agent})
    };
    let mut hn = event("c", "/", 0, FIREFOX);
    hn["referrer"] = json!("https://news.ycombinator.com/item?id=1");
    let events = json!([
        event("a", "/", 0, chrome), event("a", "/pricing", 1, chrome), event("a", "/docs", 3, chrome),
        event("b", "/", 10, chrome),
        hn, event("c", "/pricing", 2, FIREFOX),
        {"site_id": site, "event_type": "signup", "path": "/pricing", "user_id": "c",
         "timestamp": at(3), "user_agent": FIREFOX},
    ]);
    let (status, answer) = app.post_json("/events", &events).await;
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(7)),
        "{answer}"
    );
    app.wait_for_total(&format!("site_id={site}"), 7).await;
}

/// Waits until the page has finished a load after `after` (its `data-loaded` counter).
async fn loaded(browser: &Client, after: i64) -> i64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let done = browser
            .execute("return Number(document.body.dataset.loaded || 0)", vec![])
            .await
            .unwrap();
        let done = done.as_i64().unwrap_or(0);
        if done > after {
            return done;
        }
        if tokio::time::Instant::now() > deadline {
            let state = browser
                .execute(
                    "return [document.querySelector('#error').textContent, location.href, \
                     ...['#signin', '#empty', '#report'].map(s => document.querySelector(s).hidden)]",
                    vec![],
                )
                .await
                .unwrap();
            panic!("the dashboard never loaded: {state}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn text(browser: &Client, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn metric(browser: &Client, name: &str) -> String {
    text(browser, &format!("[data-metric=\"{name}\"]")).await
}

async fn visible(browser: &Client, css: &str) -> bool {
    let shown = browser
        .execute(
            "const e = document.querySelector(arguments[0]); return !!e && e.offsetParent !== null;",
            vec![json!(css)],
        )
        .await
        .unwrap();
    shown == json!(true)
}

async fn wait_visible(browser: &Client, css: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !visible(browser, css).await {
        assert!(tokio::time::Instant::now() < deadline, "{css} never showed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn click(browser: &Client, css: &str) {
    let found = browser.find(Locator::Css(css)).await.unwrap();
    found.click().await.unwrap();
}

async fn site_options(browser: &Client) -> Value {
    let script = "return [...document.querySelectorAll('#site option')].map(o => o.value)";
    browser.execute(script, vec![]).await.unwrap()
}

/// A server with `ADMIN_TOKEN` set, whose helpers read with the admin token.
async fn secured(b: &TestBackend) -> TestApp {
    let mut c = config(b.config.clone(), true);
    c.admin_token = Some(ADMIN.to_owned());
    let mut app = TestApp::start_with(c).await;
    app.wait_healthy().await;
    app.token = Some(ADMIN.to_owned());
    app
}

async fn chromium() -> Option<(tokio::process::Child, String)> {
    if !may_run(chromedriver().map(|_| ())) {
        return None;
    }
    Some(start_chromedriver(&chromedriver().unwrap()).await)
}

#[tokio::test]
async fn the_dashboard_shows_the_numbers_sent_and_a_row_filters_the_page() {
    let Some((_driver, webdriver)) = chromium().await else {
        return;
    };
    let b = TestBackend::embedded();
    let app = TestApp::start(&b).await;
    seed(&app, "shop").await;
    let browser = browser(&webdriver, 1280, 800).await;
    // `/` leads to the dashboard, which picks the only site and keeps it in the URL.
    browser.goto(&app.url("/")).await.unwrap();
    let first = loaded(&browser, 0).await;
    let url = browser.current_url().await.unwrap();
    assert!(
        url.path() == "/dashboard" && url.query().unwrap().contains("site_id=shop"),
        "{url}"
    );
    assert_eq!(metric(&browser, "visitors").await, "3");
    assert_eq!(metric(&browser, "visits").await, "3");
    assert_eq!(metric(&browser, "pageviews").await, "6");
    assert_eq!(metric(&browser, "bounce_rate").await, "33%");
    assert_eq!(metric(&browser, "realtime_visitors").await, "0");
    // The chart has a bucket for each day of the range; the tables have their rows.
    let buckets = browser
        .find(Locator::Css("#chart"))
        .await
        .unwrap()
        .attr("data-labels")
        .await
        .unwrap();
    assert_eq!(buckets.as_deref(), Some("30"));
    for (dimension, value) in [
        ("event:page", "/pricing"),
        ("visit:source", "Hacker News"),
        ("visit:browser", "Firefox"),
        ("visit:device", "Desktop"),
        ("event:name", "signup"),
    ] {
        let row = format!("[data-dimension=\"{dimension}\"][data-value=\"{value}\"]");
        assert!(visible(&browser, &row).await, "{row}");
    }
    // A row filters the whole dashboard, shows as a chip, and the chip takes it off.
    browser
        .find(Locator::Css(
            "[data-dimension=\"visit:browser\"][data-value=\"Firefox\"]",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let filtered = loaded(&browser, first).await;
    assert_eq!(metric(&browser, "visitors").await, "1");
    assert_eq!(metric(&browser, "pageviews").await, "2");
    assert!(text(&browser, ".chip").await.contains("Browser is Firefox"));
    let url = browser.current_url().await.unwrap();
    assert!(url.query().unwrap().contains("filters="), "{url}");
    // The filtered view is a link: opened afresh, it shows the same.
    browser.goto(url.as_str()).await.unwrap();
    let reopened = loaded(&browser, 0).await;
    assert_eq!(metric(&browser, "visitors").await, "1");
    click(&browser, ".chip button").await;
    loaded(&browser, reopened).await;
    assert_eq!(metric(&browser, "visitors").await, "3");
    let _ = filtered;
    // Today's numbers, from the period buttons.
    click(&browser, "[data-period=\"day\"]").await;
    let url = browser.current_url().await.unwrap();
    assert!(url.query().unwrap().contains("period=day"), "{url}");

    // A site without events shows how to add the snippet.
    browser
        .goto(&app.url("/dashboard?site_id=new-site"))
        .await
        .unwrap();
    wait_visible(&browser, "#empty").await;
    assert!(
        text(&browser, "#snippet")
            .await
            .contains("data-site-id=\"new-site\"")
    );

    // At a phone's width nothing sticks out sideways.
    browser.set_window_size(390, 844).await.unwrap();
    browser
        .goto(&app.url("/dashboard?site_id=shop&period=7d"))
        .await
        .unwrap();
    loaded(&browser, 0).await;
    let width = browser
        .execute("return document.documentElement.scrollWidth", vec![])
        .await
        .unwrap();
    let viewport = browser
        .execute("return window.innerWidth", vec![])
        .await
        .unwrap();
    assert!(width.as_i64() <= viewport.as_i64(), "{width} > {viewport}");
    browser.close().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn with_keys_the_dashboard_asks_for_one_and_a_shared_link_reads_one_site() {
    let Some((_driver, webdriver)) = chromium().await else {
        return;
    };
    let b = TestBackend::embedded();
    let app = secured(&b).await;
    for site in ["shop", "blog"] {
        let (status, _) = app
            .send(
                Method::POST,
                "/api/sites",
                Some(ADMIN),
                Some(&json!({"site_id": site})),
            )
            .await;
        assert_eq!(status, 201);
    }
    seed(&app, "shop").await;
    let browser = browser(&webdriver, 1280, 800).await;
    browser.goto(&app.url("/dashboard")).await.unwrap();
    wait_visible(&browser, "#signin").await;
    browser
        .find(Locator::Css("#key"))
        .await
        .unwrap()
        .send_keys(ADMIN)
        .await
        .unwrap();
    click(&browser, "#signin-form button").await;
    loaded(&browser, 0).await;
    let sites = site_options(&browser).await;
    assert_eq!(sites, json!(["blog", "shop"]));
    // It opens on the site with events, though another comes first.
    let url = browser.current_url().await.unwrap();
    assert!(url.query().unwrap().contains("site_id=shop"), "{url}");
    // A read key's link: only its site, signed in for this tab without typing.
    let (_, created) = app
        .send(Method::POST, "/api/sites/shop/keys", Some(ADMIN), None)
        .await;
    let key = created["key"].as_str().unwrap();
    let fresh = beacon_testkit::browser::browser(&webdriver, 1280, 800).await;
    fresh
        .goto(&app.url(&format!("/dashboard?site_id=shop&period=30d#key={key}")))
        .await
        .unwrap();
    loaded(&fresh, 0).await;
    assert_eq!(metric(&fresh, "visitors").await, "3");
    let sites = site_options(&fresh).await;
    assert_eq!(sites, json!(["shop"]));
    // The key left the address bar.
    assert!(!fresh.current_url().await.unwrap().as_str().contains(key));
    fresh.close().await.unwrap();
    browser.close().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn the_site_list_follows_the_caller() {
    for b in TestBackend::all() {
        let app = TestApp::start(&b).await;
        seed(&app, "shop").await;
        let (status, list) = app.get("/api/v2/sites").await;
        assert_eq!(
            (status, list),
            (200, json!({"sites": ["shop"], "access": "open"})),
            "{}",
            b.name
        );
        app.stop().await;
    }
    let b = TestBackend::embedded();
    let app = secured(&b).await;
    app.send(
        Method::POST,
        "/api/sites",
        Some(ADMIN),
        Some(&json!({"site_id": "blog"})),
    )
    .await;
    seed(&app, "shop").await;
    assert_eq!(
        app.send(Method::GET, "/api/v2/sites", None, None).await.0,
        401
    );
    let (_, list) = app
        .send(Method::GET, "/api/v2/sites", Some(ADMIN), None)
        .await;
    assert_eq!(list, json!({"sites": ["blog", "shop"], "access": "admin"}));
    let (_, created) = app
        .send(Method::POST, "/api/sites/blog/keys", Some(ADMIN), None)
        .await;
    let key = created["key"].as_str().unwrap();
    let (_, list) = app
        .send(Method::GET, "/api/v2/sites", Some(key), None)
        .await;
    assert_eq!(list, json!({"sites": ["blog"], "access": "site"}));
    // The page and its files come from the binary, with a policy that loads nothing
    // from elsewhere.
    let page = app.http.get(app.url("/dashboard")).send().await.unwrap();
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("default-src 'none'") && policy.contains("script-src 'self'"));
    let html = page.text().await.unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"));
    app.stop().await;
}
