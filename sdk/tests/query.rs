//! The query API from the Rust SDK, against the real server with keys: events tracked
//! with a visitor's referrer, user agent and campaign come back through a typed query.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use beacon::query::{Dimension, Direction, Filter, Metric, TimeGrain};
use beacon_testkit::TestBackend;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const ADMIN: &str = "admin-token-for-tests-0123456789";
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

#[tokio::test]
async fn queries_are_built_and_answers_typed() {
    let b = TestBackend::embedded();
    let mut config = beacon_testkit::server_config(b.config.clone());
    config.admin_token = Some(ADMIN.to_owned());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(beacon_server::run(config, listener, async move {
        let _ = stopped.await;
    }));
    let client = beacon::Client::builder(base.clone())
        .site_id("s")
        .read_key(ADMIN)
        .flush_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    // A server tracking its visitors, passing on what their browsers said.
    for (user, path, referrer) in [
        ("a", "/", "https://news.ycombinator.com/item"),
        ("a", "/pricing", ""),
        ("b", "/", ""),
    ] {
        let mut e = beacon::event("page_view")
            .path(path)
            .user(user)
            .user_agent(CHROME);
        if !referrer.is_empty() {
            e = e.referrer(referrer).campaign("hn", "social", "launch");
        }
        client.track(e);
    }
    client.flush().await;
    let q = beacon::query("s")
        .metrics([Metric::Visitors, Metric::Pageviews])
        .period("7d")
        .dimension(Dimension::Page)
        .filter(Filter::is(Dimension::Visit("browser"), ["Chrome"]))
        .order_by("event:page", Direction::Asc);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let answer = loop {
        let answer = client.query(&q).await.unwrap();
        let views: f64 = answer
            .rows
            .iter()
            .filter_map(|r| r.get(Metric::Pageviews))
            .sum();
        if views >= 3.0 || tokio::time::Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let pages: Vec<(&str, Option<f64>, Option<f64>)> = answer
        .rows
        .iter()
        .map(|r| {
            (
                r.dimensions[0].as_str(),
                r.get(Metric::Visitors),
                r.get(Metric::Pageviews),
            )
        })
        .collect();
    assert_eq!(
        pages,
        [
            ("/", Some(2.0), Some(2.0)),
            ("/pricing", Some(1.0), Some(1.0))
        ]
    );
    let sources = client
        .query(
            beacon::query("s")
                .metric(Metric::Visits)
                .period("day")
                .dimension(Dimension::Visit("utm_campaign")),
        )
        .await
        .unwrap();
    assert_eq!(sources.rows.len(), 1);
    assert_eq!(
        (
            sources.rows[0].dimensions[0].as_str(),
            sources.rows[0].get(Metric::Visits)
        ),
        ("launch", Some(1.0))
    );
    let days = client
        .query(
            beacon::query("s")
                .period("7d")
                .dimension(Dimension::Time(TimeGrain::Day))
                .time_labels(),
        )
        .await
        .unwrap();
    assert_eq!(days.time_labels.unwrap().len(), 7);
    // Without the key: refused, as a typed error.
    let anonymous = beacon::Client::builder(base).site_id("s").build().unwrap();
    match anonymous.query(&q).await {
        Err(beacon::Error::Api { status, code, .. }) => {
            assert_eq!((status.as_u16(), code.as_str()), (401, "unauthorized"))
        }
        other => panic!("{other:?}"),
    }
    client.shutdown().await;
    anonymous.shutdown().await;
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
