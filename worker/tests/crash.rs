//! The real `beacon-worker` binary, killed with SIGKILL at random moments while events
//! stream in, and run two at a time: `events` must end with exactly the accepted events.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use beacon_protocol::time::truncate_to_millis;
use beacon_store::{Backend, Engine, QueuedEvent, Store};
use beacon_testkit::TestBackend;
use chrono::Utc;
use tokio::process::{Child, Command};
use uuid::Uuid;

fn spawn_worker(backend: &TestBackend) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_beacon-worker"));
    cmd.env("BATCH_SIZE", "40")
        .env("POLL_MS", "5")
        .env(
            "CLAIM_LEASE_MS",
            backend.config.claim_lease.as_millis().to_string(),
        )
        .env("RUST_LOG", "warn")
        .env_remove("MONGO_URL")
        .env_remove("DATA_DIR")
        // Away from the repository, so that a developer's `.env` cannot leak in.
        .current_dir(std::env::temp_dir())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    match &backend.config.backend {
        Backend::Mongo { url } => cmd.env("MONGO_URL", url),
        Backend::Embedded { data_dir } => cmd.env("DATA_DIR", data_dir),
    };
    cmd.spawn().unwrap()
}

fn event(i: usize) -> QueuedEvent {
    QueuedEvent {
        event_id: Uuid::now_v7(),
        site_id: "s".into(),
        event_type: "page_view".into(),
        path: Some(format!("/{}", i % 7)),
        user_id: Some(format!("u{}", i % 13)),
        timestamp: truncate_to_millis(Utc::now()),
        ingested_at: truncate_to_millis(Utc::now()),
        props: None,
        context: Default::default(),
        continues: None,
    }
}

/// A cheap deterministic sequence of pauses, so failures are reproducible.
fn pauses() -> impl Iterator<Item = Duration> {
    [70u64, 25, 160, 40, 230, 10, 120, 55, 90, 15]
        .into_iter()
        .map(Duration::from_millis)
}

#[tokio::test]
async fn killed_and_concurrent_workers_store_every_accepted_event_exactly_once() {
    for backend in TestBackend::all() {
        let store = Store::open(backend.config.clone()).await.unwrap();
        store.ensure_ready().await.unwrap();
        let producer = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut accepted = HashSet::new();
                for chunk in 0..60 {
                    let events: Vec<_> = (0..25).map(|i| event(chunk * 25 + i)).collect();
                    accepted.extend(events.iter().map(|e| e.event_id));
                    beacon_testkit::store::enqueue(&store, events).await;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                accepted
            })
        };
        for (round, pause) in pauses().enumerate() {
            // Every third round, two workers race each other before both are killed.
            let mut workers = vec![spawn_worker(&backend)];
            if round % 3 == 0 {
                workers.push(spawn_worker(&backend));
            }
            tokio::time::sleep(pause + Duration::from_millis(150)).await;
            for w in &mut workers {
                w.start_kill().unwrap(); // SIGKILL
                w.wait().await.unwrap();
            }
        }
        let accepted = producer.await.unwrap();
        let mut finishers = [spawn_worker(&backend), spawn_worker(&backend)];
        beacon_testkit::store::wait_until_drained(&store, Duration::from_secs(60), backend.name)
            .await;
        for w in &mut finishers {
            w.start_kill().unwrap();
            w.wait().await.unwrap();
        }
        let stored = beacon_testkit::stored_ids(&store, "s").await;
        assert_eq!(
            stored.len(),
            accepted.len(),
            "{}: stored once each",
            backend.name
        );
        assert_eq!(
            stored.into_iter().collect::<HashSet<_>>(),
            accepted,
            "{}",
            backend.name
        );
        let stats = store
            .stats(&beacon_protocol::StatsQuery::new("s").resolve().unwrap())
            .await
            .unwrap();
        assert_eq!(
            stats.total_events,
            accepted.len() as u64,
            "{}",
            backend.name
        );
        assert_eq!(stats.unique_users, 13, "{}", backend.name);
        // Path counts come from the rollups: each event added exactly once.
        let mut expected: Vec<(String, u64)> = (0..7)
            .map(|p| {
                (
                    format!("/{p}"),
                    (0..1500).filter(|i| i % 7 == p).count() as u64,
                )
            })
            .collect();
        expected.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let got: Vec<(String, u64)> = stats
            .top_paths
            .iter()
            .map(|p| (p.path.clone(), p.count))
            .collect();
        assert_eq!(got, expected, "{}", backend.name);
        // Visits come from the rollups too: each event added to exactly one visit once,
        // so the visits' page views and events, by entry page, add up to all events.
        let q: beacon_protocol::query::Query = serde_json::from_value(serde_json::json!({
            "site_id": "s", "metrics": ["pageviews", "events", "visits"], "date_range": "all",
            "dimensions": ["visit:entry_page"],
        }))
        .unwrap();
        let answer = store
            .query(&q, chrono_tz::Tz::UTC, chrono::Utc::now(), Engine::Auto)
            .await
            .unwrap();
        let sum = |i: usize| -> i64 {
            answer
                .results
                .iter()
                .map(|r| r.metrics[i].as_i64().unwrap())
                .sum()
        };
        assert_eq!(
            (sum(0), sum(1)),
            (1500, 1500),
            "{}: visits' events",
            backend.name
        );
        assert!(sum(2) >= 13, "{}: every visitor has a visit", backend.name);
    }
}
