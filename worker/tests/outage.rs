//! The worker through a database that keeps dropping its connections: a move or a
//! claim cut off halfway is taken up again at once, not left to wait out its lease.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use beacon_testkit::store::{
    backlog_worker, enqueue_backlog, open, stored_ids, wait_until_drained,
};

const EVENTS: usize = 2000;

#[tokio::test]
async fn a_worker_moves_every_event_once_through_a_flapping_database() {
    // The worker's warnings, shown if the test fails: which step the outage cut.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
    let Some((mut backend, proxy)) = beacon_testkit::mongo_behind_proxy().await else {
        return;
    };
    // Far longer than the test: a batch left to its lease would stay stuck.
    backend.config.claim_lease = Duration::from_secs(600);
    let store = open(&backend).await;
    let events = enqueue_backlog(&store, "s", EVENTS).await;
    let config = backlog_worker(backend.config.clone());
    let worker_store = open(&backend).await;
    let worker = tokio::spawn(beacon_worker::run(
        config,
        worker_store,
        std::future::pending(),
    ));

    // Cut every connection, again and again, while the worker is at the backlog.
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        proxy.go_down();
        tokio::time::sleep(Duration::from_millis(40)).await;
        proxy.come_up();
    }

    wait_until_drained(&store, Duration::from_secs(60), "flapping").await;
    worker.abort();
    let stored = stored_ids(&store, "s").await;
    assert_eq!(stored.len(), EVENTS, "each event stored once");
    let wanted: HashSet<_> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(stored.into_iter().collect::<HashSet<_>>(), wanted);
}
