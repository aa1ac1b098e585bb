//! The query API through HTTP and the Rust SDK, on every backend: events sent as
//! browsers and servers send them come back as sources, devices, visits and pages; the
//! API is protected like `/stats`; every mistake is a JSON 400 that names it.
#![allow(clippy::unwrap_used)]

mod common;

use beacon_testkit::TestBackend;
use chrono::{Duration, Utc};
use common::{TestApp, config};
use reqwest::Method;
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-for-tests-0123456789";
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";

async fn post_events(app: &TestApp, agent: &str, events: Value) {
    let r = app
        .http
        .post(app.url("/events"))
        .header("user-agent", agent)
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn query(app: &TestApp, token: Option<&str>, q: Value) -> (u16, Value) {
    app.send(Method::POST, "/api/v2/query", token, Some(&q))
        .await
}

/// Two visitors an hour ago: one from Google on a desktop who read two pages, one
/// tagged from a newsletter on a phone who bounced. In the first hour of a UTC day
/// they come from midnight on (a few minutes ahead of the clock at most), so that the
/// day's queries see them.
async fn two_visits(app: &TestApp) {
    let now = Utc::now();
    let midnight = now.date_naive().and_time(chrono::NaiveTime::MIN).and_utc();
    let start = (now - Duration::minutes(60)).max(midnight);
    let at = |minutes: i64| (start + Duration::minutes(minutes)).to_rfc3339();
    post_events(
        app,
        CHROME,
        json!([
            {"site_id": "s", "event_type": "page_view", "path": "/", "user_id": "a",
             "timestamp": at(0), "referrer": "https://www.google.com/"},
            {"site_id": "s", "event_type": "page_view", "path": "/pricing", "user_id": "a",
             "timestamp": at(4)},
        ]),
    )
    .await;
    post_events(
        app,
        IPHONE,
        json!([{"site_id": "s", "event_type": "page_view", "path": "/blog", "user_id": "b",
                "timestamp": at(1), "utm_source": "newsletter", "utm_medium": "email"}]),
    )
    .await;
    app.wait_for_total("site_id=s", 3).await;
    // On MongoDB a move adds to each bucket in a write of its own: the events' buckets
    // can show before the visits' do. Wait for both visits too.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let q = json!({"site_id": "s", "metrics": ["visits"], "date_range": "day"});
        let (_, body) = query(app, None, q).await;
        if body["results"][0]["metrics"][0] == 2 || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sources_devices_visits_and_pages_come_back() {
    for b in TestBackend::all() {
        let app = TestApp::start(&b).await;
        two_visits(&app).await;
        let all = json!([
            "visitors",
            "visits",
            "pageviews",
            "bounce_rate",
            "visit_duration",
            "views_per_visit"
        ]);
        let (status, body) = query(
            &app,
            None,
            json!({"site_id": "s", "metrics": all, "date_range": "day"}),
        )
        .await;
        assert_eq!(status, 200, "{}: {body}", b.name);
        assert_eq!(
            body["results"],
            json!([{"metrics": [2, 2, 3, 50, 120, 1.5], "dimensions": []}]),
            "{}",
            b.name
        );
        assert_eq!(body["query"]["timezone"], "UTC");

        let (_, body) = query(
            &app,
            None,
            json!({"site_id": "s", "metrics": ["visitors", "bounce_rate"],
            "date_range": "7d", "dimensions": ["visit:source"]}),
        )
        .await;
        assert_eq!(
            body["results"],
            json!([{"metrics": [1, 0], "dimensions": ["Google"]}, {"metrics": [1, 100], "dimensions": ["newsletter"]}]),
            "{}",
            b.name
        );
        let (_, body) = query(&app, None, json!({"site_id": "s", "metrics": ["visits"],
            "date_range": "day", "dimensions": ["visit:device"], "order_by": [["visit:device", "asc"]]})).await;
        assert_eq!(
            body["results"],
            json!([{"metrics": [1], "dimensions": ["Desktop"]}, {"metrics": [1], "dimensions": ["Mobile"]}])
        );
        let (_, body) = query(&app, None, json!({"site_id": "s", "metrics": ["visitors"],
            "date_range": "day", "dimensions": ["visit:channel"], "filters": [["is", "visit:channel", ["Email"]]]})).await;
        assert_eq!(
            body["results"],
            json!([{"metrics": [1], "dimensions": ["Email"]}])
        );
        let (_, body) = query(
            &app,
            None,
            json!({"site_id": "s", "metrics": ["visits"],
            "date_range": "day", "dimensions": ["visit:exit_page"]}),
        )
        .await;
        assert_eq!(body["results"].as_array().unwrap().len(), 2);
        let (_, body) = query(&app, None, json!({"site_id": "s", "metrics": ["pageviews"],
            "date_range": "day", "dimensions": ["time:hour"], "include": {"time_labels": true, "total_rows": true}})).await;
        assert_eq!(body["meta"]["time_labels"].as_array().unwrap().len(), 24);
        assert!(body["meta"]["total_rows"].as_u64().unwrap() >= 1);
        app.stop().await;
    }
}

#[tokio::test]
async fn it_is_protected_like_stats_and_days_follow_the_sites_zone() {
    let b = TestBackend::embedded();
    let mut c = config(b.config.clone(), true);
    c.admin_token = Some(ADMIN.to_owned());
    let app = TestApp::start_with(c).await;
    app.wait_healthy().await;
    for site in ["s", "other"] {
        let (status, _) = app
            .send(
                Method::POST,
                "/api/sites",
                Some(ADMIN),
                Some(&json!({"site_id": site, "timezone": "Asia/Tokyo"})),
            )
            .await;
        assert_eq!(status, 201);
    }
    let (_, key) = app
        .send(Method::POST, "/api/sites/other/keys", Some(ADMIN), None)
        .await;
    let key = key["key"].as_str().unwrap();
    let q = json!({"site_id": "s", "metrics": ["visitors"], "date_range": "day"});
    let (status, body) = query(&app, None, q.clone()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, body) = query(&app, Some(key), q.clone()).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    // The registry is read every few seconds.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, body) = query(&app, Some(ADMIN), q.clone()).await;
        assert_eq!(status, 200, "{body}");
        if body["query"]["timezone"] == "Asia/Tokyo" {
            assert!(
                body["query"]["date_range"][0]
                    .as_str()
                    .unwrap()
                    .ends_with("+09:00")
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the site's zone was never used"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut berlin = q.clone();
    berlin["timezone"] = json!("Europe/Berlin");
    assert_eq!(
        query(&app, Some(ADMIN), berlin).await.1["query"]["timezone"],
        "Europe/Berlin"
    );
    app.stop().await;
}

#[tokio::test]
async fn mistakes_are_json_400s_that_name_them() {
    let b = TestBackend::embedded();
    let app = TestApp::start(&b).await;
    let base = json!({"site_id": "s", "metrics": ["visitors"], "date_range": "7d"});
    let cases: Vec<(Value, &str)> = vec![
        (json!({"metrics": ["visiters"]}), "visiters"),
        (json!({"dimensions": ["visit:city"]}), "visit:city"),
        (json!({"date_range": "fortnight"}), "fortnight"),
        (
            json!({"date_range": ["2024-02-01", "2024-01-01"]}),
            "before it starts",
        ),
        (
            json!({"date_range": ["+262142-12-31", "2024-01-01"]}),
            "1 and 9999",
        ),
        (
            json!({"date_range": ["yesterday", "2024-01-01"]}),
            "RFC 3339",
        ),
        (json!({"timezone": "Mars/Olympus"}), "Mars/Olympus"),
        (
            json!({"dimensions": ["event:page", "visit:source"]}),
            "event and visit",
        ),
        (
            json!({"filters": [["matches", "event:page", ["(("]]]}),
            "regular expression",
        ),
        (
            json!({"filters": [["is", "event:page"]]}),
            "cannot read the filter",
        ),
        (json!({"order_by": [["visits", "desc"]]}), "visits"),
        (json!({"pagination": {"limit": 100000}}), "limit"),
        (json!({"site_id": ""}), "site_id"),
        (json!({"surprise": true}), "surprise"),
    ];
    for (change, named) in cases {
        let mut q = base.clone();
        for (k, v) in change.as_object().unwrap() {
            q[k] = v.clone();
        }
        let (status, body) = query(&app, None, q.clone()).await;
        assert_eq!(status, 400, "{q}: {body}");
        assert_eq!(body["error"], "invalid_query", "{q}");
        assert!(
            body["message"].as_str().unwrap().contains(named),
            "{q}: {body}"
        );
    }
    let r = app
        .http
        .post(app.url("/api/v2/query"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    app.stop().await;
}
